#pragma once
// What a job's state is, from its nodes' parts: one function, so that the coordinator, `agentctl jobs` on any
// node and a foreground run say the same thing.
//
// Thread safety: pure functions.

#include <string>
#include <string_view>
#include <vector>

#include "bootstrap/common/status.h"
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
// decision's (255 for a lost node, 124 for a timeout). A final decision (the timeout, a restart given up) names
// the job's end even when a rank of the attempt failed before it.
pb::JobSummary Summarize(const pb::JobSpec& spec, const std::vector<NodePart>& parts, const Decision& decision);

bool Terminal(pb::JobState s);
inline bool Terminal(const pb::JobSummary& s) { return Terminal(s.state()); }
// "running", "stopping", "restarting", "succeeded", "failed", "killed" ("unknown" for none): the word agentctl,
// --json, the status page and /metrics show.
std::string_view JobStateName(pb::JobState s);

// How an ended rank ended: "exited with 3", "was killed by SIGKILL".
std::string RankEnding(const pb::RankState& r);

// Job lists carry a job's command shortened to this many bytes, and no environment, so that a list of many
// jobs with long commands (kMaxCommandBytes each) stays within a reply's size.
inline constexpr size_t kListArgvBytes = 1024;
// Shortens argv to kListArgvBytes in all (whole arguments while they fit, then part of the next one) and
// sets argv_cut when anything was left out; a spec also loses its environment.
void Brief(pb::JobSpec* spec);
void Brief(pb::JobSummary* summary);

// A page of `all` (sorted by ListOrder): the jobs after the cursor `after` ("" : from the first), at most
// `limit` of them (0: 100, at most 1,000) and about kListPageBytes, with the next page's cursor in `next`.
// InvalidArgument when `after` is not a cursor this function gave.
inline constexpr size_t kListPageBytes = 1 << 20;
bool ListOrder(const pb::JobSummary& a, const pb::JobSummary& b);
Result<pb::JobList> ListPage(pb::JobList all, const std::string& after, uint32_t limit);

}  // namespace dlagent::jobs
