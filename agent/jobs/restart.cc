#include "agent/jobs/restart.h"

#include <algorithm>

namespace dlagent::jobs {

bool ShouldRestart(const pb::JobSpec& spec, const Decision& d) { return !d.killed && !d.final && spec.attempt() < spec.max_restarts(); }

RestartNodes PickRestartNodes(const pb::JobSpec& spec, const std::vector<std::string>& first_nodes, const std::vector<JobNode>& roster,
                              const std::function<bool(const std::string&)>& unusable) {
  RestartNodes out;
  for (const JobNode& n : roster) {
    const bool of_job = spec.every_node() || std::find(first_nodes.begin(), first_nodes.end(), n.instance_id) != first_nodes.end();
    if (of_job && !unusable(n.instance_id)) out.nodes.push_back(n);
  }
  const size_t need = spec.min_nodes() > 0 ? spec.min_nodes() : first_nodes.size();
  if (out.nodes.size() < std::max<size_t>(need, 1)) {
    out.wait_why = std::to_string(out.nodes.size()) + " of the job's nodes " + (out.nodes.size() == 1 ? "is" : "are") + " usable; it needs " +
                   std::to_string(need) + (spec.min_nodes() > 0 ? " (--min-nodes)" : " (as many as it started on; --min-nodes allows fewer)");
    out.nodes.clear();
  }
  return out;
}

pb::JobRestart RestartRecord(uint32_t attempt, const std::string& reason, int64_t unix_ms) {
  pb::JobRestart r;
  r.set_attempt(attempt);
  r.set_reason(reason.size() > kMaxRestartReasonBytes ? reason.substr(0, kMaxRestartReasonBytes - 3) + "..." : reason);
  r.set_unix_ms(unix_ms);
  return r;
}

void MarkRestarting(pb::JobSummary& s, const std::string& reason) {
  s.set_state(pb::JOB_STATE_RESTARTING);
  s.set_failure(reason);
  s.set_exit_code(0);
  s.set_ended_unix_ms(0);
}

void MarkRestartsUsedUp(pb::JobSummary& s) {
  if (s.state() != pb::JOB_STATE_FAILED || s.max_restarts() == 0 || s.attempt() < s.max_restarts()) return;
  s.set_failure(s.failure() + "; it failed " + std::to_string(s.attempt() + 1) + " times, with every restart used (--restarts " +
                std::to_string(s.max_restarts()) + ")");
}

}  // namespace dlagent::jobs
