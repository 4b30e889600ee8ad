// The coordinator's restarts (restart.h, docs/jobs.md): a failed attempt wound down and started again on the
// nodes then usable, and a job taken over from a coordinator that is gone. The watch itself is coordinator.cc's.
#include <signal.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "agent/jobs/coordinator.h"  // the class this file completes
#include "agent/jobs/restart.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

void Coordinator::Adopt(const pb::JobSpec& old) {
  const MonoTime now = std::chrono::steady_clock::now();
  MutexLock lock(mu_);
  if (stopping_ || jobs_.count(old.id()) > 0) return;
  auto job = std::make_unique<Job>();
  Job& j = *job;
  const std::string& gone = old.coordinator();
  j.spec = old;
  j.spec.set_coordinator(o_.self);
  j.spec.set_coordinator_addr(o_.self_addr);
  j.started = now - std::chrono::milliseconds(std::max<int64_t>(0, swim::NowUnixMs() - old.created_unix_ms()));  // for --timeout
  j.per_node = old.per_node();
  j.first_nodes.assign(old.nodes().begin(), old.nodes().end());
  j.roster = [this] { return nodes_.Roster(); };
  j.restarts.assign(old.restarts().begin(), old.restarts().end());
  for (const std::string& n : old.nodes()) j.last_answer[n] = now;
  j.lost[gone] = true;
  j.unusable.insert(gone);
  j.decision = {"the job's coordinator " + gone + " died or left the cluster", 255, false};
  if (ShouldRestart(j.spec, j.decision)) {
    j.restarting = true;
    j.restarts.push_back(RestartRecord(j.spec.attempt(), j.decision.failure));
  }
  j.stop_pending = true;
  Recompute(j);
  spdlog::warn("job {} ({}): its coordinator {} died or left the cluster; this agent takes the job over", old.id(), old.name(), gone);
  jobs_[old.id()] = std::move(job);
  ++counters_.takeovers;
  cv_.notify_all();
}

bool Coordinator::WoundDown(const Job& job) {
  for (const std::string& n : job.spec.nodes()) {
    if (auto l = job.lost.find(n); l != job.lost.end() && l->second) continue;
    auto p = job.parts.find(n);
    if (p == job.parts.end() || !p->second.ended()) return false;
  }
  return true;
}

void Coordinator::Restart(const std::string& id) {
  pb::JobSpec next;
  uint32_t per_node = 1;
  std::vector<std::string> first_nodes;
  std::function<std::vector<JobNode>()> roster;
  std::set<std::string> unusable;
  MonoTime now = std::chrono::steady_clock::now();
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !it->second->restarting) return;
    Job& job = *it->second;
    if (job.wound_down == MonoTime::max()) job.wound_down = now;
    if (now < job.next_try) return;
    next = job.spec;
    per_node = job.per_node;
    first_nodes = job.first_nodes;
    roster = job.roster;
    unusable = job.unusable;
  }
  // The roster's worker nodes, then for dlps its server nodes, as the first attempt placed them.
  const Result<Launcher> launcher = ParseLauncher(next.launcher());
  Result<std::vector<JobNode>> placed = launcher.ok() ? PlaceRoles(*launcher, roster(), false) : launcher.status();
  const RestartNodes pick = PickRestartNodes(next, first_nodes, placed.ok() ? *placed : std::vector<JobNode>{},
                                             [&](const std::string& n) { return unusable.count(n) > 0 || nodes_.Gone(n); });
  if (pick.nodes.empty()) {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !it->second->restarting) return;
    Job& job = *it->second;
    if (now - job.wound_down > o_.restart_wait) {
      job.restarting = false;
      job.decision = {"no restart after waiting " + FormatDuration(o_.restart_wait) + " for nodes: " + pick.wait_why, 255, false, true};
      Recompute(job);
    } else if (job.waiting_for != pick.wait_why) {
      job.waiting_for = pick.wait_why;
      spdlog::warn("job {}: the restart waits for nodes: {}", id, pick.wait_why);
    }
    return;
  }
  next.set_attempt(next.attempt() + 1);
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    *next.mutable_restarts() = {it->second->restarts.begin(), it->second->restarts.end()};
    ++counters_.restarts;
  }
  Result<std::map<std::string, pb::NodeJob>> launched = Launch(next, per_node, pick.nodes);
  now = std::chrono::steady_clock::now();
  Decision killed;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    Job& job = *it->second;
    if (!launched.ok()) {
      // A start that failed is an attempt that failed.
      const std::string why = "attempt " + std::to_string(next.attempt()) + " could not start: " + std::string(launched.status().message());
      spdlog::warn("job {}: {}", id, why);
      job.spec.set_attempt(next.attempt());
      job.restarts.push_back(RestartRecord(next.attempt(), why));
      if (job.restarting && !ShouldRestart(job.spec, Decision{})) {
        job.restarting = false;
        job.decision = {why, 1, false, true};
      }
      job.next_try = now + o_.restart_retry;
      Recompute(job);
      return;
    }
    if (!job.restarting) killed = job.decision;  // killed while it started: what started stops at once
    job.spec = next;
    job.parts = std::move(*launched);
    job.lost.clear();
    job.unusable.clear();
    for (const JobNode& n : pick.nodes) job.last_answer[n.instance_id] = now;
    job.decision = killed;
    job.restarting = false;
    job.wound_down = MonoTime::max();
    job.waiting_for.clear();
    job.helpers_stopped = false;
    if (!job.restarts.empty()) job.restarts.back().set_nodes(static_cast<uint32_t>(pick.nodes.size()));
    Recompute(job);
  }
  if (!killed.failure.empty()) SignalAll(next, {}, SIGTERM, killed);
}

}  // namespace dlagent::jobs
