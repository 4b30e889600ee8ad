#pragma once
// Daemon: the composition root of agentd. It owns the parts, serves the control socket, and runs the main
// loop: signals (SIGTERM/SIGINT stop, SIGHUP reloads the config), the systemd watchdog and phase reports.
//
// Threading: Run() is the main thread's loop. GetStatus() is called from gRPC threads; the state it reads
// is protected by mu_. REQUIRES: SIGTERM, SIGINT and SIGHUP are blocked in every thread before Run() (main()
// does this before any thread starts); Run() reads them from a signalfd, beside an eventfd that RequestStop
// writes, so that a part that must stop the agent (a spot notice) calls it instead of signalling the process.

#include <mutex>
#include <optional>
#include <string>

#include <spdlog/common.h>

#include "agent/daemon/cluster_keys.h"
#include "agent/daemon/cluster_runtime.h"
#include "agent/daemon/config.h"
#include "agent/daemon/membership.h"
#include "agent/daemon/systemd_notifier.h"
#include "agent/ps/server.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

struct DaemonOptions {
  std::string config_path;                 // the file SIGHUP re-reads
  bool config_required = false;            // --config was given: a missing file is an error on reload too
  std::optional<spdlog::level::level_enum> log_level_override;  // --log-level wins over the config
};

class Daemon final : public ControlHandler {
 public:
  // env must outlive the Daemon.
  Daemon(Env& env, DaemonOptions options, Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until SIGTERM or SIGINT. Returns the process exit code: 0 after a clean stop, 1 when the control
  // socket cannot be served.
  int Run();

  StatusSnapshot GetStatus() override;
  MemberListSnapshot ListMembers() override;
  Result<jobs::v1::JobSummary> RunJob(const PeerCredentials& who, const jobs::v1::RunJobRequest& req) override;
  Result<jobs::v1::JobList> ListJobs(const PeerCredentials& who) override;
  Result<jobs::v1::JobOutputReply> JobOutput(const PeerCredentials& who, const jobs::v1::JobOutputRequest& req) override;
  Result<jobs::v1::KillJobReply> KillJob(const PeerCredentials& who, const jobs::v1::KillJobRequest& req) override;
  Result<jobs::v1::AttachReply> AttachProcess(const PeerCredentials& who, const jobs::v1::AttachRequest& req) override;
  Result<jobs::v1::HealthReport> CheckHealth(const PeerCredentials& who, const jobs::v1::HealthCheckRequest& req) override;

  // Asks Run() to leave the cluster and stop, as SIGTERM does (a spot interruption notice). Any thread.
  void RequestStop(const std::string& why);

 private:
  // log: write the phase line to the journal too (false when only a countdown in it moved).
  void SetPhase(AgentPhase phase, std::string detail, bool log = true);
  void Reload();
  // The keys the shard checks job tokens with (from the key source, at start and at each reload).
  void SetShardKeys(const std::vector<std::string>& keys);
  // The jobs of the cluster runtime; FailedPrecondition says why there are none.
  Result<std::shared_ptr<jobs::Jobs>> Jobs();
  // WATCHDOG=1 when every heartbeat is fresh; otherwise none, and the stale loops are logged once.
  void PetWatchdog(Duration interval);
  spdlog::level::level_enum EffectiveLevel(const Config& c) const;

  Env& env_;
  const DaemonOptions options_;
  SystemdNotifier notifier_;
  const MonoTime started_mono_;
  const WallTime started_wall_;
  // Written by RequestStop; Run() waits on it beside the signals.
  int stop_fd_ = -1;
  // The loops WATCHDOG=1 vouches for: the control socket's, the shard's, gossip's and the formation's.
  Heartbeats heartbeats_;
  bool watchdog_withheld_ = false;  // main thread only

  mutable Mutex mu_;
  Config config_ GUARDED_BY(mu_);
  uint64_t config_generation_ GUARDED_BY(mu_) = 1;
  std::vector<std::string> ps_keys_ GUARDED_BY(mu_);  // the cluster keys the shard checks job tokens with
  AgentPhase phase_ GUARDED_BY(mu_) = AgentPhase::kStarting;
  std::string phase_detail_ GUARDED_BY(mu_) = "starting";

  // Set once in Run() (before the control socket serves, or right after), cleared after it stops: read
  // without mu_. Without a roster (cluster.expected_nodes = 0) the daemon runs gossip alone in membership_;
  // with one, runtime_ runs the whole formation.
  std::unique_ptr<Membership> membership_;
  std::unique_ptr<ClusterKeyLoader> keys_;  // without a roster: the keys of membership_ (main thread only)
  std::unique_ptr<ClusterRuntime> runtime_;
  std::unique_ptr<ps::PsServer> ps_;  // the parameter-server shard, when ps.enabled
};

}  // namespace dlagent
