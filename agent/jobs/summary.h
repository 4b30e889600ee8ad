#pragma once
// What a job's state is, from its nodes' parts: one function, so that the coordinator, `agentctl jobs` on any
// node and a foreground run say the same thing.
//
// Thread safety: pure functions.

#include <string>
#include <vector>

#include "proto/jobs.pb.h"

namespace dlagent::jobs {

namespace pb = ::dlagent::jobs::v1;

// The coordinator's decision to stop the job, when it made one: a rank failed, a node was lost, the timeout
// passed, or someone killed it.
struct Decision {
  std::string failure;  // "" : none
  int exit_code = 0;    // the job's exit code when no rank's failure gives one
  bool killed = false;
  bool final = false;  // the job's own end (a timeout): no restart follows
};

struct NodePart {
  std::string node;
  const pb::NodeJob* job = nullptr;  // null: no answer
  bool lost = false;                 // the node died or left: its ranks count as ended
};

// state: running (no decision yet), stopping (a decision, ranks still running), succeeded, failed, killed.
// exit_code: 0, the first failed rank's code (128 + signal for a signal), 128 + signal for a kill, or the
// decision's (255 for a lost node, 124 for a timeout).
pb::JobSummary Summarize(const pb::JobSpec& spec, const std::vector<NodePart>& parts, const Decision& decision);

bool Terminal(const pb::JobSummary& s);

// How an ended rank ended: "exited with 3", "was killed by SIGKILL".
std::string RankEnding(const pb::RankState& r);

}  // namespace dlagent::jobs
