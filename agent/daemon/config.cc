#include "agent/daemon/config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

// toml++ is used header-only, in this file alone, without exceptions: parse() returns a result.
#define TOML_HEADER_ONLY 1
#define TOML_EXCEPTIONS 0
// toml++ 3.3 states its parser's invariants as assertions, which a build without NDEBUG turns into aborts and
// clang with NDEBUG into assumptions (undefined behaviour when false). Malformed input breaks some of them
// (found by fuzzing, tests/fuzz/config_fuzz.cc: "s=[}"); the parser then goes on to report an error, as it
// does in the package (GCC, NDEBUG: nothing is checked or assumed). Every build takes that path here: a typo
// in agentd.toml must be an error, not an abort. What toml++ marks unreachable is kept from it by
// PrepareForToml (toml_input.h).
#include <toml++/impl/preprocessor.h>
#undef TOML_ASSERT
#define TOML_ASSERT(expr) static_cast<void>(0)
#undef TOML_ASSUME
#define TOML_ASSUME(...) static_cast<void>(0)
#include <toml++/toml.h>

#include "agent/daemon/key_source.h"
#include "agent/daemon/toml_input.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/host_port.h"
#include "build_info.h"

namespace dlagent {
namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;

std::string Where(const std::string& path, const toml::source_region& src) {
  return path + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
}

std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? std::string(sep) : "") + v[i];
  return out;
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The known name a typo most likely meant, or "" when none is close.
std::string Closest(const std::string& name, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = 3;  // at most two edits away
  for (const auto& k : known) {
    size_t d = EditDistance(name, k);
    if (d < best_d) best_d = d, best = k;
  }
  return best;
}

// Reads typed keys out of one [section], remembering which keys exist so that the rest can be reported
// as unknown. Errors accumulate; Finish() returns them all.
class ConfigReader {
 public:
  ConfigReader(const toml::table& root, std::string path) : root_(root), path_(std::move(path)) {}

  void Section(const std::string& name) {
    section_ = name;
    sections_.push_back(name);
    table_ = nullptr;
    const toml::node* node = root_.get(name);
    if (node && !node->is_table()) {
      Error(node->source(), name, "expected a table [" + name + "]");
    } else if (node) {
      table_ = node->as_table();
    }
  }

  void String(const std::string& key, std::string* out, const std::function<std::string(const std::string&)>& check = {}) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_string()) return Error(n->source(), key, "expected a string, got " + TypeName(*n));
    std::string v = n->as_string()->get();
    if (check) {
      std::string why = check(v);
      if (!why.empty()) return Error(n->source(), key, why);
    }
    *out = std::move(v);
  }

  // A value among named ones, kept as its enum: parsed here once, never again downstream.
  template <typename E>
  void Enum(const std::string& key, const std::vector<std::pair<std::string, E>>& allowed, E* out) {
    std::string name;
    String(key, &name, [&](const std::string& v) {
      std::vector<std::string> names;
      for (const auto& [n, e] : allowed) {
        if (n == v) return std::string();
        names.push_back(n);
      }
      return "\"" + v + "\" is not one of: " + Join(names, ", ");
    });
    for (const auto& [n, e] : allowed) {
      if (n == name) *out = e;
    }
  }

  void Enum(const std::string& key, const std::vector<std::string>& allowed, std::string* out) {
    String(key, out, [&](const std::string& v) {
      for (const auto& a : allowed)
        if (a == v) return std::string();
      return "\"" + v + "\" is not one of: " + Join(allowed, ", ");
    });
  }

  void Int(const std::string& key, int64_t min, int64_t max, int64_t* out) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_integer()) return Error(n->source(), key, "expected an integer, got " + TypeName(*n));
    const int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      return Error(n->source(), key, std::to_string(v) + " is out of range " + std::to_string(min) + ".." + std::to_string(max));
    }
    *out = v;
  }

  void Dur(const std::string& key, Duration min, Duration* out, Duration max = std::chrono::hours(24 * 365)) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_string()) return Error(n->source(), key, "expected a duration string like \"90s\" or \"10m\", got " + TypeName(*n));
    Result<Duration> d = ParseDuration(n->as_string()->get());
    if (!d.ok()) return Error(n->source(), key, std::string(d.status().message()));
    if (*d < min) return Error(n->source(), key, "\"" + n->as_string()->get() + "\" is shorter than " + FormatDuration(min));
    if (*d > max) return Error(n->source(), key, "\"" + n->as_string()->get() + "\" is longer than " + FormatDuration(max));
    *out = *d;
  }

  void StringList(const std::string& key, const std::function<std::string(const std::string&)>& check, std::vector<std::string>* out) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_array()) return Error(n->source(), key, "expected an array of strings, got " + TypeName(*n));
    std::vector<std::string> values;
    for (const toml::node& item : *n->as_array()) {
      if (!item.is_string()) return Error(item.source(), key, "expected strings in the array, got " + TypeName(item));
      std::string v = item.as_string()->get();
      if (std::string why = check ? check(v) : ""; !why.empty()) return Error(item.source(), key, why);
      values.push_back(std::move(v));
    }
    *out = std::move(values);
  }

  void Bool(const std::string& key, bool* out) {
    const toml::node* n = Find(key);
    if (!n) return;
    if (!n->is_boolean()) return Error(n->source(), key, "expected true or false, got " + TypeName(*n));
    *out = n->as_boolean()->get();
  }

  Status Finish() {
    for (auto&& [k, v] : root_) {
      std::string name(k.str());
      if (std::find(sections_.begin(), sections_.end(), name) == sections_.end()) {
        std::string hint = Closest(name, sections_);
        Error(k.source(), name,
              "unknown section" + (hint.empty() ? "" : " (did you mean [" + hint + "]?)") + "; known sections: " + Join(sections_, ", "), false);
      }
    }
    for (const auto& section : sections_) {
      const toml::table* t = root_.get(section) ? root_.get(section)->as_table() : nullptr;
      if (!t) continue;
      for (auto&& [k, v] : *t) {
        std::string key = section + "." + std::string(k.str());
        if (!known_.count(key)) {
          std::vector<std::string> in_section;
          for (const auto& kk : order_)
            if (kk.rfind(section + ".", 0) == 0) in_section.push_back(kk.substr(section.size() + 1));
          std::string hint = Closest(std::string(k.str()), in_section);
          errors_.push_back({Pos(k.source()), Where(path_, k.source()) + ": " + key + ": unknown key" +
                                                  (hint.empty() ? "" : " (did you mean " + hint + "?)") + "; keys in [" + section +
                                                  "]: " + Join(in_section, ", ")});
        }
      }
    }
    if (errors_.empty()) return Status::Ok();
    std::stable_sort(errors_.begin(), errors_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<std::string> lines;
    for (auto& e : errors_) lines.push_back(std::move(e.second));
    return Status::InvalidArgument("config", Join(lines, "\n"));
  }

  const std::vector<std::string>& keys() const { return order_; }

 private:
  const toml::node* Find(const std::string& key) {
    std::string full = section_ + "." + key;
    known_.insert(full);
    order_.push_back(full);
    return table_ ? table_->get(key) : nullptr;
  }
  static std::pair<uint32_t, uint32_t> Pos(const toml::source_region& src) { return {src.begin.line, src.begin.column}; }
  static std::string TypeName(const toml::node& n) {
    switch (n.type()) {
      case toml::node_type::string: return "a string";
      case toml::node_type::integer: return "an integer";
      case toml::node_type::floating_point: return "a number";
      case toml::node_type::boolean: return "a boolean";
      case toml::node_type::table: return "a table";
      case toml::node_type::array: return "an array";
      default: return "a date or time";
    }
  }
  void Error(const toml::source_region& src, const std::string& key, const std::string& what, bool in_section = true) {
    errors_.push_back({Pos(src), Where(path_, src) + ": " + (in_section ? section_ + "." : "") + key + ": " + what});
  }

  const toml::table& root_;
  std::string path_;
  std::string section_;
  const toml::table* table_ = nullptr;
  std::vector<std::string> sections_;
  std::set<std::string> known_;
  std::vector<std::string> order_;
  std::vector<std::pair<std::pair<uint32_t, uint32_t>, std::string>> errors_;  // ((line, column), text)
};

std::string CheckClusterName(const std::string& v) {
  if (v.empty() || v.size() > 64) return "must be 1 to 64 characters, got " + std::to_string(v.size());
  for (char c : v) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
      return "\"" + v + "\" has '" + std::string(1, c) + "'; use letters, digits, '-', '_' and '.'";
    }
  }
  return "";
}

std::string CheckAbsolutePath(const std::string& v) {
  if (v.empty() || v[0] != '/') return "\"" + v + "\" must be an absolute path";
  return "";
}

std::string CheckSocketPath(const std::string& v) {
  if (v.empty() || v[0] != '/') return "\"" + v + "\" must be an absolute path";
  if (v.size() > 107) return "\"" + v + "\" is longer than a Unix socket path may be (107 bytes)";
  return "";
}

std::string CheckHostPort(const std::string& v) {
  if (ParseHostPort(v).ok()) return "";
  return "\"" + v + "\" is not an address like 10.0.1.17:7946";
}

std::string CheckIpv4(const std::string& v) {
  in_addr a;
  if (v.empty() || inet_pton(AF_INET, v.c_str(), &a) == 1) return "";
  return "\"" + v + "\" is not an IPv4 address (e.g. 0.0.0.0 or 10.0.1.17)";
}

std::string CheckUrl(const std::string& v) {
  if (v.empty() || v.rfind("http://", 0) == 0 || v.rfind("https://", 0) == 0) return "";
  return "\"" + v + "\" must start with http:// or https://";
}

// Reads the schema: one place lists every key, its default and its check.
void ReadSchema(ConfigReader& r, Config& c) {
  r.Section("agent");
  r.String("socket", &c.agent.socket, CheckSocketPath);
  r.String("socket_group", &c.agent.socket_group);
  r.Enum("log_level", LogLevelNames(), &c.agent.log_level);
  r.Dur("stop_timeout", std::chrono::seconds(1), &c.agent.stop_timeout);

  r.Section("cluster");
  r.String("name", &c.cluster.name, CheckClusterName);

  r.Enum("role", {"worker", "master", "server"}, &c.cluster.role);
  r.Int("expected_nodes", 0, 10000, &c.cluster.expected_nodes);
  r.Int("min_nodes", 0, 10000, &c.cluster.min_nodes);
  r.Dur("join_deadline", std::chrono::seconds(1), &c.cluster.join_deadline);
  r.Enum<ResealPolicy>("reseal", {{"never", ResealPolicy::kNever}, {"on-failure", ResealPolicy::kOnFailure}, {"on-change", ResealPolicy::kOnChange}},
                       &c.cluster.reseal);
  r.Dur("reseal_settle", Duration(0), &c.cluster.reseal_settle);
  r.Enum<ResealQuorum>("reseal_quorum", {{"majority", ResealQuorum::kMajority}, {"leader", ResealQuorum::kLeader}}, &c.cluster.reseal_quorum);
  r.Dur("leave_before_maintenance", Duration(0), &c.cluster.leave_before_maintenance);

  r.Section("gossip");
  r.String("key_file", &c.gossip.key_file,
           [](const std::string& v) { return v.empty() || v[0] == '/' ? std::string() : "\"" + v + "\" must be an absolute path"; });
  r.String("key_source", &c.gossip.key_source, [](const std::string& v) {
    if (v.empty()) return std::string();
    Result<KeySource> s = ParseKeySource(v);
    return s.ok() ? std::string() : std::string(s.status().message());
  });
  r.String("name", &c.gossip.name);
  r.String("bind", &c.gossip.bind, CheckIpv4);
  r.Int("port", 1, 65535, &c.gossip.port);
  r.String("advertise", &c.gossip.advertise, CheckIpv4);
  r.StringList("seeds", CheckHostPort, &c.gossip.seeds);
  r.Enum<GossipProfile>("profile", {{"lan", GossipProfile::kLan}, {"fast", GossipProfile::kFast}}, &c.gossip.profile);

  r.Section("aws");
  r.String("region", &c.aws.region);
  r.String("sqs_endpoint", &c.aws.sqs_endpoint, CheckUrl);
  r.String("imds_endpoint", &c.aws.imds_endpoint, CheckUrl);
  r.Bool("imds_disabled", &c.aws.imds_disabled);
  r.Bool("imds_root_only", &c.aws.imds_root_only);
  r.String("cfn_wait_handle", &c.aws.cfn_wait_handle, CheckUrl);
  r.String("secretsmanager_endpoint", &c.aws.secretsmanager_endpoint, CheckUrl);
  r.String("ssm_endpoint", &c.aws.ssm_endpoint, CheckUrl);

  r.Section("discovery");
  r.String("queue", &c.discovery.queue);
  r.Dur("hello_interval", std::chrono::milliseconds(100), &c.discovery.hello_interval);
  r.Dur("poll_wait", Duration(0), &c.discovery.poll_wait, std::chrono::seconds(20));

  r.Section("node");
  r.Int("gpus", -1, 1024, &c.node.gpus);

  r.Section("storage");
  r.Enum<StorageKind>("kind", {{"none", StorageKind::kNone}, {"efs", StorageKind::kEfs}, {"nfs4", StorageKind::kNfs4}, {"bind", StorageKind::kBind}},
                      &c.storage.kind);
  r.String("source", &c.storage.source);
  r.String("mount_point", &c.storage.mount_point, CheckAbsolutePath);
  r.StringList("mount_target_ips", CheckIpv4, &c.storage.mount_target_ips);
  r.Dur("dns_wait", Duration(0), &c.storage.dns_wait);
  r.Dur("mount_budget", std::chrono::seconds(1), &c.storage.mount_budget);

  r.Section("ps");
  r.Bool("enabled", &c.ps.enabled);
  r.String("bind", &c.ps.bind, CheckIpv4);
  r.Int("port", 0, 65535, &c.ps.port);
  r.Enum<ps::Mode>("mode", {{"sync", ps::Mode::kSync}, {"async", ps::Mode::kAsync}}, &c.ps.mode);
  r.String("checkpoint_dir", &c.ps.checkpoint_dir, [](const std::string& v) { return v.empty() ? std::string() : CheckAbsolutePath(v); });
  r.Bool("authenticate", &c.ps.authenticate);

  r.Section("jobs");
  r.Bool("enabled", &c.jobs.enabled);
  r.String("agentctl", &c.jobs.agentctl, CheckAbsolutePath);
  r.Bool("scopes", &c.jobs.scopes);
  r.Int("tasks_max", 0, 4194304, &c.jobs.tasks_max);

  r.Section("metrics");
  r.Bool("enabled", &c.metrics.enabled);
  r.String("bind", &c.metrics.bind, [](const std::string& v) {
    if (v == "node") return std::string();
    if (v.empty()) return std::string("\"\" is not an address: give an IPv4 address (127.0.0.1, 10.0.1.17, 0.0.0.0) or \"node\"");
    const std::string bad = CheckIpv4(v);
    return bad.empty() ? bad : bad + ", or \"node\" (this node's own address)";
  });
  r.Int("port", 0, 65535, &c.metrics.port);

  r.Section("files");
  r.String("root", &c.files.root, [](const std::string& v) { return v.empty() ? std::string() : CheckAbsolutePath(v); });
  for (auto [key, field] : {std::pair{"workers", &c.files.workers},
                            {"hosts", &c.files.hosts},
                            {"profile", &c.files.profile},
                            {"env", &c.files.env},
                            {"hostfile", &c.files.hostfile},
                            {"roster", &c.files.roster}}) {
    r.String(key, field, CheckAbsolutePath);
  }
}

// Checks across keys, once each key is valid on its own.
Status CheckConsistency(const Config& c, const std::string& path) {
  std::vector<std::string> problems;
  const std::string where = path.empty() ? "configuration" : path;
  if (c.cluster.min_nodes > c.cluster.expected_nodes) {
    problems.push_back(where + ": cluster.min_nodes (" + std::to_string(c.cluster.min_nodes) + ") is more than cluster.expected_nodes (" +
                       std::to_string(c.cluster.expected_nodes) + ")");
  }
  if (!c.gossip.key_file.empty() && !c.gossip.key_source.empty()) {
    problems.push_back(where + ": set one of gossip.key_file and gossip.key_source, not both");
  }
  if (c.metrics.enabled && c.metrics.bind == "node" && c.cluster.expected_nodes == 0) {
    problems.push_back(where +
                       ": metrics.bind = \"node\" needs cluster.expected_nodes > 0 (the address comes from instance metadata); give an address");
  }
  if (c.cluster.expected_nodes > 0 && c.gossip.key_file.empty() && c.gossip.key_source.empty()) {
    problems.push_back(where + ": cluster.expected_nodes needs gossip (set gossip.key_file or gossip.key_source): the roster travels by gossip");
  }
  if (c.storage.kind != StorageKind::kNone && c.storage.source.empty()) {
    problems.push_back(where + ": storage.kind = \"" + std::string(StorageKindName(c.storage.kind)) + "\" needs storage.source (" +
                       (c.storage.kind == StorageKind::kEfs    ? "the file system id, fs-0123abcd"
                        : c.storage.kind == StorageKind::kNfs4 ? "host:/export"
                                                               : "a directory") +
                       ")");
  }
  if (problems.empty()) return Status::Ok();
  return Status::InvalidArgument("config", Join(problems, "\n"));
}

// Environment overrides, named and ordered as the AWS SDKs read them.
Status ApplyAwsEnvironment(AwsConfig& aws, const GetEnvFn& getenv) {
  auto first = [&](std::initializer_list<const char*> names) -> std::optional<std::string> {
    for (const char* n : names) {
      auto v = getenv(n);
      if (v && !v->empty()) return v;
    }
    return std::nullopt;
  };
  if (auto v = first({"AWS_REGION", "AWS_DEFAULT_REGION"})) aws.region = *v;
  if (auto v = first({"AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL"})) {
    if (auto why = CheckUrl(*v); !why.empty()) return Status::InvalidArgument("config", "environment: AWS_ENDPOINT_URL_SQS/AWS_ENDPOINT_URL: " + why);
    aws.sqs_endpoint = *v;
  }
  if (auto v = first({"AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL"})) {
    if (auto why = CheckUrl(*v); !why.empty())
      return Status::InvalidArgument("config", "environment: AWS_ENDPOINT_URL_SECRETS_MANAGER/AWS_ENDPOINT_URL: " + why);
    aws.secretsmanager_endpoint = *v;
  }
  if (auto v = first({"AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL"})) {
    if (auto why = CheckUrl(*v); !why.empty()) return Status::InvalidArgument("config", "environment: AWS_ENDPOINT_URL_SSM/AWS_ENDPOINT_URL: " + why);
    aws.ssm_endpoint = *v;
  }
  if (auto v = first({"AWS_EC2_METADATA_SERVICE_ENDPOINT"})) {
    if (auto why = CheckUrl(*v); !why.empty()) return Status::InvalidArgument("config", "environment: AWS_EC2_METADATA_SERVICE_ENDPOINT: " + why);
    aws.imds_endpoint = *v;
  }
  if (auto v = first({"AWS_EC2_METADATA_DISABLED"})) {
    std::string s = *v;
    for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (s == "true")
      aws.imds_disabled = true;
    else if (s == "false")
      aws.imds_disabled = false;
    else
      return Status::InvalidArgument("config", "environment: AWS_EC2_METADATA_DISABLED=\"" + *v + "\": expected true or false");
  }
  return Status::Ok();
}

}  // namespace

std::optional<std::string> ProcessGetEnv(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

const std::vector<std::string>& LogLevelNames() {
  static const std::vector<std::string> names = {"trace", "debug", "info", "warn", "error"};
  return names;
}

Result<Config> ParseConfig(std::string_view text, const std::string& path, const GetEnvFn& getenv) {
  ASSIGN_OR_RETURN(const std::string prepared, PrepareForToml(text, path));
  toml::parse_result parsed = toml::parse(prepared, path);
  if (!parsed) {
    const auto& err = parsed.error();
    return Status::InvalidArgument("config", Where(path, err.source()) + ": " + std::string(err.description()));
  }
  Config c;
  c.path = path;
  ConfigReader reader(parsed.table(), path);
  ReadSchema(reader, c);
  RETURN_IF_ERROR(reader.Finish());
  RETURN_IF_ERROR(CheckConsistency(c, path));
  RETURN_IF_ERROR(ApplyAwsEnvironment(c.aws, getenv));
  return c;
}

Result<Config> LoadConfig(Env& env, const std::string& path, bool must_exist, const GetEnvFn& getenv) {
  Result<std::string> text = env.ReadFile(path, kMaxConfigBytes);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound && !must_exist) {
      Config c;
      RETURN_IF_ERROR(ApplyAwsEnvironment(c.aws, getenv));
      return c;
    }
    return Status(text.status().code(), "config", "cannot read " + path + ": " + std::string(text.status().message()));
  }
  return ParseConfig(*text, path, getenv);
}

std::vector<std::string> KnownConfigKeys() {
  toml::table empty;
  ConfigReader reader(empty, "");
  Config c;
  ReadSchema(reader, c);
  return reader.keys();
}

}  // namespace dlagent
