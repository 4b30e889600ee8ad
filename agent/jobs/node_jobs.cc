#include "agent/jobs/node_jobs.h"

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "agent/jobs/rank_env.h"
#include "agent/jobs/spawn.h"
#include "agent/jobs/summary.h"
#include "bootstrap/common/log.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {
namespace {

// How long output a process that left the ranks' process groups still holds open stays read after the
// sweep's SIGKILL (which it escaped).
constexpr Duration kAbandonAfter = std::chrono::seconds(2);
// The output read and echoed in one turn of the loop, all streams together; what is left is read next turn.
constexpr size_t kTurnBytes = 4 << 20;

NodeJobsOptions Checked(NodeJobsOptions o) {
  o.max_line_bytes = std::max<size_t>(o.max_line_bytes, 1);
  o.max_bytes_per_rank = std::max(o.max_bytes_per_rank, o.max_line_bytes + NodeJobs::kLineOverhead);
  o.max_bytes = std::max(o.max_bytes, o.max_bytes_per_rank);
  return o;
}

}  // namespace

NodeJobs::NodeJobs(NodeJobsOptions options) : o_(Checked(std::move(options))) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  training_fd_ = OpenTrainingSocket(o_.training_socket);
  thread_ = std::thread([this] { Loop(); });
}

NodeJobs::~NodeJobs() {
  StopAll("agentd is stopping", std::chrono::seconds(0));
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  Wake();
  thread_.join();
  MutexLock lock(mu_);
  for (auto& [id, job] : jobs_) {
    for (Rank& r : job->ranks) {
      if (!r.reaped) {
        SignalRank(r, SIGKILL);
        int status;
        ::waitpid(r.state.pid(), &status, 0);
      }
      for (int fd : {r.pidfd, r.out.fd, r.err.fd}) {
        if (fd >= 0) ::close(fd);
      }
    }
  }
  ::close(wake_fd_);
  if (training_fd_ >= 0) ::close(training_fd_);
}

void NodeJobs::Wake() {
  uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
}

uint32_t NodeJobs::RunningRanks(const Job& job) {
  return static_cast<uint32_t>(std::count_if(job.ranks.begin(), job.ranks.end(), [](const Rank& r) { return r.state.running(); }));
}

size_t NodeJobs::RunningRanks() const {
  size_t n = 0;
  for (const auto& [id, job] : jobs_) n += RunningRanks(*job);
  return n;
}

Result<pb::PrepareReply> NodeJobs::Prepare(const pb::PrepareRequest& req) {
  const pb::JobSpec& spec = req.spec();
  if (spec.argv().empty()) return Status::InvalidArgument("jobs", "no command to run");
  const std::string dir = Workdir(spec);
  // The directory and the program, as the job's user finds them (the rank's own lookup): what that user cannot
  // reach answers as what does not exist, so that nothing of it is told.
  const std::string& program = spec.argv(0);
  std::vector<std::string> env = RankEnv(o_.base_env ? o_.base_env() : std::vector<std::string>{}, spec, pb::RankSpec(), HomeOf(spec.uid()));
  const std::vector<gid_t> groups(spec.groups().begin(), spec.groups().end());
  ASSIGN_OR_RETURN(UserLook look, LookAsUser(spec.uid(), spec.gid(), groups, dir, ProgramCandidates(program, env), std::chrono::seconds(5)));
  const std::string who = " (or user " + spec.user() + " may not " + (look.workdir ? "run it" : "enter it") + ")";
  if (!look.workdir) return Status::NotFound("jobs", "working directory " + dir + " does not exist on " + o_.node + who);
  if (!look.program) {
    return Status::NotFound("jobs", program + ": no such program on " + o_.node + who + " (PATH " + EnvValue(env, "PATH") + ")");
  }
  if (req.ports() > 256) return Status::InvalidArgument("jobs", "too many ports asked for: " + std::to_string(req.ports()));
  // Free ports: bound together (so that they differ), then released for the ranks to take.
  pb::PrepareReply reply;
  std::vector<int> fds;
  Status ports = Status::Ok();
  for (uint32_t i = 0; i < req.ports() && ports.ok(); ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      ports = Status::FromErrno("jobs", "find a free port", errno);
    } else {
      reply.add_ports(ntohs(a.sin_port));
    }
    if (fd >= 0) fds.push_back(fd);
  }
  for (int fd : fds) ::close(fd);
  RETURN_IF_ERROR(ports);
  {
    // Every node is prepared before any starts: the job lives here from now on for the other nodes' ranks
    // (whose dlps connections may come before this node's start does).
    MutexLock lock(mu_);
    const MonoTime now = std::chrono::steady_clock::now();
    std::erase_if(prepared_, [&](const auto& p) { return now - p.second.at > kPreparedFor; });
    if (prepared_.size() < kMaxPrepared) prepared_[spec.id()] = {spec.uid(), now};
  }
  return reply;
}

Result<pb::StartReply> NodeJobs::Start(const pb::StartRequest& req) {
  const pb::JobSpec& spec = req.spec();
  if (spec.id().empty()) return Status::InvalidArgument("jobs", "a job without an id");
  const std::string dir = Workdir(spec);
  const std::string home = HomeOf(spec.uid());
  const std::vector<std::string> base = o_.base_env ? o_.base_env() : std::vector<std::string>{};
  std::vector<gid_t> groups(spec.groups().begin(), spec.groups().end());
  // Made before the lock: shared storage may be slow, and the loop must go on reading output meanwhile.
  // Only a job that restarts needs one: no other job waits on shared storage to start.
  std::string checkpoints = spec.max_restarts() > 0 ? CheckpointDir(base, spec) : "";
  if (!checkpoints.empty()) {
    Result<bool> made = MakeCheckpointDir(checkpoints, spec.uid(), spec.gid());
    if (!made.ok()) {
      return Status(made.status().code(), "jobs", "the job's checkpoint directory on " + o_.node + ": " + std::string(made.status().message()));
    }
    if (!*made) checkpoints.clear();  // no shared storage there
  }

  MutexLock lock(mu_);
  if (stopping_) return Status::Unavailable("jobs", "agentd on " + o_.node + " is stopping");
  auto existing = jobs_.find(spec.id());
  // A restart (a later attempt) takes the place of an attempt that has ended here; its output stays.
  const bool restart = existing != jobs_.end() && spec.attempt() > existing->second->spec.attempt();
  if (restart && existing->second->ended == MonoTime::max()) {
    return Status::FailedPrecondition(
        "jobs", "job " + spec.id() + " still has ranks of attempt " + std::to_string(existing->second->spec.attempt()) + " on " + o_.node);
  }
  if (existing != jobs_.end() && !req.attach() && !restart) {
    return Status::AlreadyExists("jobs", "job " + spec.id() + " already has ranks on " + o_.node);
  }
  if (existing != jobs_.end() && !restart && !existing->second->failure.empty()) {
    return Status::FailedPrecondition("jobs", "job " + spec.id() + " is stopping: " + existing->second->failure);
  }
  if (RunningRanks() + static_cast<size_t>(req.ranks_size()) > o_.max_ranks) {
    return Status::ResourceExhausted("jobs", o_.node + " runs " + std::to_string(RunningRanks()) + " ranks; " + std::to_string(req.ranks_size()) +
                                                 " more would pass its limit of " + std::to_string(o_.max_ranks));
  }
  std::vector<Rank> started;
  for (const pb::RankSpec& rs : req.ranks()) {
    SpawnRequest sr;
    if (rs.argv().empty())
      sr.argv.assign(spec.argv().begin(), spec.argv().end());
    else
      sr.argv.assign(rs.argv().begin(), rs.argv().end());
    sr.env = RankEnv(base, spec, rs, home, checkpoints);
    if (training_fd_ >= 0) sr.env.push_back("DLAGENT_METRICS_SOCKET=@" + o_.training_socket);
    sr.workdir = dir;
    sr.uid = spec.uid();
    sr.gid = spec.gid();
    sr.groups = groups;
    std::string scope;
    if (o_.scopes) {
      sr.place = [&](pid_t pid) {
        Result<std::string> placed = o_.scopes->Place(pid, spec.id(), rs.rank());
        if (placed.ok()) {
          scope = *placed;
        } else {
          spdlog::warn("job {}: rank {} runs in agentd's cgroup, in its process group only: {}", spec.id(), rs.rank(), placed.status().ToString());
        }
      };
    }
    Result<Spawned> s = Spawn(sr);
    if (!s.ok()) {
      // All or none: the ranks already started go.
      for (Rank& r : started) {
        SignalRank(r, SIGKILL);
        int status;
        ::waitpid(r.state.pid(), &status, 0);
        for (int fd : {r.pidfd, r.out.fd, r.err.fd}) ::close(fd);
      }
      return Status(s.status().code(), "jobs", "rank " + std::to_string(rs.rank()) + " on " + o_.node + ": " + std::string(s.status().message()));
    }
    Rank r;
    r.state.set_rank(rs.rank());
    r.state.set_local_rank(rs.local_rank());
    r.state.set_role(rs.role());
    r.state.set_attempt(spec.attempt());
    r.state.set_pid(s->pid);
    r.state.set_running(true);
    r.state.set_started_unix_ms(swim::NowUnixMs());
    r.pidfd = s->pidfd;
    r.scope = std::move(scope);
    r.out.fd = s->out_fd;
    r.err.fd = s->err_fd;
    started.push_back(std::move(r));
  }
  counters_.ranks_started += started.size();
  Job* job;
  if (existing != jobs_.end()) {
    job = existing->second.get();
    if (job->ended != MonoTime::max()) {
      for (const Rank& r : job->ranks) finished_bytes_ -= r.held_bytes;
    }
    job->ended = MonoTime::max();
    job->abandon_at = MonoTime::max();
    job->swept = false;
    if (restart) {
      job->orphaned = MonoTime::max();
      job->spec = spec;
      job->failure.clear();
      job->killed = false;
      job->killed_ranks = 0;
      job->kill_at = MonoTime::max();
    }
  } else {
    auto fresh = std::make_unique<Job>();
    fresh->spec = spec;
    job = fresh.get();
    jobs_[spec.id()] = std::move(fresh);
    prepared_.erase(spec.id());
  }
  pb::StartReply reply;
  for (Rank& r : started) {
    *reply.add_ranks() = r.state;
    job->ranks.push_back(std::move(r));
  }
  Changed(*job);
  if (!started.empty()) {
    spdlog::info("job {} ({}): started {} rank{} on this node as uid {} in {}", spec.id(), spec.name(), started.size(),
                 started.size() == 1 ? "" : "s", spec.uid(), dir);
  }
  Wake();
  return reply;
}

bool NodeJobs::Advance(Job& job, MonoTime now) {
  bool exited = true, closed = true;
  for (const Rank& r : job.ranks) {
    exited = exited && !r.state.running();
    closed = closed && r.out.fd < 0 && r.err.fd < 0;
  }
  if (job.kill_at <= now) {
    job.kill_at = MonoTime::max();
    for (Rank& r : job.ranks) {
      if (r.state.running() || r.out.fd >= 0 || r.err.fd >= 0) {
        if (r.state.running()) spdlog::warn("job {}: rank {} still running after the grace period; SIGKILL", job.spec.id(), r.state.rank());
        SignalRank(r, SIGKILL);
      }
    }
    if (exited && !closed) job.abandon_at = std::min(job.abandon_at, now + kAbandonAfter);
  }
  if (job.ended != MonoTime::max()) return false;
  if (exited && !closed && job.abandon_at <= now) {
    // What holds the output open left the ranks' process groups (setsid) and so escaped every signal: its
    // output is no longer read, and the job ends.
    for (Rank& r : job.ranks) {
      for (Stream* s : {&r.out, &r.err}) {
        if (s->fd < 0) continue;
        spdlog::warn("job {}: a process that rank {} started outside its process group still holds its output open; no longer read", job.spec.id(),
                     r.state.rank());
        ::close(s->fd);
        s->fd = -1;
      }
    }
    closed = true;
  }
  if (exited && closed) {
    job.ended = now;
    Changed(job);
    ReapEnded(job);
    for (const Rank& r : job.ranks) finished_bytes_ += r.held_bytes;
    return true;
  }
  if (exited && !job.swept) {
    // Every rank is gone but something it started still holds its output: a job leaves nothing behind.
    job.swept = true;
    SignalLocked(job, SIGTERM, true, "", false);
  }
  return false;
}

void NodeJobs::Forget() {
  std::vector<std::pair<MonoTime, std::string>> finished;
  for (const auto& [id, job] : jobs_) {
    if (job->ended != MonoTime::max()) finished.emplace_back(job->ended, id);
  }
  if (finished.size() <= o_.keep_finished) return;
  std::sort(finished.begin(), finished.end());  // the longest ended first
  for (size_t i = 0; i + o_.keep_finished < finished.size(); ++i) {
    auto it = jobs_.find(finished[i].second);
    for (const Rank& r : it->second->ranks) {
      held_bytes_ -= r.held_bytes;
      finished_bytes_ -= r.held_bytes;
    }
    jobs_.erase(it);
  }
}

void NodeJobs::Changed(Job& job) {
  job.version = ++version_;
  job.dirty = true;
}

std::vector<pb::NodeJob> NodeJobs::TakeChanged() {
  std::vector<pb::NodeJob> out;
  for (auto& [id, job] : jobs_) {
    if (!job->dirty) continue;
    job->dirty = false;
    out.push_back(Describe(*job, false, 0, 0));
    Brief(out.back().mutable_spec());
  }
  return out;
}

void NodeJobs::Loop() {
  enum Kind { kOut, kErr, kPid, kTraining };
  struct Watch {
    std::string job;
    size_t rank;
    Kind kind;
  };
  std::vector<pollfd> fds;
  std::vector<Watch> watches;
  std::vector<Echo> echo;
  for (;;) {
    if (o_.heartbeat) o_.heartbeat->Beat();
    fds.assign(1, pollfd{wake_fd_, POLLIN, 0});
    watches.assign(1, Watch{});
    if (training_fd_ >= 0) fds.push_back({training_fd_, POLLIN, 0}), watches.push_back({"", 0, kTraining});
    int timeout_ms = 1000;
    {
      MutexLock lock(mu_);
      if (stopping_) return;
      const MonoTime now = std::chrono::steady_clock::now();
      for (auto& [id, job] : jobs_) {
        for (size_t i = 0; i < job->ranks.size(); ++i) {
          const Rank& r = job->ranks[i];
          if (r.out.fd >= 0) fds.push_back({r.out.fd, POLLIN, 0}), watches.push_back({id, i, kOut});
          if (r.err.fd >= 0) fds.push_back({r.err.fd, POLLIN, 0}), watches.push_back({id, i, kErr});
          if (r.pidfd >= 0) fds.push_back({r.pidfd, POLLIN, 0}), watches.push_back({id, i, kPid});
        }
        for (MonoTime at : {job->kill_at, job->abandon_at}) {
          if (at == MonoTime::max()) continue;
          const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at - now).count();
          timeout_ms = static_cast<int>(std::clamp<int64_t>(left + 1, 0, timeout_ms));
        }
      }
    }
    const int ready = ::poll(fds.data(), fds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) {
      spdlog::error("jobs: poll failed: {}", std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (fds[0].revents) {
      uint64_t n;
      (void)!::read(wake_fd_, &n, sizeof n);
    }
    MutexLock lock(mu_);
    // From a different stream each turn, and no more than kTurnBytes a turn: what is left is read next turn.
    const size_t n = fds.size() - 1;
    size_t read = 0;
    turn_ = n > 0 ? (turn_ + 1) % n : 0;
    for (size_t k = 0; k < n && ready > 0 && read < kTurnBytes; ++k) {
      const size_t i = 1 + (turn_ + k) % n;
      if (!fds[i].revents) continue;
      if (watches[i].kind == kTraining) {
        ReadReports();
        continue;
      }
      auto it = jobs_.find(watches[i].job);
      if (it == jobs_.end()) continue;
      Job& job = *it->second;
      Rank& rank = job.ranks[watches[i].rank];
      switch (watches[i].kind) {
        case kOut:
          if (rank.out.fd == fds[i].fd) read += Drain(job, rank, rank.out, false, echo);
          break;
        case kErr:
          if (rank.err.fd == fds[i].fd) read += Drain(job, rank, rank.err, true, echo);
          break;
        case kPid:
          if (rank.pidfd == fds[i].fd) Reap(job, rank);
          break;
        case kTraining: break;
      }
    }
    const MonoTime now = std::chrono::steady_clock::now();
    bool ended_one = false;
    for (auto& [id, job] : jobs_) ended_one = Advance(*job, now) || ended_one;
    if (ended_one) Forget();  // only when there may be one too many
    if (o_.gone && now - last_orphan_check_ >= std::chrono::seconds(1)) {
      last_orphan_check_ = now;
      StopOrphans();
    }
    std::vector<pb::NodeJob> changed;
    if (o_.report) changed = TakeChanged();
    lock.Unlock();
    if (!changed.empty()) o_.report(std::move(changed));
    for (const Echo& e : echo) {
      ScopedLogFields f({{"JOB", e.job}, {"RANK", std::to_string(e.rank)}, {"STREAM", e.stderr_stream ? "stderr" : "stdout"}});
      spdlog::info("{}", e.text);
    }
    echo.clear();
  }
}

}  // namespace dlagent::jobs
