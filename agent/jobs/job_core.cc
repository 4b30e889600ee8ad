#include "agent/jobs/job_core.h"

#include <signal.h>

#include <algorithm>

#include "agent/jobs/restart.h"
#include "bootstrap/common/duration.h"

namespace dlagent::jobs {

JobCore::JobCore(JobCoreOptions o, pb::JobSpec spec, MonoTime now, int64_t now_unix_ms)
    : o_(std::move(o)), spec_(std::move(spec)), mono_at_(now), unix_at_(now_unix_ms), started_(now) {
  first_nodes_.assign(spec_.nodes().begin(), spec_.nodes().end());
  for (const std::string& n : first_nodes_) last_answer_[n] = now;
}

JobCore::JobCore(JobCoreOptions o, pb::JobSpec spec, std::map<std::string, pb::NodeJob> parts, MonoTime now, int64_t now_unix_ms)
    : JobCore(std::move(o), std::move(spec), now, now_unix_ms) {
  parts_ = std::move(parts);
  summary_stale_ = true;
}

JobCore JobCore::TakeOver(JobCoreOptions o, const pb::JobSpec& old, MonoTime now, int64_t now_unix_ms) {
  pb::JobSpec spec = old;
  spec.set_coordinator(o.self);
  spec.set_coordinator_addr(o.self_addr);
  JobCore j(std::move(o), std::move(spec), now, now_unix_ms);
  j.started_ = now - std::chrono::milliseconds(std::max<int64_t>(0, now_unix_ms - old.created_unix_ms()));  // for --timeout
  j.restarts_.assign(old.restarts().begin(), old.restarts().end());
  const std::string& gone = old.coordinator();
  j.lost_.insert(gone);
  j.unusable_.insert(gone);
  j.decision_ = {"the job's coordinator " + gone + " died or left the cluster", 255, false};
  if (ShouldRestart(j.spec_, j.decision_)) {
    j.restarting_ = true;
    j.restarts_.push_back(RestartRecord(j.spec_.attempt(), j.decision_.failure, now_unix_ms));
  }
  j.stop_pending_ = true;
  j.summary_stale_ = true;
  return j;
}

int64_t JobCore::UnixMs(MonoTime now) const { return unix_at_ + std::chrono::duration_cast<std::chrono::milliseconds>(now - mono_at_).count(); }

std::vector<size_t> JobCore::ToAsk() const {
  std::vector<size_t> out;
  for (int i = 0; i < spec_.nodes_size(); ++i) {
    if (lost_.count(spec_.nodes(i)) == 0) out.push_back(static_cast<size_t>(i));
  }
  return out;
}

std::vector<std::string> JobCore::Lost() const { return {lost_.begin(), lost_.end()}; }

void JobCore::Stop(JobActions& out, const Decision& d, int sig) const {
  out.signal = d;
  out.sig = sig;
  out.skip = Lost();
}

bool JobCore::Takeover(const pb::NodeJob& part, JobActions& out) const {
  const pb::JobSpec& theirs = part.spec();
  if (theirs.coordinator() == o_.self || theirs.attempt() <= spec_.attempt()) return false;
  // Another agent took the job over while this one was cut off: it is theirs now.
  out.let_go = true;
  out.log.push_back({true, "job " + spec_.id() + ": " + theirs.coordinator() + " coordinates it now (attempt " + std::to_string(theirs.attempt()) +
                               "); this agent lets it go"});
  return true;
}

void JobCore::Absorb(MonoTime now, const std::string& node, const NodeAnswer& a, std::string& lost_why) {
  if (lost_.count(node) > 0) return;
  if (a.part.ok()) {
    last_answer_[node] = now;
    if (a.part->leaving()) unusable_.insert(node);  // its agent is stopping: not for the next attempt
    // A push may arrive late: a part of an earlier attempt, or older than the one held, is not taken.
    auto it = parts_.find(node);
    if (a.part->spec().attempt() < spec_.attempt()) return;
    if (it != parts_.end() && a.part->spec().attempt() == it->second.spec().attempt() && a.part->version() < it->second.version()) return;
    parts_[node] = *a.part;
    return;
  }
  std::string why;
  if (a.gone) {
    why = "node " + node + " died or left the cluster";
    unusable_.insert(node);
  } else if (a.part.status().code() == StatusCode::kNotFound) {
    why = "node " + node + " no longer knows the job (its agent restarted)";
  } else if (now - last_answer_[node] > o_.unreachable_after) {
    why = "node " + node + " did not answer for " + FormatDuration(o_.unreachable_after) + " (" + a.part.status().ToString() + ")";
    unusable_.insert(node);
  }
  if (!why.empty()) {
    lost_.insert(node);
    if (lost_why.empty()) lost_why = why;
  }
}

JobActions JobCore::OnAnswers(MonoTime now, const std::vector<NodeAnswer>& answers) {
  JobActions out;
  const size_t n = std::min(answers.size(), static_cast<size_t>(spec_.nodes_size()));
  for (size_t i = 0; i < n; ++i) {
    if (answers[i].part.ok() && Takeover(*answers[i].part, out)) return out;
  }
  std::string lost_why;
  for (size_t i = 0; i < n; ++i) Absorb(now, spec_.nodes(static_cast<int>(i)), answers[i], lost_why);
  Decide(now, lost_why, out);
  return out;
}

JobActions JobCore::OnPart(MonoTime now, const std::string& node, const pb::NodeJob& part) {
  JobActions out;
  if (std::find(spec_.nodes().begin(), spec_.nodes().end(), node) == spec_.nodes().end() || part.node() != node) return out;
  if (Takeover(part, out)) return out;
  std::string lost_why;
  Absorb(now, node, NodeAnswer{part, false}, lost_why);
  Decide(now, lost_why, out);
  return out;
}

JobActions JobCore::OnTick(MonoTime now, const std::vector<std::string>& gone) {
  JobActions out;
  std::string lost_why;
  for (const std::string& node : gone) {
    if (std::find(spec_.nodes().begin(), spec_.nodes().end(), node) == spec_.nodes().end()) continue;
    NodeAnswer a;
    a.part = Status::Unavailable("jobs", "gone");
    a.gone = true;
    Absorb(now, node, a, lost_why);
  }
  Decide(now, lost_why, out);
  return out;
}

void JobCore::Decide(MonoTime now, const std::string& lost_why, JobActions& out) {
  bool fresh = stop_pending_;
  stop_pending_ = false;
  if (decision_.failure.empty()) {
    std::string part_failure;
    bool part_killed = false;
    for (const auto& [node, part] : parts_) {
      if (!part.failure().empty() && part_failure.empty() && part.spec().attempt() == spec_.attempt()) {
        part_failure = part.failure(), part_killed = part.killed();
      }
    }
    if (!part_failure.empty()) {
      decision_ = {part_failure, 0, part_killed};
    } else if (!lost_why.empty()) {
      decision_ = {lost_why, 255, false};
    } else if (spec_.timeout_ms() > 0 && now - started_ > std::chrono::milliseconds(spec_.timeout_ms())) {
      decision_ = {"timed out after " + FormatDuration(std::chrono::milliseconds(spec_.timeout_ms())), 124, false, true};
    }
    if (!decision_.failure.empty()) {
      fresh = true;
      if (ShouldRestart(spec_, decision_)) {
        restarting_ = true;
        restarts_.push_back(RestartRecord(spec_.attempt(), decision_.failure, UnixMs(now)));
      }
    }
  }
  if (fresh) {
    Stop(out, decision_, SIGTERM);
    out.log.push_back({true, "job " + spec_.id() + ": " + decision_.failure +
                                 (restarting_ ? "; stopping every rank to start again (restart " + std::to_string(spec_.attempt() + 1) + " of " +
                                                    std::to_string(spec_.max_restarts()) + ")"
                                              : "; stopping every rank")});
  } else if (decision_.failure.empty() && !helpers_stopped_ && OnlyHelpersRun()) {
    helpers_stopped_ = true;
    Stop(out, Decision{}, SIGTERM);
    out.log.push_back({false, "job " + spec_.id() + ": every rank has ended; stopping the processes its launcher added"});
  }
  summary_stale_ = true;
  if (restarting_ && WoundDown()) {
    if (wound_down_ == MonoTime::max()) wound_down_ = now;
    out.pick_nodes = now >= next_try_;
  }
  if (!logged_end_ && !AnyRunning() && Terminal(summary())) {
    logged_end_ = true;
    const std::string job = "job " + spec_.id() + " (" + spec_.name() + ") ";
    if (summary_.state() == pb::JOB_STATE_SUCCEEDED)
      out.log.push_back({false, job + "succeeded"});
    else
      out.log.push_back({true, job + std::string(JobStateName(summary_.state())) + ": " + summary_.failure() + " (exit " +
                                   std::to_string(summary_.exit_code()) + ")"});
  }
}

JobActions JobCore::OnKill(MonoTime, const Decision& d, int sig) {
  JobActions out;
  if (Terminal(summary())) return out;
  if (!decision_.killed) decision_ = d;
  restarting_ = false;  // a restart under way starts nothing (or stops what it started)
  Stop(out, decision_, sig);
  out.log.push_back({false, "job " + spec_.id() + ": " + decision_.failure});
  summary_stale_ = true;
  return out;
}

JobActions JobCore::OnNoNodes(MonoTime now, const std::string& wait_why) {
  JobActions out;
  if (!restarting_) return out;
  if (now - wound_down_ > o_.restart_wait) {
    restarting_ = false;
    decision_ = {"no restart after waiting " + FormatDuration(o_.restart_wait) + " for nodes: " + wait_why, 255, false, true};
    summary_stale_ = true;
  } else if (waiting_for_ != wait_why) {
    waiting_for_ = wait_why;
    out.log.push_back({true, "job " + spec_.id() + ": the restart waits for nodes: " + wait_why});
  }
  return out;
}

pb::JobSpec JobCore::NextAttempt() const {
  pb::JobSpec next = spec_;
  next.set_attempt(spec_.attempt() + 1);
  *next.mutable_restarts() = {restarts_.begin(), restarts_.end()};
  return next;
}

JobActions JobCore::OnLaunched(MonoTime now, pb::JobSpec next, std::map<std::string, pb::NodeJob> parts) {
  JobActions out;
  Decision killed;
  if (!restarting_) killed = decision_;  // killed while it started: what started stops at once
  for (auto& [node, part] : parts) {
    // A node's push may overtake the start's answer: what it pushed of this attempt is newer.
    auto held = parts_.find(node);
    if (held != parts_.end() && held->second.spec().attempt() == next.attempt() && held->second.version() >= part.version()) part = held->second;
  }
  spec_ = std::move(next);
  parts_ = std::move(parts);
  lost_.clear();
  unusable_.clear();
  for (const std::string& n : spec_.nodes()) last_answer_[n] = now;
  decision_ = killed;
  restarting_ = false;
  wound_down_ = MonoTime::max();
  waiting_for_.clear();
  helpers_stopped_ = false;
  if (!restarts_.empty()) restarts_.back().set_nodes(static_cast<uint32_t>(spec_.nodes_size()));
  summary_stale_ = true;
  if (!killed.failure.empty()) Stop(out, killed, SIGTERM);
  return out;
}

JobActions JobCore::OnLaunchFailed(MonoTime now, uint32_t attempt, const Status& status) {
  // A start that failed is an attempt that failed.
  JobActions out;
  const std::string why = "attempt " + std::to_string(attempt) + " could not start: " + std::string(status.message());
  out.log.push_back({true, "job " + spec_.id() + ": " + why});
  spec_.set_attempt(attempt);
  restarts_.push_back(RestartRecord(attempt, why, UnixMs(now)));
  if (restarting_ && !ShouldRestart(spec_, Decision{})) {
    restarting_ = false;
    decision_ = {why, 1, false, true};
  }
  next_try_ = now + o_.restart_retry;
  summary_stale_ = true;
  return out;
}

bool JobCore::WoundDown() const {
  for (const std::string& n : spec_.nodes()) {
    if (lost_.count(n) > 0) continue;
    auto p = parts_.find(n);
    if (p == parts_.end() || !p->second.ended()) return false;
  }
  return true;
}

bool JobCore::OnlyHelpersRun() const {
  uint32_t own_ended = 0, helpers = 0;
  for (const auto& [node, part] : parts_) {
    if (lost_.count(node) > 0) continue;
    for (const pb::RankState& r : part.ranks()) {
      if (r.attempt() != spec_.attempt()) continue;
      if (r.rank() >= spec_.num_ranks())
        helpers += r.running();
      else if (r.running())
        return false;
      else
        ++own_ended;
    }
  }
  return own_ended == spec_.num_ranks() && helpers > 0;
}

bool JobCore::AnyRunning() const {
  for (const auto& [node, part] : parts_) {
    if (lost_.count(node) > 0) continue;
    for (const pb::RankState& r : part.ranks()) {
      if (r.running() && r.attempt() == spec_.attempt()) return true;
    }
  }
  return false;
}

const pb::JobSummary& JobCore::summary() const {
  if (!summary_stale_) return summary_;
  summary_stale_ = false;
  std::vector<NodePart> parts;
  for (const std::string& n : spec_.nodes()) {
    auto it = parts_.find(n);
    parts.push_back({n, it == parts_.end() ? nullptr : &it->second, lost_.count(n) > 0});
  }
  summary_ = Summarize(spec_, parts, decision_);
  *summary_.mutable_restarts() = {restarts_.begin(), restarts_.end()};
  if (restarting_)
    MarkRestarting(summary_, restarts_.back().reason());
  else if (!decision_.final)
    MarkRestartsUsedUp(summary_);
  return summary_;
}

}  // namespace dlagent::jobs
