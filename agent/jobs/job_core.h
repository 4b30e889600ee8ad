#pragma once
// JobCore: the decisions of one job's coordinator (docs/jobs.md, "When a job ends" and "Restarts") as a pure
// state machine, as FormationCore is for the formation. Its inputs are a round of answers from the job's
// nodes (OnAnswers), a kill (OnKill) and what came of starting the next attempt (OnNoNodes, OnLaunched,
// OnLaunchFailed), each with the time; its outputs are each call's actions (JobActions) and the job's
// summary. It owns no thread, socket or clock: Coordinator drives it, and tests and the job simulator
// (tests/sim/job_sim.h) drive it on a virtual clock.
//
// The driver feeds it three ways: the nodes push their parts when they change (OnPart), time passes with the
// gossip view (OnTick: nodes gone, the timeout, a restart's next try), and a slow round asks every node not
// lost for its part (OnAnswers), which also finds a node whose agent restarted or that stopped answering.
//
// A job's life:
//   - running: every rank of the attempt was started (all or nothing, by the driver);
//   - a decision: a rank failed (its node's part says so), a node was lost (gossip calls it dead or gone, its
//     agent no longer knows the job, or it answered nothing for unreachable_after), the timeout passed, or a
//     kill. Every other rank is then stopped (JobActions::signal, which the driver escalates to SIGKILL after
//     the job's grace), and the job is stopping until every rank has ended;
//   - with restarts left (ShouldRestart) the decision makes it restarting instead. Once every rank of the
//     failed attempt has ended and its output been read (lost nodes aside), each round asks the driver to
//     pick the next attempt's nodes (JobActions::pick_nodes). The next attempt runs on them (OnLaunched), or
//     the job fails once restart_wait has passed without enough of them (OnNoNodes). A start that fails is
//     an attempt that failed (OnLaunchFailed), retried after restart_retry.
//   - a job taken over from a lost coordinator (TakeOver) starts with that node lost and a decision made: its
//     first round stops every rank, and it restarts without that node when it has restarts left;
//   - a node's part of a later attempt under another coordinator means that agent took the job over while
//     this one was cut off: the job is let go (JobActions::let_go).
//
// Thread safety: none; the driver serialises every call. Calls may interleave as the driver's I/O does: a
// kill may arrive between NextAttempt and OnLaunched (what started is then stopped at once).

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/jobs/summary.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/status.h"

namespace dlagent::jobs {

struct JobCoreOptions {
  std::string self;                                       // REQUIRED: this node's instance id
  std::string self_addr;                                  // REQUIRED: this agent's cluster service, ip:port (a job taken over names it)
  Duration unreachable_after = std::chrono::seconds(10);  // a node that answers nothing this long is lost
  Duration restart_wait = std::chrono::minutes(5);        // a restart waits this long for enough nodes
  Duration restart_retry = std::chrono::seconds(1);       // between a start that failed and the next try
};

// One node's answer to a round: its part of the job, or why none (NotFound: its agent does not know the job;
// another error: the call failed), and whether gossip says the node died or left (asked when it failed).
struct NodeAnswer {
  Result<pb::NodeJob> part = Status::Internal("jobs", "not asked");
  bool gone = false;
};

struct JobLogLine {
  bool warning = false;
  std::string text;
};

// What the driver does after a call. Every field is a request; none has been done.
struct JobActions {
  // Send `sig` to the ranks on every node of spec() but `skip` (the lost), escalating to SIGKILL after the
  // job's grace unless sig is SIGKILL, with this decision as the job's failure on the nodes (none: only the
  // processes the launcher added are stopped, every rank of the job's own having ended).
  std::optional<Decision> signal;
  int sig = 0;
  std::vector<std::string> skip;
  // The next attempt is due: pick its nodes (PickRestartNodes, leaving out unusable()), then OnNoNodes, or
  // NextAttempt, start it, and OnLaunched or OnLaunchFailed.
  bool pick_nodes = false;
  bool let_go = false;  // another agent coordinates the job now: forget it
  std::vector<JobLogLine> log;
};

class JobCore {
 public:
  // A job whose first attempt started at `now`: spec as the driver started it (nodes, ranks, coordinator),
  // parts as the nodes answered the start.
  JobCore(JobCoreOptions o, pb::JobSpec spec, std::map<std::string, pb::NodeJob> parts, MonoTime now, int64_t now_unix_ms);
  // A job whose coordinator is gone, from the spec a node of the job holds: this agent coordinates it now.
  static JobCore TakeOver(JobCoreOptions o, const pb::JobSpec& old, MonoTime now, int64_t now_unix_ms);

  // The nodes to ask this round: indices in spec().nodes() of those not lost.
  std::vector<size_t> ToAsk() const;
  // A round's answers, by index in spec().nodes() (those not asked are ignored).
  JobActions OnAnswers(MonoTime now, const std::vector<NodeAnswer>& answers);
  // A node pushed its part (it changed there). Ignored from a node not of the attempt, or lost.
  JobActions OnPart(MonoTime now, const std::string& node, const pb::NodeJob& part);
  // Time passed: `gone` names the nodes gossip calls dead or left now (any of the job's may be named); the
  // timeout and a restart's next try are checked.
  JobActions OnTick(MonoTime now, const std::vector<std::string>& gone);
  // Someone stops the job on purpose: d is its decision (KillReason, 128 + sig, killed) unless a kill came
  // first; a restart under way starts nothing. No signal for a job that has ended.
  JobActions OnKill(MonoTime now, const Decision& d, int sig);

  // Restarts, after pick_nodes. Too few nodes: the job waits, and fails past restart_wait.
  JobActions OnNoNodes(MonoTime now, const std::string& wait_why);
  // The spec of the next attempt to start (attempt + 1, the restarts so far).
  pb::JobSpec NextAttempt() const;
  // The driver started `next` (NextAttempt with its nodes and ranks filled in): its nodes' parts.
  JobActions OnLaunched(MonoTime now, pb::JobSpec next, std::map<std::string, pb::NodeJob> parts);
  JobActions OnLaunchFailed(MonoTime now, uint32_t attempt, const Status& why);

  const pb::JobSpec& spec() const { return spec_; }
  // Worked out over every node when asked after a change (calls that change a part cost O(1) in the summary).
  const pb::JobSummary& summary() const;
  bool restarting() const { return restarting_; }
  // Nodes lost as dead, gone or silent during this attempt: no place for the next one.
  const std::set<std::string>& unusable() const { return unusable_; }
  // The first attempt's nodes (a job given --nodes restarts on those).
  const std::vector<std::string>& first_nodes() const { return first_nodes_; }

 private:
  JobCore(JobCoreOptions o, pb::JobSpec spec, MonoTime now, int64_t now_unix_ms);
  int64_t UnixMs(MonoTime now) const;
  std::vector<std::string> Lost() const;
  // A part of a later attempt under another coordinator: out lets the job go.
  bool Takeover(const pb::NodeJob& part, JobActions& out) const;
  // A node's answer (or a push) taken in: its part, or the node lost (lost_why says why, for the first).
  void Absorb(MonoTime now, const std::string& node, const NodeAnswer& a, std::string& lost_why);
  // The decision the parts, a lost node or the timeout call for, and what follows from it.
  void Decide(MonoTime now, const std::string& lost_why, JobActions& out);
  // Every rank but the lost nodes' is to stop for decision_ (restarting it when restarts are left).
  void Stop(JobActions& out, const Decision& d, int sig) const;
  // Whether every rank of the attempt has ended and its output been read (lost nodes aside).
  bool WoundDown() const;
  // Whether every rank of the job's own has ended and only processes its launcher added run.
  bool OnlyHelpersRun() const;
  // Whether a rank (its own or a helper) of the attempt runs on a node not lost: the job has not ended.
  bool AnyRunning() const;

  JobCoreOptions o_;
  pb::JobSpec spec_;  // the attempt's
  MonoTime mono_at_;  // with unix_at_, the wall clock of the driver's times (restart records)
  int64_t unix_at_ = 0;
  MonoTime started_;  // the job's first start (--timeout)
  std::vector<std::string> first_nodes_;
  Decision decision_;
  std::map<std::string, pb::NodeJob> parts_;  // by instance id: the latest answer
  std::map<std::string, MonoTime> last_answer_;
  std::set<std::string> lost_;
  std::set<std::string> unusable_;
  std::vector<pb::JobRestart> restarts_;
  mutable pb::JobSummary summary_;
  mutable bool summary_stale_ = true;
  bool logged_end_ = false;
  bool restarting_ = false;                // the attempt failed and the next one is due
  MonoTime wound_down_ = MonoTime::max();  // when every rank of the failed attempt had ended
  MonoTime next_try_{};                    // the earliest time for the next attempt's start
  std::string waiting_for_;                // why the restart waits, as last logged
  bool helpers_stopped_ = false;
  bool stop_pending_ = false;  // taken over: the first round stops every rank
};

}  // namespace dlagent::jobs
