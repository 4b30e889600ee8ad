#include "agent/daemon/config.h"

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

GetEnvFn EnvFrom(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

const GetEnvFn kNoEnv = EnvFrom({});

TEST(ConfigTest, EmptyFileGivesDocumentedDefaults) {
  Result<Config> c = ParseConfig("", "/etc/dlagent/agentd.toml", kNoEnv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->path, "/etc/dlagent/agentd.toml");
  EXPECT_EQ(c->agent.socket, "/run/dlagent/agentd.sock");
  EXPECT_EQ(c->agent.socket_group, "dlagent");
  EXPECT_EQ(c->agent.log_level, "info");
  EXPECT_EQ(c->cluster.name, "default");
  EXPECT_EQ(c->aws.imds_endpoint, "http://169.254.169.254");
  EXPECT_FALSE(c->aws.imds_disabled);
  EXPECT_TRUE(c->metrics.enabled);
  EXPECT_EQ(c->metrics.bind, "127.0.0.1") << "never every interface without a setting";
  EXPECT_EQ(c->metrics.port, 7071);
}

TEST(ConfigTest, ReadsEveryKey) {
  Result<Config> c = ParseConfig(R"(
[agent]
socket = "/tmp/a.sock"
socket_group = "ops"
log_level = "debug"
[cluster]
name = "p4d-train"
[aws]
region = "us-west-2"
sqs_endpoint = "http://127.0.0.1:4566"
imds_endpoint = "http://127.0.0.1:1338"
imds_disabled = true
)",
                                 "a.toml", kNoEnv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->agent.socket, "/tmp/a.sock");
  EXPECT_EQ(c->agent.socket_group, "ops");
  EXPECT_EQ(c->agent.log_level, "debug");
  EXPECT_EQ(c->cluster.name, "p4d-train");
  EXPECT_EQ(c->aws.region, "us-west-2");
  EXPECT_EQ(c->aws.sqs_endpoint, "http://127.0.0.1:4566");
  EXPECT_EQ(c->aws.imds_endpoint, "http://127.0.0.1:1338");
  EXPECT_TRUE(c->aws.imds_disabled);
}

TEST(ConfigTest, ReadsTheFormationSections) {
  Result<Config> c = ParseConfig(R"(
[cluster]
expected_nodes = 64
min_nodes = 60
join_deadline = "15m"
reseal = "on-change"
reseal_settle = "45s"
[gossip]
key_file = "/etc/dlagent/cluster.key"
[discovery]
queue = "https://sqs.us-east-1.amazonaws.com/123456789012/train"
hello_interval = "2s"
poll_wait = "10s"
[node]
gpus = 8
[storage]
kind = "efs"
source = "fs-0123abcd"
mount_point = "/shared"
mount_target_ips = ["10.0.1.5", "10.0.2.5"]
dns_wait = "30s"
mount_budget = "2m"
[files]
root = "/tmp/r"
workers = "/w"
hosts = "/h"
profile = "/p"
env = "/e"
hostfile = "/hf"
roster = "/r.json"
[aws]
cfn_wait_handle = "https://cloudformation-waitcondition-us-east-1.s3.amazonaws.com/x"
)",
                                 "f.toml", kNoEnv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cluster.expected_nodes, 64);
  EXPECT_EQ(c->cluster.min_nodes, 60);
  EXPECT_EQ(c->cluster.join_deadline, std::chrono::minutes(15));
  EXPECT_EQ(c->cluster.reseal, ResealPolicy::kOnChange);
  EXPECT_EQ(c->cluster.reseal_settle, std::chrono::seconds(45));
  EXPECT_EQ(c->discovery.hello_interval, std::chrono::seconds(2));
  EXPECT_EQ(c->discovery.poll_wait, std::chrono::seconds(10));
  EXPECT_EQ(c->node.gpus, 8);
  EXPECT_EQ(c->storage.kind, StorageKind::kEfs);
  EXPECT_EQ(c->storage.mount_target_ips, (std::vector<std::string>{"10.0.1.5", "10.0.2.5"}));
  EXPECT_EQ(c->storage.mount_budget, std::chrono::minutes(2));
  EXPECT_EQ(c->files.root, "/tmp/r");
  EXPECT_EQ(c->files.roster, "/r.json");
  EXPECT_EQ(c->aws.cfn_wait_handle.rfind("https://", 0), 0u);
}

TEST(ConfigTest, FormationMistakesAreNamed) {
  struct Case {
    const char* toml;
    const char* want;
  } cases[] = {
      {"[cluster]\nexpected_nodes = 4\nmin_nodes = 5\n[gossip]\nkey_file = \"/k\"\n",
       "cluster.min_nodes (5) is more than cluster.expected_nodes (4)"},
      {"[cluster]\nexpected_nodes = 4\n", "cluster.expected_nodes needs gossip (set gossip.key_file or gossip.key_source)"},
      {"[storage]\nkind = \"nfs4\"\n", "storage.kind = \"nfs4\" needs storage.source (host:/export)"},
      {"[discovery]\npoll_wait = \"30s\"\n", "f.toml:2:13: discovery.poll_wait: \"30s\" is longer than 20s"},
      {"[cluster]\njoin_deadline = \"soon\"\n", "f.toml:2:17: cluster.join_deadline:"},
      {"[cluster]\njoin_deadline = 600\n", "expected a duration string"},
      {"[cluster]\nreseal = \"always\"\n", "\"always\" is not one of: never, on-failure, on-change"},
      {"[storage]\nkind = \"bind\"\nsource = \"/d\"\nmount_target_ips = [\"fs-1\"]\n", "is not an IPv4 address"},
      {"[files]\nworkers = \"workers\"\n", "files.workers: \"workers\" must be an absolute path"},
      {"[node]\ngpus = -2\n", "node.gpus: -2 is out of range -1..1024"},
      {"[metrics]\nbind = \"localhost\"\n", "metrics.bind: \"localhost\" is not an IPv4 address (e.g. 0.0.0.0 or 10.0.1.17), or \"node\""},
      {"[metrics]\nbind = \"\"\n", "metrics.bind: \"\" is not an address"},
      {"[metrics]\nbind = \"node\"\n", "metrics.bind = \"node\" needs cluster.expected_nodes > 0"},
      {"[metrics]\nport = 70000\n", "metrics.port: 70000 is out of range 0..65535"},
  };
  for (const Case& c : cases) {
    Result<Config> r = ParseConfig(c.toml, "f.toml", kNoEnv);
    ASSERT_FALSE(r.ok()) << c.toml;
    EXPECT_NE(r.status().ToString().find(c.want), std::string::npos) << r.status().ToString();
  }
}

// Each bad file must fail with every listed fragment in the message (file:line:col, key, accepted values).
// Found by tests/fuzz/config_fuzz.cc: a control character in a table header, or a header with no name after
// its '[', tripped an assertion in toml++ (an abort with assertions, undefined behaviour without). Refused
// before parsing, naming the line and column.
TEST(ConfigTest, WhatTomlPlusPlusMustNotSeeIsRefusedWithItsPlace) {
  for (const char* text : {"[\nmin_nodes = 6\n", "[cluster]\nname = \"a\"\n[ \n", "[[\t\n", "  ["}) {
    Result<Config> r = ParseConfig(text, "x.toml", kNoEnv);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().message().find("a table header needs a name after its '['"), std::string::npos) << r.status().ToString();
  }
  Result<Config> header = ParseConfig("[cluster]\n[ \n", "x.toml", kNoEnv);
  EXPECT_NE(header.status().message().find("x.toml:2:3: "), std::string::npos) << header.status().ToString();
  const std::string crash(
      "\n[\x01\x0c"
      "agentjoin_deadline]\nsocket = \"/run/dlagent/agentd.sock\"\n");
  Result<Config> r = ParseConfig(crash, "/etc/dlagent/agentd.toml", kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("agentd.toml:2:2: a table header needs a name"), std::string::npos) << r.status().ToString();
  r = ParseConfig("[cluster]\nname = \"a\x01\"\n", "x.toml", kNoEnv);
  EXPECT_NE(r.status().message().find("x.toml:2:10: control character 0x01"), std::string::npos) << r.status().ToString();
  r = ParseConfig("[cluster]\nname = \"a\x7f\"\n", "x.toml", kNoEnv);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("x.toml:2:10: control character 0x7f"), std::string::npos) << r.status().ToString();
  EXPECT_TRUE(ParseConfig("[cluster]\r\n\tname = \"a\"\t# tab and CRLF are TOML\r\n", "x.toml", kNoEnv).ok());
  r = ParseConfig("[cluster]\nrole = \"worker\"  # caf\u00e9\n28beb\u01e5d = 1\n", "x.toml", kNoEnv);
  EXPECT_NE(r.status().message().find("x.toml:3:6: a non-ASCII character (this file is ASCII, but for comments)"), std::string::npos)
      << r.status().ToString();
  r = ParseConfig("3=5\"\u029d", "x.toml", kNoEnv);  // the fuzzer's: toml++ tested the character for whitespace
  EXPECT_NE(r.status().message().find("x.toml:1:5: a non-ASCII character"), std::string::npos) << r.status().ToString();
  // Malformed input that breaks toml++'s own assertions is an error in every build (it aborted a Debug build).
  for (const char* text : {"s=[}", "[cluster]\nseeds = [}\n"}) {
    Result<Config> bad = ParseConfig(text, "x.toml", kNoEnv);
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().ToString();
    EXPECT_NE(bad.status().message().find("x.toml"), std::string::npos) << bad.status().ToString();
  }
  EXPECT_TRUE(ParseConfig("[cluster]\nname = \"a\"  # caf\u00e9 \"[\u00e9\n", "x.toml", kNoEnv).ok()) << "non-ASCII in a comment";
  EXPECT_TRUE(ParseConfig("[ cluster ]\nname = \"a\"\n[ \"gossip\" ]\nseeds = [\n  \"10.0.0.1:7946\",\n]\n", "x.toml", kNoEnv).ok());
}

TEST(ConfigTest, BadInputNamesFileLineKeyAndAcceptedValues) {
  struct Case {
    const char* name;
    std::string toml;
    std::vector<std::string> want;
  } cases[] = {
      {"syntax", "[agent\nsocket = 1", {"a.toml:1:"}},
      {"unknown key",
       "[agent]\nlog_levl = \"info\"",
       {"a.toml:2:1: agent.log_levl: unknown key", "did you mean log_level?", "socket, socket_group, log_level"}},
      {"unknown section", "[agnet]\nx = 1", {"a.toml:1:", "agnet: unknown section", "did you mean [agent]?"}},
      {"wrong type", "[cluster]\nname = 5", {"a.toml:2:8: cluster.name: expected a string, got an integer"}},
      {"section not a table", "agent = 3", {"a.toml:1:", "agent: expected a table [agent]"}},
      {"enum", "[agent]\nlog_level = \"verbose\"", {"a.toml:2:", "agent.log_level: \"verbose\" is not one of: trace, debug, info, warn, error"}},
      {"relative socket", "[agent]\nsocket = \"run/a.sock\"", {"agent.socket: \"run/a.sock\" must be an absolute path"}},
      {"long socket", "[agent]\nsocket = \"/" + std::string(120, 'x') + "\"", {"agent.socket:", "107 bytes"}},
      {"cluster name chars", "[cluster]\nname = \"a b\"", {"cluster.name:", "use letters, digits"}},
      {"empty cluster name", "[cluster]\nname = \"\"", {"cluster.name: must be 1 to 64 characters"}},
      {"url", "[aws]\nsqs_endpoint = \"127.0.0.1:4566\"", {"aws.sqs_endpoint:", "must start with http:// or https://"}},
      {"bool", "[aws]\nimds_disabled = \"yes\"", {"aws.imds_disabled: expected true or false, got a string"}},
      {"bind", "[gossip]\nbind = \"eth0\"", {"a.toml:2:", "gossip.bind: \"eth0\" is not an IPv4 address"}},
      {"port", "[gossip]\nport = 70000", {"gossip.port: 70000 is out of range 1..65535"}},
      {"seeds", "[gossip]\nseeds = [\"10.0.0.1\"]", {"gossip.seeds: \"10.0.0.1\" is not an address like 10.0.1.17:7946"}},
      {"key file", "[gossip]\nkey_file = \"cluster.key\"", {"gossip.key_file: \"cluster.key\" must be an absolute path"}},
  };
  for (const auto& c : cases) {
    Result<Config> r = ParseConfig(c.toml, "a.toml", kNoEnv);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.name;
    for (const auto& w : c.want) {
      EXPECT_NE(r.status().ToString().find(w), std::string::npos) << c.name << ": want \"" << w << "\" in:\n" << r.status().ToString();
    }
  }
}

TEST(ConfigTest, ReportsAllProblemsInFileOrder) {
  Result<Config> r = ParseConfig("[cluster]\nname = 1\n[agent]\nbogus = 2\nlog_level = \"x\"\n", "a.toml", kNoEnv);
  ASSERT_FALSE(r.ok());
  const std::string msg = r.status().ToString();
  const size_t l2 = msg.find("a.toml:2:"), l4 = msg.find("a.toml:4:"), l5 = msg.find("a.toml:5:");
  ASSERT_NE(l2, std::string::npos) << msg;
  ASSERT_NE(l4, std::string::npos) << msg;
  ASSERT_NE(l5, std::string::npos) << msg;
  EXPECT_LT(l2, l4);
  EXPECT_LT(l4, l5);
}

TEST(ConfigTest, AwsEnvironmentOverridesTheFile) {
  const char* toml = "[aws]\nregion = \"eu-west-1\"\nsqs_endpoint = \"http://file:1\"\n";
  struct Case {
    std::map<std::string, std::string> env;
    std::string region, sqs, imds;
    bool disabled;
  } cases[] = {
      {{}, "eu-west-1", "http://file:1", "http://169.254.169.254", false},
      {{{"AWS_DEFAULT_REGION", "us-east-2"}}, "us-east-2", "http://file:1", "http://169.254.169.254", false},
      {{{"AWS_REGION", "us-west-2"}, {"AWS_DEFAULT_REGION", "us-east-2"}}, "us-west-2", "http://file:1", "http://169.254.169.254", false},
      {{{"AWS_ENDPOINT_URL", "http://all:2"}}, "eu-west-1", "http://all:2", "http://169.254.169.254", false},
      {{{"AWS_ENDPOINT_URL", "http://all:2"}, {"AWS_ENDPOINT_URL_SQS", "http://sqs:3"}},
       "eu-west-1",
       "http://sqs:3",
       "http://169.254.169.254",
       false},
      {{{"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338"}}, "eu-west-1", "http://file:1", "http://127.0.0.1:1338", false},
      {{{"AWS_EC2_METADATA_DISABLED", "TRUE"}}, "eu-west-1", "http://file:1", "http://169.254.169.254", true},
  };
  for (const auto& c : cases) {
    Result<Config> r = ParseConfig(toml, "a.toml", EnvFrom(c.env));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->aws.region, c.region);
    EXPECT_EQ(r->aws.sqs_endpoint, c.sqs);
    EXPECT_EQ(r->aws.imds_endpoint, c.imds);
    EXPECT_EQ(r->aws.imds_disabled, c.disabled);
  }
  Result<Config> bad = ParseConfig("", "a.toml", EnvFrom({{"AWS_EC2_METADATA_DISABLED", "maybe"}}));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("AWS_EC2_METADATA_DISABLED=\"maybe\""), std::string::npos);
}

TEST(ConfigTest, LoadMissingFileUsesDefaultsUnlessRequired) {
  FakeEnv env;
  Result<Config> c = LoadConfig(env, "/etc/dlagent/agentd.toml", false, kNoEnv);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->path, "");
  Result<Config> required = LoadConfig(env, "/etc/dlagent/agentd.toml", true, kNoEnv);
  ASSERT_FALSE(required.ok());
  EXPECT_NE(required.status().ToString().find("cannot read /etc/dlagent/agentd.toml"), std::string::npos);
  env.PutFile("/etc/dlagent/agentd.toml", "[cluster]\nname = \"x\"\n");
  EXPECT_EQ(LoadConfig(env, "/etc/dlagent/agentd.toml", true, kNoEnv)->cluster.name, "x");
}

// docs/configuration.md documents exactly the keys the parser knows.
TEST(ConfigTest, DocumentationListsEveryKey) {
  std::ifstream in(std::string(DLAGENT_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md is missing";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  std::set<std::string> documented;
  std::regex row(R"(\n\| `([a-z_]+\.[a-z_]+)` \|)");
  for (std::sregex_iterator it(doc.begin(), doc.end(), row), end; it != end; ++it) documented.insert((*it)[1]);
  std::vector<std::string> known = KnownConfigKeys();
  std::set<std::string> known_set(known.begin(), known.end());
  EXPECT_EQ(documented, known_set);
}

// The packaged /etc/dlagent/agentd.toml names every key, commented out; uncommented, it is valid and gives
// the defaults.
TEST(ConfigTest, ThePackagedFileHasEveryKeyCommentedAndParses) {
  std::ifstream in(std::string(DLAGENT_SOURCE_DIR) + "/packaging/agentd.toml");
  ASSERT_TRUE(in) << "packaging/agentd.toml is missing";
  std::string uncommented, section;
  std::set<std::string> named;
  for (std::string line; std::getline(in, line);) {
    ASSERT_TRUE(line.empty() || line[0] == '#') << "an active line: " << line;
    std::smatch m;
    if (std::regex_match(line, m, std::regex(R"(# \[([a-z]+)\])"))) {
      section = m[1];
      uncommented += "[" + section + "]\n";
    } else if (std::regex_search(line, m, std::regex(R"(^# ([a-z_]+) = (.*?)(   # .*)?$)"))) {
      named.insert(section + "." + m[1].str());
      uncommented += m[1].str() + " = " + m[2].str() + "\n";
    }
  }
  std::vector<std::string> known = KnownConfigKeys();
  EXPECT_EQ(named, std::set<std::string>(known.begin(), known.end()));
  Result<Config> c = ParseConfig(uncommented, "agentd.toml", kNoEnv);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cluster.expected_nodes, 0);
  EXPECT_TRUE(c->gossip.key_file.empty() && c->gossip.key_source.empty());
}

}  // namespace
}  // namespace dlagent
