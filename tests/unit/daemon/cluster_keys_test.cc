#include <gtest/gtest.h>

#include "agent/daemon/cluster_keys.h"
#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

Result<std::vector<std::string>> LoadKeyFile(Env& env, const std::string& path) {
  Config c;
  c.gossip.key_file = path;
  return ClusterKeyLoader(env, c).Load();
}

TEST(ClusterKeysTest, OneKeyALineThePrimaryFirstAndClearRefusals) {
  FakeEnv env;
  const std::string a(64, 'a'), b = std::string(32, '0') + std::string(32, 'f');
  env.PutFile("/k", a + "\n\n  " + b + "  \n");
  Result<std::vector<std::string>> keys = LoadKeyFile(env, "/k");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 2u);
  EXPECT_EQ((*keys)[0], std::string(32, '\xaa')) << "raw bytes, the primary first";
  EXPECT_EQ((*keys)[1].substr(16), std::string(16, '\xff'));
  struct Case {
    std::string text, why;
  } cases[] = {{"", "/k holds no key; make one with: openssl rand -hex 32"},
               {a + "\n" + std::string(63, 'b') + "\n", "/k line 2 is not 64 hex characters"},
               {std::string(64, 'g') + "\n", "/k line 1 is not 64 hex characters"}};
  for (const Case& c : cases) {
    env.PutFile("/k", c.text);
    Result<std::vector<std::string>> r = LoadKeyFile(env, "/k");
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().ToString().find(c.why), std::string::npos) << r.status().ToString();
  }
  EXPECT_EQ(LoadKeyFile(env, "/missing").status().code(), StatusCode::kNotFound);
}

TEST(ClusterKeysTest, KeySourcesAreParsedAndAConfigNamesOnlyOne) {
  EXPECT_EQ(ParseKeySource("file:/etc/dlagent/cluster.key")->kind, KeySource::Kind::kFile);
  EXPECT_EQ(ParseKeySource("secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:k")->where, "arn:aws:secretsmanager:us-east-1:1:secret:k");
  EXPECT_EQ(ParseKeySource("ssm:/dlagent/key")->kind, KeySource::Kind::kSsm);
  for (const char* bad : {"file:relative", "vault:x", "ssm:", "nothing"}) EXPECT_FALSE(ParseKeySource(bad).ok()) << bad;
  auto both = ParseConfig("[gossip]\nkey_file = \"/k\"\nkey_source = \"ssm:/k\"\n", "t.toml", [](const char*) { return std::nullopt; });
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("not both"), std::string::npos) << both.status().ToString();
  auto bad = ParseConfig("[gossip]\nkey_source = \"vault:k\"\n", "t.toml", [](const char*) { return std::nullopt; });
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("gossip.key_source"), std::string::npos) << bad.status().ToString();
  // A file source reads as gossip.key_file does; an absent source says how to set one.
  FakeEnv env;
  env.PutFile("/k", std::string(64, 'a') + "\n");
  Config c;
  c.gossip.key_source = "file:/k";
  Result<std::vector<std::string>> keys = ClusterKeyLoader(env, c).Load();
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  EXPECT_EQ(keys->size(), 1u);
  EXPECT_EQ(ClusterKeyLoader(env, Config()).Load().status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dlagent
