// The coordinator's restarts (restart.h, docs/jobs.md): a failed attempt wound down and started again on the
// nodes then usable, and a job taken over from a coordinator that is gone. The watch itself is coordinator.cc's.
#include <signal.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "agent/jobs/coordinator.h"  // the class this file completes
#include "agent/jobs/launch.h"
#include "agent/jobs/restart.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

void Coordinator::Adopt(const pb::JobSpec& old) {
  MutexLock lock(mu_);
  if (stopping_ || jobs_.count(old.id()) > 0) return;
  jobs_[old.id()] = std::make_unique<Job>(
      Job{JobCore::TakeOver(CoreOptions(), old, std::chrono::steady_clock::now(), swim::NowUnixMs()), [this] { return nodes_.Roster(); }});
  spdlog::warn("job {} ({}): its coordinator {} died or left the cluster; this agent takes the job over", old.id(), old.name(), old.coordinator());
  ++counters_.takeovers;
  cv_.notify_all();
}

void Coordinator::Restart(const std::string& id) {
  pb::JobSpec spec;
  std::function<std::vector<JobNode>()> roster;
  std::vector<std::string> first_nodes;
  std::set<std::string> unusable;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !it->second->core.restarting()) return;
    spec = it->second->core.spec();
    roster = it->second->roster;
    first_nodes = it->second->core.first_nodes();
    unusable = it->second->core.unusable();
  }
  // The roster's worker nodes, then for dlps its server nodes, as the first attempt placed them.
  const Result<Launcher> launcher = ParseLauncher(spec.launcher());
  Result<std::vector<JobNode>> placed = launcher.ok() ? PlaceRoles(*launcher, roster(), false) : launcher.status();
  const RestartNodes pick = PickRestartNodes(spec, first_nodes, placed.ok() ? *placed : std::vector<JobNode>{},
                                             [&](const std::string& n) { return unusable.count(n) > 0 || nodes_.Gone(n); });
  JobActions a;
  pb::JobSpec next;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    JobCore& job = it->second->core;
    if (pick.nodes.empty()) {
      a = job.OnNoNodes(std::chrono::steady_clock::now(), pick.wait_why);
    } else {
      next = job.NextAttempt();
      ++counters_.restarts;
    }
  }
  if (pick.nodes.empty()) {
    Act(id, spec, a);
    return;
  }
  Result<std::map<std::string, pb::NodeJob>> launched = Launch(next, pick.nodes);
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    JobCore& job = it->second->core;
    const MonoTime now = std::chrono::steady_clock::now();
    a = launched.ok() ? job.OnLaunched(now, next, std::move(*launched)) : job.OnLaunchFailed(now, next.attempt(), launched.status());
    spec = job.spec();
  }
  Act(id, spec, a);
}

}  // namespace dlagent::jobs
