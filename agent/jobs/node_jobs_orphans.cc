// NodeJobs, its part for jobs whose coordinator is gone (gossip): the node that takes such a job over, and
// the ranks stopped when no one does (node_jobs.h).
#include <signal.h>

#include <spdlog/spdlog.h>

#include "agent/jobs/node_jobs.h"  // the class this file completes

namespace dlagent::jobs {

std::string NodeJobs::Adopter(const pb::JobSpec& spec) const {
  for (const std::string& n : spec.nodes()) {
    if (n != spec.coordinator() && !o_.gone(n)) return n;
  }
  return "";
}

std::vector<pb::JobSpec> NodeJobs::Orphans() const {
  std::vector<pb::JobSpec> out;
  if (!o_.gone) return out;
  MutexLock lock(mu_);
  for (const auto& [id, job] : jobs_) {
    const pb::JobSpec& s = job->spec;
    if (!job->failure.empty() || s.coordinator().empty() || s.coordinator() == o_.node || s.attempt() >= s.max_restarts()) continue;
    if (job->ended != MonoTime::max() || !o_.gone(s.coordinator()) || Adopter(s) != o_.node) continue;
    out.push_back(s);
  }
  return out;
}

void NodeJobs::StopOrphans() {
  const MonoTime now = std::chrono::steady_clock::now();
  for (auto& [id, job] : jobs_) {
    if (!job->failure.empty() || job->spec.coordinator().empty() || job->spec.coordinator() == o_.node) continue;
    bool running = false;
    for (const Rank& r : job->ranks) running = running || r.state.running();
    if (!running || !o_.gone(job->spec.coordinator())) continue;
    if (job->spec.attempt() < job->spec.max_restarts()) {
      // Another agent of the job takes it over (Orphans) and restarts it; if none has after a while, stop.
      if (job->orphaned == MonoTime::max()) job->orphaned = now;
      if (now - job->orphaned < kAdoptWait) continue;
    }
    const std::string why = "the job's coordinator " + job->spec.coordinator() + " died or left the cluster" +
                            (job->spec.attempt() < job->spec.max_restarts() ? " and no agent took the job over" : "");
    spdlog::warn("job {}: {}; stopping its ranks on this node", id, why);
    SignalLocked(*job, SIGTERM, true, why, false);
  }
}

}  // namespace dlagent::jobs
