// NodeJobs, its signals and the ends of its ranks: a job's ranks signalled (each rank's scope, else its
// process group), every job stopped when the agent goes, and a rank's exit seen and reaped (node_jobs.h).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include <spdlog/spdlog.h>

#include "agent/jobs/node_jobs.h"  // the class this file completes
#include "agent/jobs/rank_env.h"
#include "agent/jobs/summary.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

void NodeJobs::SignalLocked(Job& job, int sig, bool escalate, const std::string& reason, bool killed) {
  if (job.failure.empty() && !reason.empty()) {
    job.failure = reason;
    job.killed = killed;
    if (killed) job.killed_ranks = RunningRanks(job);
  }
  for (Rank& r : job.ranks) {
    // A rank that ended may leave children in its group that still hold its pipes.
    if (r.reaped || (!r.state.running() && r.out.fd < 0 && r.err.fd < 0)) continue;
    if (r.state.running()) r.state.set_stopped(true);
    SignalRank(r, sig);
  }
  Changed(job);
  if (escalate && sig != SIGKILL) {
    const MonoTime at = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<int64_t>(0, job.spec.grace_ms()));
    job.kill_at = std::min(job.kill_at, at);
  }
}

void NodeJobs::SignalRank(const Rank& rank, int sig) {
  if (!rank.scope.empty()) {
    const Status s = o_.scopes->Kill(rank.scope, sig);
    if (s.ok()) return;
    spdlog::warn("rank {}: {}; signalling its process group instead", rank.state.rank(), s.ToString());
  }
  if (!rank.reaped) ::kill(-rank.state.pid(), sig);  // its zombie holds the group's id: no stranger's
}

Result<pb::SignalReply> NodeJobs::Signal(const pb::SignalRequest& req) {
  if (req.signal() <= 0 || req.signal() >= NSIG)
    return Status::InvalidArgument("jobs", "signal " + std::to_string(req.signal()) + " is not a signal");
  MutexLock lock(mu_);
  auto it = jobs_.find(req.job());
  if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + req.job() + " on " + o_.node);
  Job& job = *it->second;
  pb::SignalReply reply;
  const uint32_t running = RunningRanks(job);
  if (running > 0) {
    spdlog::info("job {}: {} to {} rank{} on this node{}", job.spec.id(), SignalName(req.signal()), running, running == 1 ? "" : "s",
                 req.reason().empty() ? "" : ": " + req.reason());
  }
  SignalLocked(job, req.signal(), req.escalate(), req.reason(), req.killed());
  // A kill that found the ranks already stopping from the same kill (passed on by the coordinator) reached them.
  reply.set_signalled(req.killed() && job.killed ? std::max(running, job.killed_ranks) : running);
  Wake();
  return reply;
}

void NodeJobs::StopAll(const std::string& reason, Duration wait) {
  {
    MutexLock lock(mu_);
    // A node going away is a failure of the job (one a restart gets over), not a kill on purpose.
    leaving_ = true;
    for (auto& [id, job] : jobs_) SignalLocked(*job, SIGTERM, true, reason, false);
  }
  Wake();
  const MonoTime until = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < until) {
    {
      MutexLock lock(mu_);
      if (RunningRanks() == 0) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void NodeJobs::Reap(Job& job, Rank& rank) {
  siginfo_t info{};
  // WNOWAIT: the zombie stays until the job has ended (ReapEnded), so that the group id signalled meanwhile
  // (a sweep, a kill, the grace's SIGKILL) is still this rank's and never a process of someone else.
  if (::waitid(P_PID, static_cast<id_t>(rank.state.pid()), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
  ::close(rank.pidfd);
  rank.pidfd = -1;
  rank.state.set_running(false);
  rank.state.set_ended_unix_ms(swim::NowUnixMs());
  if (info.si_code == CLD_EXITED) {
    rank.state.set_exit_code(info.si_status);
    ++(info.si_status == 0 ? counters_.exits_ok : counters_.exits_failed);
  } else {
    rank.state.set_signal(info.si_status);
    ++counters_.exits_signal;
  }
  Changed(job);
  const bool failed = rank.state.exit_code() != 0 || rank.state.signal() != 0;
  const std::string what = "rank " + std::to_string(rank.state.rank()) + " on " + o_.node + " " + RankEnding(rank.state);
  if (failed && !rank.state.stopped()) {
    spdlog::warn("job {}: {}; stopping the job's other ranks", job.spec.id(), what);
    SignalLocked(job, SIGTERM, true, what, false);
  } else {
    spdlog::info("job {}: {}", job.spec.id(), what);
  }
}

void NodeJobs::ReapEnded(Job& job) {
  for (Rank& r : job.ranks) {
    if (r.reaped || r.state.running()) continue;
    siginfo_t info{};
    ::waitid(P_PID, static_cast<id_t>(r.state.pid()), &info, WEXITED | WNOHANG);
    r.reaped = true;
  }
}

}  // namespace dlagent::jobs
