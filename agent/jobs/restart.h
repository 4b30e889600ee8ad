#pragma once
// Restarts (agentctl run --restarts N --min-nodes M, docs/jobs.md): whether a failed attempt starts again,
// on which nodes, and what the job says meanwhile. The coordinator stops every rank of the failed attempt,
// then asks PickRestartNodes until it names enough nodes (or the wait passes) and starts the next attempt
// there with the same command and the launcher's variables recomputed.
//
// Thread safety: pure functions.

#include <functional>
#include <string>
#include <vector>

#include "agent/jobs/run_request.h"
#include "agent/jobs/summary.h"

namespace dlagent::jobs {

// The most restarts a job may ask for.
inline constexpr uint32_t kMaxRestarts = 1000;

// Whether the attempt's failure starts the job again: not a kill or a timeout (the job's own end), and
// restarts are left.
bool ShouldRestart(const pb::JobSpec& spec, const Decision& d);

struct RestartNodes {
  std::vector<JobNode> nodes;  // the next attempt's, in roster order; empty while too few
  std::string wait_why;        // "" when nodes suffice, else why not yet: "2 of the job's nodes are usable; it needs 3 (--min-nodes)"
};

// The next attempt's nodes: the roster now when the job took every node (a node that joined since is taken),
// else the job's first nodes still in the roster; those `unusable` names (gossip says dead or left, or they
// were lost to the attempt) are left out. Enough when they number spec.min_nodes() (0: as many as the
// first attempt had, first_nodes).
RestartNodes PickRestartNodes(const pb::JobSpec& spec, const std::vector<std::string>& first_nodes, const std::vector<JobNode>& roster,
                              const std::function<bool(const std::string& instance_id)>& unusable);

// A restart's record is kept with the job and travels in its spec to every node at each start, up to
// kMaxRestarts of them: its reason (a peer's error may be long) is cut to this many bytes.
inline constexpr size_t kMaxRestartReasonBytes = 512;
// The record of attempt `attempt` failing for `reason`, seen at unix_ms.
pb::JobRestart RestartRecord(uint32_t attempt, const std::string& reason, int64_t unix_ms);

// The summary of a job between attempts: "restarting", the failure that caused it and no exit code.
void MarkRestarting(pb::JobSummary& s, const std::string& reason);
// A job whose last attempt failed with no restarts left says how many times it failed.
void MarkRestartsUsedUp(pb::JobSummary& s);

}  // namespace dlagent::jobs
