#pragma once
// Daemon: the composition root of agentd. It builds every part, owns them, and takes them down in the reverse
// order (daemon_boot.cc); it serves the control socket and runs the main loop: signals (SIGTERM/SIGINT stop,
// SIGHUP reloads the config), the systemd watchdog and phase reports (daemon.cc). No part holds a pointer to
// the daemon's flags: a part that must stop the agent (a spot notice, maintenance) calls RequestStop.
//
// The boot: the control socket and the shard serve at once (and systemd hears READY=1), so that boot never
// waits on other nodes. With a roster to form (cluster.expected_nodes > 0) the boot thread then identifies the
// node (IMDS, retried until it works or the agent stops) and builds, in order: gossip, the discovery clients,
// shared storage, the Formation, the jobs, the cluster service on the gossip port and the event poller.
// Without one, gossip and its service are built before the control socket serves.
//
// Threading: Run() is the main thread's loop. GetStatus() and the other ControlHandler calls come from gRPC
// threads; the state they read is protected by mu_, or was built before booted_ was set. REQUIRES: SIGTERM,
// SIGINT and SIGHUP are blocked in every thread before Run() (main() does this before any thread starts);
// Run() reads them from a signalfd, beside an eventfd that RequestStop writes.

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <spdlog/common.h>

#include "agent/daemon/cluster_keys.h"
#include "agent/daemon/config.h"
#include "agent/daemon/formation.h"
#include "agent/daemon/membership.h"
#include "agent/daemon/node_report.h"
#include "agent/daemon/status_page.h"
#include "agent/daemon/storage_watch.h"
#include "agent/daemon/systemd_notifier.h"
#include "agent/jobs/jobs.h"
#include "agent/metrics/http_server.h"
#include "agent/ps/server.h"
#include "agent/rpc/cluster_service.h"
#include "agent/rpc/control_handler.h"
#include "agent/rpc/control_server.h"
#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/http_metrics.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/imds_event_poller.h"
#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/node/gpu_stats.h"

namespace dlagent {

struct DaemonOptions {
  std::string config_path;                                      // the file SIGHUP re-reads
  bool config_required = false;                                 // --config was given: a missing file is an error on reload too
  std::optional<spdlog::level::level_enum> log_level_override;  // --log-level wins over the config
};

class Daemon final : public ControlHandler {
 public:
  // env must outlive the Daemon.
  Daemon(Env& env, DaemonOptions options, Config config);
  ~Daemon() override;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until SIGTERM or SIGINT. Returns the process exit code: 0 after a clean stop, 1 when the control
  // socket cannot be served.
  int Run();

  StatusSnapshot GetStatus() override;
  MemberListSnapshot ListMembers() override;
  Result<jobs::v1::JobSummary> RunJob(const PeerCredentials& who, const jobs::v1::RunJobRequest& req) override;
  Result<jobs::v1::JobList> ListJobs(const PeerCredentials& who, const std::string& after, uint32_t limit) override;
  Result<jobs::v1::JobOutputReply> JobOutput(const PeerCredentials& who, const jobs::v1::JobOutputRequest& req) override;
  Result<jobs::v1::KillJobReply> KillJob(const PeerCredentials& who, const jobs::v1::KillJobRequest& req) override;
  Result<jobs::v1::AttachReply> AttachProcess(const PeerCredentials& who, const jobs::v1::AttachRequest& req) override;
  Result<jobs::v1::HealthReport> CheckHealth(const PeerCredentials& who, const jobs::v1::HealthCheckRequest& req) override;

  // Asks Run() to leave the cluster and stop, as SIGTERM does (a spot interruption notice). Any thread.
  void RequestStop(const std::string& why);

 private:
  // daemon.cc: the main loop and what the control socket asks.
  // log: write the phase line to the journal too (false when only a countdown in it moved).
  void SetPhase(AgentPhase phase, std::string detail, bool log = true);
  void Reload();
  // The keys the shard checks job tokens with (from the key source, at start and at each reload).
  void SetShardKeys(const std::vector<std::string>& keys);
  // The jobs of the formation; FailedPrecondition says why there are none.
  Result<std::shared_ptr<jobs::Jobs>> Jobs();
  // The jobs as they are served now: null before the boot built them, when jobs are off, and once stopping.
  std::shared_ptr<jobs::Jobs> ServedJobs();
  // True once membership_ may be used from any thread (gossip only: before the control socket serves).
  bool GossipRuns() const { return forming_ ? booted_.load() : membership_ != nullptr; }
  // WATCHDOG=1 when every heartbeat is fresh; otherwise none, and the stale loops are logged once.
  void PetWatchdog(Duration interval);
  spdlog::level::level_enum EffectiveLevel(const Config& c) const;

  // daemon_metrics.cc: /metrics (docs/operations.md).
  // Serves metrics.bind (or `address`, the node's own for "node") on metrics.port; nothing when disabled.
  Status StartMetrics(const Config& c, const std::string& address);
  // The metrics listener's handler: from memory, on its thread.
  metrics::HttpReply ServeHttp(const metrics::HttpRequest& req, const metrics::HttpServerStats& stats);

  // daemon_boot.cc: the parts, built in order and taken down in reverse.
  // HTTP, instance metadata, AWS credentials and the cluster key loader (nothing is asked of AWS yet).
  void StartAwsClients(const Config& c);
  // The shard (when ps.enabled and there is a key to check job tokens with, or ps.authenticate = false).
  Status StartShard(const Config& c);
  // Gossip with the keys: the cluster client, the node and membership_ (not yet the service that answers peers).
  Status StartGossip(const Config& c, const GossipIdentity& who, std::vector<std::string> keys);
  // The cluster service on the gossip port: peers' push-pulls, roster fetches and job calls.
  Status StartClusterService(const Config& c);
  // The boot thread: identify, then build the formation's parts and start them; on failure the phase says why.
  void Boot(const Config& c);
  Status Form(const Config& c);
  std::shared_ptr<jobs::Jobs> MakeJobs(const Config& c, const IdentitySnapshot& id);
  // Runs attempt until it works, fails for good (final says which errors are), or the agent stops (Cancelled).
  // Between attempts the phase line and the journal say what the boot waits for, and it waits with jittered
  // backoff (kBootRetry), woken at once by a stop.
  Status RetryUntilStopped(const std::string& waiting_for, const std::function<Status()>& attempt, const std::function<bool(const Status&)>& final);
  // Stops every part's threads in the reverse order of the boot (the control socket keeps serving status
  // meanwhile), then the control socket, then destroys them. Idempotent.
  void StopParts();

  Env& env_;
  const DaemonOptions options_;
  const bool forming_;  // cluster.expected_nodes > 0: the boot thread forms a cluster
  SystemdNotifier notifier_;
  const MonoTime started_mono_;
  const WallTime started_wall_;
  // Written by RequestStop; Run() waits on it beside the signals.
  int stop_fd_ = -1;
  // The loops WATCHDOG=1 vouches for: the control socket's, the shard's, gossip's, the formation's and the jobs'.
  Heartbeats heartbeats_;
  bool watchdog_withheld_ = false;    // main thread only
  MaintenanceWatch maintenance_;      // fed by the event poller
  std::atomic<bool> leaving_{false};  // RequestStop was called for maintenance or a spot notice (once)

  mutable Mutex mu_;
  std::condition_variable cv_;  // wakes the boot thread's waits at stop
  Config config_ GUARDED_BY(mu_);
  uint64_t config_generation_ GUARDED_BY(mu_) = 1;
  std::vector<std::string> ps_keys_ GUARDED_BY(mu_);  // the cluster keys the shard checks job tokens with
  AgentPhase phase_ GUARDED_BY(mu_) = AgentPhase::kStarting;
  std::string phase_detail_ GUARDED_BY(mu_) = "starting";
  uint64_t phase_changes_ GUARDED_BY(mu_) = 0;
  int64_t ready_after_ms_ GUARDED_BY(mu_) = -1;         // from the start to the first READY; -1 before it
  std::vector<PhaseMark> phase_marks_ GUARDED_BY(mu_);  // StatusSnapshot::phases
  IdentitySnapshot identity_ GUARDED_BY(mu_);           // from IDENTIFY
  std::shared_ptr<jobs::Jobs> jobs_ GUARDED_BY(mu_);    // shared with the calls in flight; taken away at stop
  std::string metrics_url_ GUARDED_BY(mu_);             // once metrics_ serves

  // Set by StopParts before anything stops: every blocking retry (keys, SQS, mounts, CloudFormation) gives up.
  std::atomic<bool> stopping_{false};

  // The parts, in the order they are built. Those of the formation are built by the boot thread and read by
  // other threads only once booted_ is set; the others are built by Run() before the control socket serves.
  std::unique_ptr<HttpClient> http_;
  MeteredHttpClient* aws_calls_ = nullptr;  // http_ itself, whose counts /metrics reads
  std::unique_ptr<ImdsClient> imds_;        // null when aws.imds_disabled
  std::unique_ptr<CredentialChain> credentials_;
  std::unique_ptr<ClusterKeyLoader> keys_;  // Run()'s thread, then the boot thread, then Reload (once booted)
  std::unique_ptr<ps::PsServer> ps_;        // the parameter-server shard, when ps.enabled
  std::unique_ptr<ControlServer> control_;
  // Built by Run() before the control socket serves, or by the boot thread once IDENTIFY learned the node's
  // address (metrics.bind = "node"); taken down with the control socket.
  std::unique_ptr<GpuSampler> gpus_;  // NVML's figures for /metrics: built with metrics_, gone after it
  std::unique_ptr<StatusPage> page_;  // `/` and /api: built with metrics_, gone after it
  std::unique_ptr<metrics::HttpServer> metrics_;
  std::unique_ptr<SqsClient> sqs_sender_, sqs_poller_;
  std::unique_ptr<MountManager> mounts_;
  std::unique_ptr<StorageWatch> storage_watch_;  // with mounts_ (/metrics)
  std::unique_ptr<ClusterClient> cluster_client_;
  std::unique_ptr<swim::GossipNode> gossip_;
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<dlagent::Formation> formation_;
  std::unique_ptr<ClusterServer> cluster_service_;
  std::unique_ptr<ImdsEventPoller> events_;
  std::atomic<bool> booted_{false};  // the formation's parts are built and running
  std::thread boot_;
};

}  // namespace dlagent
