#include "agent/jobs/coordinator.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <set>

#include <spdlog/spdlog.h>

#include "agent/jobs/launch.h"
#include "agent/jobs/rank_env.h"
#include "agent/jobs/restart.h"
#include "agent/jobs/run_request.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {
namespace {}  // namespace

std::string KillReason(int sig, const Caller& caller, const std::string& from) {
  return "killed with " + SignalName(sig) + " by uid " + std::to_string(caller.uid) + (from.empty() ? "" : " on " + from);
}

Result<pb::NodeReply> Answer(Result<pb::NodeReply> r) {
  if (!r.ok()) return r.status();
  if (!r->error().empty()) return Status(static_cast<StatusCode>(r->error_code()), "jobs", r->error());
  return r;
}

uint32_t SignalJob(JobNodes& nodes, const std::string& from, const pb::JobSpec& spec, const std::vector<std::string>& skip, int sig,
                   const std::string& reason, bool killed) {
  std::atomic<uint32_t> signalled{0};
  ForEachConcurrently(static_cast<size_t>(spec.nodes_size()), [&](size_t i) {
    const std::string& node = spec.nodes(static_cast<int>(i));
    if (std::find(skip.begin(), skip.end(), node) != skip.end()) return;
    pb::NodeRequest r;
    r.set_from(from);
    pb::SignalRequest* s = r.mutable_signal();
    s->set_job(spec.id());
    s->set_signal(sig);
    s->set_escalate(sig != SIGKILL);
    s->set_reason(reason);
    s->set_killed(killed);
    Result<pb::NodeReply> reply = Answer(nodes.Call(node, spec.node_addrs(static_cast<int>(i)), r));
    if (reply.ok())
      signalled += reply->signal().signalled();
    else if (reply.status().code() != StatusCode::kNotFound)
      spdlog::warn("job {}: cannot signal {}: {}", spec.id(), node, reply.status().ToString());
  });
  return signalled;
}

void ForEachConcurrently(size_t n, const std::function<void(size_t)>& fn, size_t max_threads) {
  if (n == 0) return;
  if (n == 1 || max_threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // A few threads take the calls in turn: never a thread per node.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> threads;
  const size_t helpers = std::min(n, max_threads) - 1;  // and this thread
  threads.reserve(helpers);
  for (size_t t = 0; t < helpers; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
}

Coordinator::Coordinator(JobNodes& nodes, CoordinatorOptions options) : nodes_(nodes), o_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

Coordinator::~Coordinator() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Result<pb::JobSummary> Coordinator::Run(const pb::RunJobRequest& req, const Caller& caller, std::function<std::vector<JobNode>()> roster) {
  ASSIGN_OR_RETURN(CheckedRun checked, CheckRunRequest(req, caller, roster(), o_.default_grace));
  pb::JobSpec& spec = checked.spec;
  spec.set_id("j-" + RandomHex(6));
  spec.set_coordinator(o_.self);
  spec.set_coordinator_addr(o_.self_addr);
  spec.set_created_unix_ms(swim::NowUnixMs());
  spec.set_per_node(req.per_node());
  ASSIGN_OR_RETURN(auto parts, Launch(spec, req.per_node(), checked.nodes));

  auto job = std::make_unique<Job>();
  job->spec = spec;
  job->started = std::chrono::steady_clock::now();
  job->per_node = req.per_node();
  job->roster = std::move(roster);
  for (const JobNode& n : checked.nodes) {
    job->first_nodes.push_back(n.instance_id);
    job->last_answer[n.instance_id] = job->started;
  }
  job->parts = std::move(parts);
  MutexLock lock(mu_);
  pb::JobSummary summary = Recompute(*job);
  jobs_[spec.id()] = std::move(job);
  cv_.notify_all();
  return summary;
}

Result<std::map<std::string, pb::NodeJob>> Coordinator::Launch(pb::JobSpec& spec, uint32_t per_node, const std::vector<JobNode>& nodes) {
  spec.clear_nodes();
  spec.clear_node_addrs();
  for (const JobNode& n : nodes) {
    spec.add_nodes(n.instance_id);
    spec.add_node_addrs(n.addr);
  }
  // PREPARE: every node checks what it can before anything starts, and finds the ports the launcher needs.
  PlanOptions po;
  ASSIGN_OR_RETURN(po.launcher, ParseLauncher(spec.launcher()));
  po.job_id = spec.id();
  po.per_node = per_node;
  po.dlps_port = o_.dlps_port;
  po.argv.assign(spec.argv().begin(), spec.argv().end());
  po.agentctl = o_.agentctl;
  po.as_root = spec.uid() == 0;
  po.attempt = spec.attempt();
  po.max_restarts = spec.max_restarts();
  if (po.launcher == Launcher::kDlps && o_.dlps_token) po.dlps_token = o_.dlps_token(spec.id());
  std::vector<PlanNode> plan_nodes(nodes.size());
  std::vector<uint32_t> ports(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    plan_nodes[i] = {nodes[i].instance_id, nodes[i].ip, nodes[i].gpus, {}, nodes[i].server};
    ASSIGN_OR_RETURN(uint32_t workers, WorkersOn(po, plan_nodes[i]));
    ports[i] = PortsNeeded(po, i, workers);
  }
  std::vector<Result<pb::NodeReply>> prepared(nodes.size(), Status::Internal("jobs", "not asked"));
  ForEachConcurrently(nodes.size(), [&](size_t i) {
    pb::NodeRequest r;
    r.set_from(o_.self);
    *r.mutable_prepare()->mutable_spec() = spec;
    r.mutable_prepare()->set_ports(ports[i]);
    prepared[i] = Answer(nodes_.Call(nodes[i].instance_id, nodes[i].addr, r));
  });
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!prepared[i].ok()) return Status(prepared[i].status().code(), "jobs", "nothing started: " + std::string(prepared[i].status().message()));
    for (uint32_t p : prepared[i]->prepare().ports()) plan_nodes[i].ports.push_back(static_cast<uint16_t>(p));
  }
  ASSIGN_OR_RETURN(std::vector<std::vector<RankPlan>> plan, PlanRanks(po, plan_nodes));
  uint32_t total = 0;
  for (const auto& node_ranks : plan) {
    for (const RankPlan& p : node_ranks) total += !p.helper;  // the job's own ranks; helpers rank after them
  }
  spec.set_num_ranks(total);

  // START, everywhere at once; all or nothing.
  std::vector<Result<pb::NodeReply>> started(nodes.size(), Status::Internal("jobs", "not asked"));
  ForEachConcurrently(nodes.size(), [&](size_t i) {
    pb::NodeRequest r;
    r.set_from(o_.self);
    pb::StartRequest* s = r.mutable_start();
    *s->mutable_spec() = spec;
    for (const RankPlan& p : plan[i]) {
      pb::RankSpec* rs = s->add_ranks();
      rs->set_rank(p.rank);
      rs->set_local_rank(p.local_rank);
      rs->set_role(p.role);
      for (const auto& [k, v] : p.env) rs->add_env(k + "=" + v);
      for (const std::string& a : p.argv) rs->add_argv(a);
    }
    started[i] = Answer(nodes_.Call(nodes[i].instance_id, nodes[i].addr, r));
  });
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (started[i].ok()) continue;
    Decision d{"could not start: " + std::string(started[i].status().message()), 1, false};
    SignalAll(spec, {}, SIGKILL, d);
    return Status(started[i].status().code(), "jobs", "nothing left running: " + std::string(started[i].status().message()));
  }
  spdlog::info("job {} ({}){}: {} ranks on {} nodes as {} with launcher {}: {}", spec.id(), spec.name(),
               spec.attempt() > 0 ? " attempt " + std::to_string(spec.attempt()) : "", total, nodes.size(), spec.user(), spec.launcher(),
               spec.argv(0));
  std::map<std::string, pb::NodeJob> parts;
  for (size_t i = 0; i < nodes.size(); ++i) {
    pb::NodeJob& part = parts[nodes[i].instance_id];
    *part.mutable_spec() = spec;
    part.set_node(nodes[i].instance_id);
    *part.mutable_ranks() = started[i]->start().ranks();
  }
  return parts;
}

pb::JobSummary Coordinator::Recompute(Job& job) {
  std::vector<NodePart> parts;
  for (const std::string& n : job.spec.nodes()) {
    auto it = job.parts.find(n);
    parts.push_back({n, it == job.parts.end() ? nullptr : &it->second, job.lost[n]});
  }
  job.summary = Summarize(job.spec, parts, job.decision);
  *job.summary.mutable_restarts() = {job.restarts.begin(), job.restarts.end()};
  if (job.restarting)
    MarkRestarting(job.summary, job.restarts.back().reason());
  else if (!job.decision.final)
    MarkRestartsUsedUp(job.summary);
  return job.summary;
}

Result<pb::JobSummary> Coordinator::Summary(const std::string& id) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + id + " coordinated by " + o_.self);
  return it->second->summary;
}

Result<pb::JobSpec> Coordinator::Spec(const std::string& id) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + id + " coordinated by " + o_.self);
  return it->second->spec;
}

std::vector<pb::JobSummary> Coordinator::List() {
  MutexLock lock(mu_);
  std::vector<pb::JobSummary> out;
  for (const auto& [id, job] : jobs_) out.push_back(job->summary);
  return out;
}

uint32_t Coordinator::SignalAll(const pb::JobSpec& spec, const std::vector<std::string>& skip, int sig, const Decision& d) {
  return SignalJob(nodes_, o_.self, spec, skip, sig, d.failure, d.killed);
}

Result<uint32_t> Coordinator::Kill(const std::string& id, int sig, const Caller& caller) {
  pb::JobSpec spec;
  Decision d;
  std::vector<std::string> lost;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + id + " coordinated by " + o_.self);
    Job& job = *it->second;
    if (caller.uid != 0 && caller.uid != job.spec.uid()) {
      return Status::PermissionDenied("jobs", "job " + id + " belongs to " + job.spec.user() + "; only they or root may kill it");
    }
    if (Terminal(job.summary)) return 0u;
    if (!job.decision.killed) {
      job.decision = {KillReason(sig, caller), 128 + sig, true};
    }
    job.restarting = false;  // a restart under way starts nothing (or stops what it started)
    d = job.decision;
    spec = job.spec;
    for (const auto& [n, gone] : job.lost) {
      if (gone) lost.push_back(n);
    }
  }
  spdlog::info("job {}: {}", id, d.failure);
  const uint32_t n = SignalAll(spec, lost, sig, d);
  cv_.notify_all();
  return n;
}

void Coordinator::Watch(const std::string& id) {
  pb::JobSpec spec;
  std::map<std::string, bool> lost;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    spec = it->second->spec;
    lost = it->second->lost;
  }
  const size_t n = static_cast<size_t>(spec.nodes_size());
  std::vector<Result<pb::NodeReply>> answers(n, Status::Internal("jobs", "not asked"));
  ForEachConcurrently(n, [&](size_t i) {
    if (lost[spec.nodes(static_cast<int>(i))]) return;
    pb::NodeRequest r;
    r.set_from(o_.self);
    r.mutable_query()->set_job(id);
    answers[i] = Answer(nodes_.Call(spec.nodes(static_cast<int>(i)), spec.node_addrs(static_cast<int>(i)), r));
  });
  std::vector<bool> gone(n);
  for (size_t i = 0; i < n; ++i) gone[i] = !answers[i].ok() && nodes_.Gone(spec.nodes(static_cast<int>(i)));

  Decision fresh;
  std::vector<std::string> skip;
  bool restart_due = false, stop_helpers = false;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    Job& job = *it->second;
    const MonoTime now = std::chrono::steady_clock::now();
    for (size_t i = 0; i < n; ++i) {
      if (!answers[i].ok() || answers[i]->query().jobs_size() != 1) continue;
      const pb::JobSpec& theirs = answers[i]->query().jobs(0).spec();
      if (theirs.coordinator() != o_.self && theirs.attempt() > spec.attempt()) {
        // Another agent took the job over while this one was cut off: it is theirs now.
        spdlog::warn("job {}: {} coordinates it now (attempt {}); this agent lets it go", id, theirs.coordinator(), theirs.attempt());
        jobs_.erase(it);
        return;
      }
    }
    if (job.stop_pending) {
      job.stop_pending = false;
      fresh = job.decision;
      for (const auto& [node, l] : job.lost) {
        if (l) skip.push_back(node);
      }
    }
    std::string lost_why;
    for (size_t i = 0; i < n; ++i) {
      const std::string& node = spec.nodes(static_cast<int>(i));
      if (job.lost[node]) continue;
      if (answers[i].ok() && answers[i]->query().jobs_size() == 1) {
        job.parts[node] = answers[i]->query().jobs(0);
        job.last_answer[node] = now;
        continue;
      }
      std::string why;
      if (gone[i])
        why = "node " + node + " died or left the cluster", job.unusable.insert(node);
      else if (!answers[i].ok() && answers[i].status().code() == StatusCode::kNotFound)
        why = "node " + node + " no longer knows the job (its agent restarted)";
      else if (now - job.last_answer[node] > o_.unreachable_after) {
        why = "node " + node + " did not answer for " + FormatDuration(o_.unreachable_after) + " (" + answers[i].status().ToString() + ")";
        job.unusable.insert(node);
      }
      if (!why.empty()) {
        job.lost[node] = true;
        if (lost_why.empty()) lost_why = why;
      }
    }
    if (job.decision.failure.empty()) {
      std::string part_failure;
      bool part_killed = false;
      for (const auto& [node, part] : job.parts) {
        if (!part.failure().empty() && part_failure.empty()) part_failure = part.failure(), part_killed = part.killed();
      }
      if (!part_failure.empty()) {
        job.decision = {part_failure, 0, part_killed};
      } else if (!lost_why.empty()) {
        job.decision = {lost_why, 255, false};
      } else if (spec.timeout_ms() > 0 && now - job.started > std::chrono::milliseconds(spec.timeout_ms())) {
        job.decision = {"timed out after " + FormatDuration(std::chrono::milliseconds(spec.timeout_ms())), 124, false, true};
      }
      if (!job.decision.failure.empty()) {
        fresh = job.decision;
        for (const auto& [node, l] : job.lost) {
          if (l) skip.push_back(node);
        }
        if (ShouldRestart(spec, job.decision)) {
          job.restarting = true;
          job.restarts.push_back(RestartRecord(spec.attempt(), job.decision.failure));
        }
      }
    }
    if (job.decision.failure.empty() && !job.helpers_stopped && OnlyHelpersRun(job)) {
      job.helpers_stopped = stop_helpers = true;
      for (const auto& [node, l] : job.lost) {
        if (l) skip.push_back(node);
      }
    }
    Recompute(job);
    restart_due = job.restarting && WoundDown(job);
    if (Terminal(job.summary) && !job.logged_end) {
      job.logged_end = true;
      if (job.summary.state() == "succeeded")
        spdlog::info("job {} ({}) succeeded", id, spec.name());
      else
        spdlog::warn("job {} ({}) {}: {} (exit {})", id, spec.name(), job.summary.state(), job.summary.failure(), job.summary.exit_code());
    }
  }
  if (!fresh.failure.empty()) {
    if (ShouldRestart(spec, fresh))
      spdlog::warn("job {}: {}; stopping every rank to start again (restart {} of {})", id, fresh.failure, spec.attempt() + 1, spec.max_restarts());
    else
      spdlog::warn("job {}: {}; stopping every rank", id, fresh.failure);
    SignalAll(spec, skip, SIGTERM, fresh);
  }
  if (stop_helpers) {
    spdlog::info("job {}: every rank has ended; stopping the processes its launcher added", id);
    SignalAll(spec, skip, SIGTERM, Decision{});
  }
  if (restart_due) Restart(id);
}

bool Coordinator::OnlyHelpersRun(const Job& job) {
  uint32_t own_ended = 0, helpers = 0;
  for (const auto& [node, part] : job.parts) {
    if (auto l = job.lost.find(node); l != job.lost.end() && l->second) continue;
    for (const pb::RankState& r : part.ranks()) {
      if (r.attempt() != job.spec.attempt()) continue;
      if (r.rank() >= job.spec.num_ranks())
        helpers += r.running();
      else if (r.running())
        return false;
      else
        ++own_ended;
    }
  }
  return own_ended == job.spec.num_ranks() && helpers > 0;
}

void Coordinator::Loop() {
  for (;;) {
    if (o_.heartbeat) o_.heartbeat->Beat();
    for (const pb::JobSpec& orphan : nodes_.Orphans()) Adopt(orphan);
    std::vector<std::string> active;
    {
      MutexLock lock(mu_);
      if (stopping_) return;
      for (const auto& [id, job] : jobs_) {
        if (!Terminal(job->summary)) active.push_back(id);
      }
      // Forget the oldest finished jobs past keep_finished.
      std::vector<std::pair<int64_t, std::string>> finished;
      for (const auto& [id, job] : jobs_) {
        if (Terminal(job->summary)) finished.emplace_back(job->summary.ended_unix_ms(), id);
      }
      std::sort(finished.begin(), finished.end());
      for (size_t i = 0; i + o_.keep_finished < finished.size(); ++i) jobs_.erase(finished[i].second);
    }
    for (const std::string& id : active) Watch(id);
    MutexLock lock(mu_);
    if (stopping_) return;
    cv_.wait_for(lock.native(),
                 active.empty() ? std::chrono::milliseconds(1000) : std::chrono::duration_cast<std::chrono::milliseconds>(o_.poll_interval));
  }
}

}  // namespace dlagent::jobs
