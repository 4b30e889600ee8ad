#pragma once
// agentd's configuration: /etc/dlagent/agentd.toml (docs/configuration.md lists every key). A default-made
// Config holds every default, as each member's "Default:" says.
//
// Thread safety: Config is a value; the daemon swaps whole Configs on reload.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/ps/shard.h"
#include "bootstrap/common/env.h"
#include "bootstrap/discovery/formation_core.h"
#include "bootstrap/node/mount_manager.h"
#include "build_info.h"

namespace dlagent {

struct AgentConfig {
  std::string socket = kDefaultSocketPath;  // Default: /run/dlagent/agentd.sock
  std::string socket_group = "dlagent";     // Default: "dlagent" (used when the group exists)
  std::string log_level = "info";           // Default: "info"
  // Default: 25s (under the unit's TimeoutStopSec=30s). Past it a stop that has not ended exits the process.
  Duration stop_timeout = std::chrono::seconds(25);
};

struct ClusterConfig {
  std::string name = "default";  // Default: "default"
  std::string role = "worker";   // Default: "worker"; "master" is rank 0 of the roster; "server" serves a dlps shard, runs no ranks
  // Roster sealing (docs/cluster.md). expected_nodes 0: no roster, membership only.
  int64_t expected_nodes = 0;                            // Default: 0
  int64_t min_nodes = 0;                                 // Default: 0, meaning expected_nodes (no shrinking)
  Duration join_deadline = std::chrono::minutes(10);     // Default: 10m
  ResealPolicy reseal = ResealPolicy::kOnFailure;        // Default: on-failure; never, on-change
  Duration reseal_settle = std::chrono::seconds(30);     // Default: 30s of a stable view before a reseal
  ResealQuorum reseal_quorum = ResealQuorum::kMajority;  // Default: majority; leader
  // Leave the cluster gracefully this long before a scheduled maintenance event (reboot, stop, retirement)
  // starts; 0: stay (the event is only reported). Default: 0
  Duration leave_before_maintenance = Duration(0);
};

struct DiscoveryConfig {
  std::string queue;                                  // Default: "" (no SQS: gossip.seeds only). Name or URL
  Duration hello_interval = std::chrono::seconds(5);  // Default: 5s between HELLOs (jittered) while discovering
  Duration poll_wait = std::chrono::seconds(20);      // Default: 20s long polls
};

struct NodeConfig {
  int64_t gpus = -1;  // Default: -1 (count them: NVML, /dev, /proc)
};

struct StorageConfig {
  StorageKind kind = StorageKind::kNone;            // Default: none; efs, nfs4, bind
  std::string source;                               // efs: fs-id; nfs4: host:/export; bind: a directory
  std::string mount_point = "/mnt/efs";             // Default: /mnt/efs
  std::vector<std::string> mount_target_ips;        // efs: fallback when the DNS name does not resolve
  Duration dns_wait = std::chrono::minutes(2);      // Default: 2m
  Duration mount_budget = std::chrono::minutes(5);  // Default: 5m
};

// Where the node files go (DESIGN section 6); root prefixes them all.
struct FilesConfig {
  std::string root;  // Default: "" (the real root)
  std::string workers = "/opt/deeplearning/workers";
  std::string hosts = "/etc/hosts";
  std::string profile = "/etc/profile.d/deeplearning.sh";
  std::string env = "/etc/dlagent/cluster.env";
  std::string hostfile = "/etc/dlagent/hostfile";
  std::string roster = "/etc/dlagent/roster.json";
};

enum class GossipProfile { kLan, kFast };  // swim::SwimConfig::Lan() or Fast()

// Membership gossip. Off unless key_file is set: gossip is always encrypted.
struct GossipConfig {
  std::string key_file;  // Default: "" (gossip off). 64 hex characters: openssl rand -hex 32
  // Default: "" (key_file). file:/PATH, secretsmanager:NAME-OR-ARN or ssm:/PARAMETER/NAME (cluster_keys.h)
  std::string key_source;
  std::string name;                             // Default: "" (the host name)
  std::string bind = "0.0.0.0";                 // Default: every interface
  int64_t port = 7946;                          // Default: 7946 (UDP for gossip, TCP for push-pull)
  std::string advertise;                        // Default: "" (bind, unless that is 0.0.0.0)
  std::vector<std::string> seeds;               // Default: none. "ip:port" of members to join through
  GossipProfile profile = GossipProfile::kLan;  // Default: lan; fast for small clusters on a good network
};

// The parameter-server shard the agent serves (docs/ps.md): one job at a time, sized by its workers.
struct PsConfig {
  bool enabled = true;              // Default: true
  std::string bind = "0.0.0.0";     // Default: every interface
  int64_t port = 7070;              // Default: 7070 (TCP: the dlps workers' connections); 0: any free port
  ps::Mode mode = ps::Mode::kSync;  // Default: sync; async applies every push at once
  std::string checkpoint_dir;       // Default: "" (checkpoints refused). Shared storage: the same path on every node
  // Default: true. Serve only jobs the agents started (agentctl run --launcher dlps), whose workers show a
  // token made with the cluster key; needs gossip.key_file (without it the shard serves anyone).
  bool authenticate = true;
};

// Jobs (docs/jobs.md): remote execution of the cluster key's holders' commands, as the users who ask.
struct JobsConfig {
  bool enabled = true;                         // Default: true. false: this agent starts no job and serves no job calls
  std::string agentctl = "/usr/bin/agentctl";  // Default: /usr/bin/agentctl, run by mpirun to start its daemons (mpi)
  // Default: true. Where systemd is PID 1 and agentd is root, each rank runs in a transient scope of its own
  // (jobs/scope.h); false: in agentd's cgroup, sharing its TasksMax.
  bool scopes = true;
  int64_t tasks_max = 0;  // Default: 0, systemd's DefaultTasksMax. The tasks one rank's scope may hold
};

// /metrics and the status page (docs/operations.md). Loopback by default: the page shows job commands and
// output, which may hold secrets; serving the VPC is a choice (bind = "node").
struct MetricsConfig {
  bool enabled = true;             // Default: true
  std::string bind = "127.0.0.1";  // Default: 127.0.0.1. An IPv4 address, or "node": the address IDENTIFY learned
  int64_t port = 7071;             // Default: 7071 (TCP, HTTP); 0: any free port
};

// Environment variables override these (see ApplyAwsEnvironment).
struct AwsConfig {
  std::string region;                                    // Default: "" (from IMDS)
  std::string sqs_endpoint;                              // Default: "" (the regional endpoint)
  std::string imds_endpoint = "http://169.254.169.254";  // Default: http://169.254.169.254
  bool imds_disabled = false;                            // Default: false
  bool imds_root_only = true;                            // Default: true. Only root reaches instance metadata on this host (imds_guard.h)
  std::string cfn_wait_handle;                           // Default: "" (no CloudFormation signal). The presigned wait handle URL
  std::string secretsmanager_endpoint;                   // Default: "" (the regional endpoint); AWS_ENDPOINT_URL_SECRETS_MANAGER
  std::string ssm_endpoint;                              // Default: "" (the regional endpoint); AWS_ENDPOINT_URL_SSM
};

struct Config {
  std::string path;  // the file it came from, or "" for built-in defaults
  AgentConfig agent;
  ClusterConfig cluster;
  AwsConfig aws;
  GossipConfig gossip;
  DiscoveryConfig discovery;
  NodeConfig node;
  StorageConfig storage;
  FilesConfig files;
  PsConfig ps;
  JobsConfig jobs;
  MetricsConfig metrics;
};

using GetEnvFn = std::function<std::optional<std::string>(const char* name)>;
// The process environment.
std::optional<std::string> ProcessGetEnv(const char* name);

// Parses TOML text. Every problem (syntax, unknown key, wrong type, value out of range) is reported in one
// InvalidArgument status, a line each, as "<path>:<line>:<col>: <key>: <what is wrong>; <what is accepted>".
// The AWS environment variables are applied after parsing.
Result<Config> ParseConfig(std::string_view text, const std::string& path, const GetEnvFn& getenv);

// Reads and parses path. A missing file is an error when must_exist, else the defaults are used.
Result<Config> LoadConfig(Env& env, const std::string& path, bool must_exist, const GetEnvFn& getenv);

// Every key the parser knows, as "section.key", in file order. docs/configuration.md documents each.
std::vector<std::string> KnownConfigKeys();

// The log levels accepted by agent.log_level and --log-level.
const std::vector<std::string>& LogLevelNames();

}  // namespace dlagent
