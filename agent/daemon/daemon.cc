#include "agent/daemon/daemon.h"

#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <tuple>

#include "agent/daemon/imds_guard.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/log.h"
#include "build_info.h"

namespace dlagent {
namespace {

// What a stop that overran its budget writes before the process ends: made before the timer is armed, since
// the signal handler may only write and exit.
char g_overrun[256];
size_t g_overrun_len = 0;

void OnStopOverrun(int /*sig*/) {
  (void)!::write(STDERR_FILENO, g_overrun, g_overrun_len);
  ::_exit(1);
}

// Stopping must end even when a part or a call in flight never does (a hung loop, a handler stuck on storage, no
// thread left to start): past `budget`, SIGALRM ends the process. It needs no thread, no lock and no allocation.
void ArmStopDeadline(Duration budget) {
  const std::string text = "agentd: stopping took longer than agent.stop_timeout (" + FormatDuration(budget) +
                           "): a part or a call in flight did not end; exiting without finishing the stop\n";
  g_overrun_len = std::min(text.size(), sizeof g_overrun);
  std::memcpy(g_overrun, text.data(), g_overrun_len);
  struct sigaction sa {};
  sa.sa_handler = OnStopOverrun;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGALRM, &sa, nullptr);
  sigset_t alarm;
  sigemptyset(&alarm);
  sigaddset(&alarm, SIGALRM);
  ::pthread_sigmask(SIG_UNBLOCK, &alarm, nullptr);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(budget).count();
  itimerval t{};
  t.it_value.tv_sec = static_cast<time_t>(us / 1000000);
  t.it_value.tv_usec = static_cast<suseconds_t>(us % 1000000);
  ::setitimer(ITIMER_REAL, &t, nullptr);
}

// Only where this host's real instance metadata is used: an emulator elsewhere (tests, the demo) is left alone,
// and so is the host's firewall.
void GuardImds(Env& env, const AwsConfig& aws) {
  const bool real =
      !aws.imds_disabled && (aws.imds_endpoint.starts_with("http://169.254.169.254") || aws.imds_endpoint.starts_with("http://[fd00:ec2::254]"));
  if (!real) return;
  if (::geteuid() != 0) {
    if (aws.imds_root_only) spdlog::warn("imds-guard: agentd is not root, so it cannot limit instance metadata to root");
    return;
  }
  const Status st = ApplyImdsGuard(env, aws.imds_root_only);
  if (!st.ok()) {
    spdlog::error("{}", st.ToString());
  } else if (aws.imds_root_only) {
    spdlog::info("imds-guard: only root reaches instance metadata on this host (nftables table inet {})", kImdsGuardTable);
  }
}

}  // namespace

Daemon::Daemon(Env& env, DaemonOptions options, Config config)
    : env_(env),
      options_(std::move(options)),
      forming_(config.cluster.expected_nodes > 0),
      started_mono_(env.NowMono()),
      started_wall_(env.NowWall()),
      stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      heartbeats_(env, ProcessGetEnv("DLAGENT_TEST_HANG").value_or("")),
      maintenance_(config.cluster.leave_before_maintenance),
      config_(std::move(config)) {}

Daemon::~Daemon() {
  StopParts();
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void Daemon::PetWatchdog(Duration interval) {
  // A loop that has not turned for two intervals (a whole WatchdogSec, 3 s at the least) is hung: say so once,
  // and stop telling systemd that all is well, so that it restarts the agent.
  const Duration within = std::max<Duration>(2 * interval, std::chrono::seconds(3));  // loops beat at least once a second
  const std::vector<std::string> stale = heartbeats_.Stale(within);
  if (stale.empty()) {
    if (watchdog_withheld_) spdlog::info("watchdog: every loop turns again");
    watchdog_withheld_ = false;
    notifier_.Watchdog();
    return;
  }
  if (watchdog_withheld_) return;
  watchdog_withheld_ = true;
  std::string names;
  for (const std::string& n : stale) names += (names.empty() ? "" : ", ") + n;
  spdlog::critical("watchdog: the {} loop{} made no progress for {}; withholding WATCHDOG=1 so that systemd restarts agentd", names,
                   stale.size() > 1 ? "s" : "", FormatDuration(within));
}

void Daemon::RequestStop(const std::string& why) {
  spdlog::warn("stopping: {}", why);
  const uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof one);
}

spdlog::level::level_enum Daemon::EffectiveLevel(const Config& c) const {
  if (options_.log_level_override) return *options_.log_level_override;
  Result<spdlog::level::level_enum> level = ParseLogLevel(c.agent.log_level);
  return level.ok() ? *level : spdlog::level::info;
}

void Daemon::SetPhase(AgentPhase phase, std::string detail, bool log) {
  {
    MutexLock lock(mu_);
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(env_.NowMono() - started_mono_).count();
    if (phase != phase_ || phase_marks_.empty()) {
      if (phase != phase_) ++phase_changes_;
      if (phase_marks_.size() == StatusSnapshot::kMaxPhaseMarks) phase_marks_.erase(phase_marks_.begin() + 1);
      phase_marks_.push_back({phase, now_ms});
    }
    if (phase == AgentPhase::kReady && ready_after_ms_ < 0) ready_after_ms_ = now_ms;
    phase_ = phase;
    phase_detail_ = detail;
  }
  // READY means the storage is mounted: /metrics says so at once, not at the watch's next turn.
  if (phase == AgentPhase::kReady && booted_ && storage_watch_) storage_watch_->CheckNow();
  SetLogField("PHASE", std::string(AgentPhaseName(phase)));
  notifier_.Status(detail);
  if (log) spdlog::info("phase {}: {}", AgentPhaseName(phase), detail);
}

StatusSnapshot Daemon::GetStatus() {
  StatusSnapshot s;
  s.uptime_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(env_.NowMono() - started_mono_).count());
  s.started_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(started_wall_.time_since_epoch()).count();
  s.version = kVersion;
  s.pid = static_cast<uint32_t>(::getpid());
  const struct mallinfo2 heap = ::mallinfo2();
  s.heap_in_use_bytes = heap.uordblks + heap.hblkhd;
  if (Result<std::string> statm = env_.ReadFile("/proc/self/statm", 256); statm.ok()) {  // pages: size resident ...
    unsigned long long size = 0, resident = 0;
    if (std::sscanf(statm->c_str(), "%llu %llu", &size, &resident) == 2) s.rss_bytes = resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  }
  if (booted_) {
    s.cluster = formation_->Snapshot().cluster;  // outside mu_: the formation reports its phase under its own lock
    s.cluster->maintenance = maintenance_.Lines();
  }
  MutexLock lock(mu_);
  s.identity = identity_;
  s.phase = phase_;
  s.phase_detail = phase_detail_;
  s.config_path = config_.path;
  s.cluster_name = config_.cluster.name;
  s.log_level = spdlog::level::to_string_view(EffectiveLevel(config_)).data();
  s.config_generation = config_generation_;
  s.socket_path = config_.agent.socket;
  s.metrics_url = metrics_url_;
  s.phase_changes = phase_changes_;
  s.ready_after_ms = ready_after_ms_;
  s.phases = phase_marks_;
  return s;
}

MemberListSnapshot Daemon::ListMembers() {
  if (GossipRuns()) return membership_->Members();
  return forming_ ? MemberListSnapshot{true, {}} : MemberListSnapshot();  // forming: gossip starts after IDENTIFY
}

void Daemon::SetShardKeys(const std::vector<std::string>& keys) {
  MutexLock lock(mu_);
  ps_keys_ = keys;
}

std::shared_ptr<jobs::Jobs> Daemon::ServedJobs() {
  MutexLock lock(mu_);
  return jobs_;
}

Result<std::shared_ptr<jobs::Jobs>> Daemon::Jobs() {
  if (!forming_) {
    return Status::FailedPrecondition("jobs", "this agent forms no cluster (cluster.expected_nodes is 0): jobs run on a cluster's roster");
  }
  if (stopping_) return Status::Unavailable("jobs", "this agent is stopping");
  std::shared_ptr<jobs::Jobs> j = ServedJobs();
  bool enabled;
  {
    MutexLock lock(mu_);
    enabled = config_.jobs.enabled;
  }
  if (!enabled) return Status::FailedPrecondition("jobs", "jobs are off on this agent (jobs.enabled = false in its configuration)");
  if (!j) return Status::FailedPrecondition("jobs", "this agent has not joined its cluster yet (agentctl status says where it stands)");
  return j;
}

Result<jobs::v1::JobSummary> Daemon::RunJob(const PeerCredentials& who, const jobs::v1::RunJobRequest& req) {
  ASSIGN_OR_RETURN(std::shared_ptr<jobs::Jobs> j, Jobs());
  return j->Run(req, who);
}

Result<jobs::v1::JobList> Daemon::ListJobs(const PeerCredentials& who, const std::string& after, uint32_t limit) {
  ASSIGN_OR_RETURN(std::shared_ptr<jobs::Jobs> j, Jobs());
  return j->List(who, after, limit);
}

Result<jobs::v1::JobOutputReply> Daemon::JobOutput(const PeerCredentials& who, const jobs::v1::JobOutputRequest& req) {
  ASSIGN_OR_RETURN(std::shared_ptr<jobs::Jobs> j, Jobs());
  return j->Output(req, who);
}

Result<jobs::v1::KillJobReply> Daemon::KillJob(const PeerCredentials& who, const jobs::v1::KillJobRequest& req) {
  ASSIGN_OR_RETURN(std::shared_ptr<jobs::Jobs> j, Jobs());
  return j->Kill(req, who);
}

Result<jobs::v1::AttachReply> Daemon::AttachProcess(const PeerCredentials& who, const jobs::v1::AttachRequest& req) {
  ASSIGN_OR_RETURN(std::shared_ptr<jobs::Jobs> j, Jobs());
  return j->Attach(req, who);
}

Result<jobs::v1::HealthReport> Daemon::CheckHealth(const PeerCredentials& who, const jobs::v1::HealthCheckRequest& req) {
  ASSIGN_OR_RETURN(std::shared_ptr<jobs::Jobs> j, Jobs());
  return j->Health(req, who);
}

void Daemon::Reload() {
  notifier_.Reloading();
  Result<Config> fresh = LoadConfig(env_, options_.config_path, options_.config_required, ProcessGetEnv);
  std::string detail;
  {
    MutexLock lock(mu_);
    detail = phase_detail_;
    if (!fresh.ok()) {
      spdlog::error("reload refused, the running configuration stays in force: {}", fresh.status().ToString());
    } else {
      if (fresh->agent.socket != config_.agent.socket) {
        spdlog::warn("agent.socket changed from {} to {}: this takes effect when agentd restarts", config_.agent.socket, fresh->agent.socket);
        fresh->agent.socket = config_.agent.socket;
      }
      const GossipConfig& a = config_.gossip;
      const GossipConfig& b = fresh->gossip;
      if (std::tie(a.key_file, a.key_source, a.name, a.bind, a.port, a.advertise, a.seeds, a.profile) !=
              std::tie(b.key_file, b.key_source, b.name, b.bind, b.port, b.advertise, b.seeds, b.profile) ||
          config_.cluster.name != fresh->cluster.name || config_.cluster.role != fresh->cluster.role) {
        spdlog::warn("[gossip] and [cluster] changes take effect when agentd restarts");
      }
      const PsConfig& pa = config_.ps;
      const PsConfig& pb = fresh->ps;
      if (std::tie(pa.enabled, pa.bind, pa.port, pa.mode, pa.checkpoint_dir) != std::tie(pb.enabled, pb.bind, pb.port, pb.mode, pb.checkpoint_dir)) {
        spdlog::warn("[ps] changes take effect when agentd restarts");
      }
      const ClusterConfig& ca = config_.cluster;
      const ClusterConfig& cb = fresh->cluster;
      if (std::tie(ca.expected_nodes, ca.min_nodes, ca.join_deadline, ca.reseal, ca.reseal_settle) !=
              std::tie(cb.expected_nodes, cb.min_nodes, cb.join_deadline, cb.reseal, cb.reseal_settle) ||
          config_.discovery.queue != fresh->discovery.queue || config_.storage.kind != fresh->storage.kind ||
          config_.storage.source != fresh->storage.source || config_.storage.mount_point != fresh->storage.mount_point ||
          config_.files.root != fresh->files.root || config_.node.gpus != fresh->node.gpus ||
          config_.aws.cfn_wait_handle != fresh->aws.cfn_wait_handle) {
        spdlog::warn("formation settings ([cluster], [discovery], [node], [storage], [files], aws.cfn_wait_handle) take effect when agentd restarts");
      }
      config_ = std::move(*fresh);
      ++config_generation_;
      spdlog::default_logger()->set_level(EffectiveLevel(config_));
      spdlog::info("configuration reloaded from {} (generation {})", config_.path.empty() ? "built-in defaults" : config_.path, config_generation_);
    }
  }
  if (fresh.ok()) {
    // The keys at the (unchanged) key source may have rotated: gossip, rosters, HELLOs, jobs and the shard take
    // them now. Fetched without mu_ held: a key from AWS may take a few attempts.
    Status keys = Status::Ok();
    if (GossipRuns()) {  // before that, the boot loads them
      Result<std::vector<std::string>> loaded = keys_->Load();
      keys = loaded.ok() ? membership_->ReloadKeys(*loaded, keys_->source().Describe()) : loaded.status();
      if (keys.ok()) SetShardKeys(*loaded);
    }
    if (!keys.ok()) spdlog::error("reload: the cluster keys stay as they were: {}", keys.ToString());
  }
  notifier_.Ready(detail);
}

int Daemon::Run() {
  Config config;
  {
    MutexLock lock(mu_);
    config = config_;
  }
  spdlog::info("agentd {} starting (config: {}, cluster: {})", kVersion, config.path.empty() ? "built-in defaults" : config.path,
               config.cluster.name);
  SetPhase(AgentPhase::kStarting, "starting");
  const auto fail = [this](const std::string& why) {
    spdlog::critical("{}", why);
    notifier_.Status("failed: " + why);
    return 1;
  };
  GuardImds(env_, config.aws);
  StartAwsClients(config);
  if (!forming_ && keys_->source().kind != KeySource::Kind::kNone) {
    // Gossip alone, named by [gossip] (or the host name); a key that cannot be had now is an error.
    Result<std::vector<std::string>> keys = keys_->Load();
    if (!keys.ok()) return fail("cannot start gossip: " + keys.status().ToString());
    SetShardKeys(*keys);
    Status st = StartGossip(config, GossipIdentity{}, std::move(*keys));
    if (st.ok()) st = StartClusterService(config);
    if (!st.ok()) return fail("cannot start gossip: " + st.ToString());
  }
  Result<std::unique_ptr<ControlServer>> control =
      StartControlServer({config.agent.socket, config.agent.socket_group, heartbeats_.Register("control")}, this);
  if (!control.ok()) return fail("cannot serve the control socket: " + control.status().ToString());
  control_ = std::move(*control);
  if (Status st = StartShard(config); !st.ok()) return fail(st.ToString());
  if (config.metrics.bind != "node") {
    if (Status st = StartMetrics(config, config.metrics.bind); !st.ok()) return fail(st.ToString());
  }
  if (forming_) {
    const std::string detail = "identify: asking instance metadata" + std::string(config.aws.imds_disabled ? " (disabled: from the config)" : "");
    SetPhase(AgentPhase::kIdentify, detail);
    notifier_.Ready(detail);
    boot_ = std::thread([this, config] { Boot(config); });
  } else {
    const std::string detail = "serving agentctl on " + config.agent.socket;
    SetPhase(AgentPhase::kServing, detail);
    notifier_.Ready(detail);
  }

  const std::optional<Duration> watchdog = SystemdNotifier::WatchdogInterval();
  if (watchdog) PetWatchdog(*watchdog);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  const int signal_fd = ::signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0 || stop_fd_ < 0) {
    spdlog::critical("cannot wait for signals: {}", std::strerror(errno));
    notifier_.Status("failed: cannot wait for signals");
    return 1;
  }
  // Jobs, fan-outs and gRPC calls allocate and free on many threads; glibc keeps the freed pages of each
  // thread's arena (RSS grew about 8 KB a job while the heap in use stayed flat: docs/reliability.md). Giving
  // them back once a minute keeps RSS flat; it takes well under a millisecond with heaps this small.
  constexpr Duration kTrimInterval = std::chrono::seconds(60);
  auto next_trim = std::chrono::steady_clock::now() + kTrimInterval;
  for (;;) {
    // Without a watchdog there is nothing to do between signals: sleep in long stretches.
    const Duration wait = watchdog ? std::min<Duration>(*watchdog, kTrimInterval) : kTrimInterval;
    pollfd fds[2] = {{signal_fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int ready = ::poll(fds, 2, static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()));
    if (watchdog) PetWatchdog(*watchdog);
    if (const auto now = std::chrono::steady_clock::now(); now >= next_trim) {
      ::malloc_trim(0);
      next_trim = now + kTrimInterval;
    }
    if (ready <= 0) continue;            // timeout or EINTR
    if (fds[1].revents & POLLIN) break;  // RequestStop said why
    signalfd_siginfo info;
    if (::read(signal_fd, &info, sizeof info) != sizeof info) continue;
    if (info.ssi_signo == SIGHUP) {
      Reload();
      continue;
    }
    spdlog::info("received {}, stopping", info.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  ::close(signal_fd);
  Duration budget;
  {
    MutexLock lock(mu_);
    budget = config_.agent.stop_timeout;
  }
  ArmStopDeadline(budget);
  notifier_.Stopping();
  SetPhase(AgentPhase::kStopping, "leaving the cluster and stopping");
  StopParts();
  spdlog::info("agentd stopped");
  return 0;
}

}  // namespace dlagent
