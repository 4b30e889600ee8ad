#pragma once
// LocalCluster: agentd processes forming a real cluster, for tests and benchmarks. Each node has its own
// address, its own IMDS emulator and its own files root; fauxqs serves the discovery queue; a local endpoint
// records CloudFormation signals.
//
// As root, every node is a network namespace of its own (scripts/netns: eth0 at 10.<random>.0.K on a bridge,
// its IMDS emulator at 169.254.169.254:80 inside it, so the agent runs with the default metadata endpoint),
// fauxqs and the CloudFormation endpoint listen in a services namespace at 10.<random>.255.254, and every
// agent also has a mount namespace of its own (unshare -m) and bind-mounts one shared directory (its mounts
// vanish with it), and in network namespaces a host name of its own, node-K (unshare --uts). The thread that
// makes the cluster works inside the services namespace until the cluster is destroyed, which deletes the
// namespaces (and any that a killed test process left behind); error() says why when they cannot be made.
// Without root (or with options.netns off) the nodes share loopback at
// 127.<random>.0.K.
//
// Thread safety: one thread makes, drives and destroys it.

#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/rpc/control_handler.h"
#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/sqs_client.h"
#include "tests/emulators/imds/imds_emulator.h"
#include "tests/support/local_http_server.h"
#include "tests/support/secrets_emulator.h"
#include "tests/support/sqs_emulator.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent::testing {

// The secrets every local cluster is given, so that tests can look for them where they must never be.
inline constexpr char kLocalClusterKeyHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
inline constexpr char kLocalClusterAwsSecret[] = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzLocalClusterSecret";

struct LocalClusterOptions {
  int expected = 8;
  int min = 0;
  std::string join_deadline = "60s";
  std::string reseal_settle = "5s";
  std::string reseal = "on-failure";
  std::string leave_before_maintenance = "0s";
  std::string hello_interval = "1s";
  std::string poll_wait = "5s";
  bool throttle_sqs = false;  // every other SQS request answered with ThrottlingException
  bool storage = true;        // as root: a bind mount of one shared directory
  bool netns = true;          // as root: a network namespace per node (else loopback addresses)
  std::string socket_group;   // agent.socket_group; set, the cluster's directory lets others reach the sockets
  // The cluster key from AWS (gossip.key_source): even nodes from a Secrets Manager secret, odd ones from an SSM
  // SecureString parameter, both served by a SecretsEmulator in the services namespace.
  bool keys_from_aws = false;
  std::vector<int> servers;  // nodes started with cluster.role = "server" (a dlps shard, no ranks)
};

class LocalCluster {
 public:
  // Starts the emulators for n nodes (no agent yet); error() says what failed.
  LocalCluster(int n, LocalClusterOptions o);
  ~LocalCluster();

  const std::string& error() const { return error_; }
  static bool root();
  std::string Id(int i) const;
  std::string Ip(int i) const;
  std::string Sock(int i) const;
  // Node i's /metrics (metrics.bind = "node": served once IDENTIFY learned the address).
  std::string MetricsUrl(int i) const { return "http://" + Ip(i) + ":7071/metrics"; }
  std::string Root(int i) const;
  std::string Mount(int i) const;
  std::string Shared() const;
  int gpus(int i) const { return i % 4 + 1; }
  ImdsEmulator& Imds(int i) { return *imds_[i]; }
  const std::string& queue_url() const { return queue_url_; }
  int gossip_port() const { return port_; }  // every node's gossip and cluster service port
  SqsClient& sqs() { return *sqs_client_; }
  SecretsEmulator* secrets() { return secrets_.get(); }  // with keys_from_aws

  void Start(int i, bool master = false);
  void Kill(int i, int sig = SIGKILL);
  // As a node that loses power: SIGKILL to every process of its network namespace, the agent and the ranks it
  // started alike (on loopback, only the agent). Waits for the agent.
  void PowerOff(int i);
  int Pid(int i) const { return agents_[i]->pid(); }
  std::string Log(int i) const;

  std::optional<StatusSnapshot> Status(int i);
  // Waits until every listed agent's phase is `phase`; false on timeout.
  bool WaitPhase(const std::vector<int>& nodes, const std::string& phase, std::chrono::duration<double> timeout);
  // Each listed node's phase line, for failure messages.
  std::string Describe(const std::vector<int>& nodes);
  // The CloudFormation signals received so far, in order.
  std::vector<nlohmann::json> Signals();
  // The signals once at least n have come (or what came within timeout).
  std::vector<nlohmann::json> WaitSignals(size_t n, std::chrono::milliseconds timeout);
  // A node file, by its path under the node's root; "<error>" when it cannot be read.
  std::string ReadFile(int i, const std::string& path);
  int throttled() const { return throttled_.load(); }
  // The network namespace that node i runs in; empty on loopback.
  std::string Netns(int i) const { return netns_.empty() ? "" : netns_ + "-" + std::to_string(i); }
  // The namespace of the bridge (br0) that joins the nodes; node K's link ends there as pK (scripts/netns).
  std::string ServicesNetns() const { return netns_.empty() ? "" : netns_ + "-s"; }

 private:
  bool MakeNamespaces();
  dlagent::Status StartImds(int i);
  void StartThrottlingProxy(const std::string& host);

  const int n_;
  const LocalClusterOptions o_;
  TempDir dir_;
  int port_ = 0, subnet_ = 0;
  std::string netns_;    // namespace name prefix when nodes live in network namespaces
  int home_netns_ = -1;  // the making thread's own network namespace, entered again on destruction
  std::string error_;
  std::unique_ptr<SqsEmulator> sqs_;
  std::unique_ptr<SecretsEmulator> secrets_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Env> env_;
  std::unique_ptr<StaticCredentials> creds_;
  std::unique_ptr<SqsClient> sqs_client_;
  std::string queue_url_, sqs_endpoint_;
  LocalHttpServer cfn_, proxy_;
  std::atomic<bool> throttle_{false};
  std::atomic<int> forwarded_{0}, throttled_{0};
  std::mutex mu_;
  std::condition_variable signalled_;    // a signal came
  std::vector<nlohmann::json> signals_;  // protected by mu_
  std::vector<std::unique_ptr<ImdsEmulator>> imds_;
  std::vector<std::unique_ptr<Subprocess>> agents_;
};

std::vector<int> Range(int n);

}  // namespace dlagent::testing
