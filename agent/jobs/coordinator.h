#pragma once
// Coordinator: drives the jobs started from this node (and those it took over). Run() checks the job on every
// node it will run on (working directory, program, free ports), plans its ranks (launch.h) and starts them
// everywhere, all or nothing. What it then learns of each job's nodes goes to the job's JobCore
// (job_core.h), which decides: when a rank fails, a node dies or leaves
// (gossip) or stops answering, or the timeout passes, every other rank gets SIGTERM, then SIGKILL after the
// grace period, and the job's summary names the cause. Kill() does the same on purpose. A job with restarts
// left (restart.h) starts again instead, once every rank of the failed attempt has ended and enough nodes are
// usable. This class holds the I/O (calls to nodes, the roster, the log); the decisions are the core's.
//
// How it learns: each node pushes its part of a job when it changes (Reporter -> Report), gossip says which
// nodes are gone (checked every tick_interval, no calls), and a slow round asks every node every
// round_interval.
//
// Threading: one thread of its own acts on what pushes called for, ticks and rounds the jobs (and beats its
// heartbeat) and starts their restarts; every method may be called from any thread. Run and Kill block on
// calls to other nodes, each with a deadline; so does a restart, and the other jobs wait meanwhile.

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/jobs/job_core.h"
#include "agent/jobs/run_request.h"
#include "agent/jobs/summary.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/mutex.h"

namespace dlagent::jobs {

// How the coordinator reaches the nodes: this node's NodeJobs directly, the others over the sealed RPC.
class JobNodes {
 public:
  virtual ~JobNodes() = default;
  virtual Result<pb::NodeReply> Call(const std::string& instance_id, const std::string& addr, const pb::NodeRequest& req) = 0;
  // True when gossip says the member died or left.
  virtual bool Gone(const std::string& instance_id) = 0;
  // Jobs whose coordinator is gone that this agent should take over (NodeJobs::Orphans).
  virtual std::vector<pb::JobSpec> Orphans() { return {}; }
  // The roster in force, in rank order (a restart of a job taken over picks its nodes from it).
  virtual std::vector<JobNode> Roster() { return {}; }
};

struct CoordinatorOptions {
  std::string self;       // REQUIRED: this node's instance id
  std::string self_addr;  // REQUIRED: this agent's cluster service, ip:port
  uint16_t dlps_port = 7070;
  std::string agentctl = "/usr/bin/agentctl";                     // mpi: mpirun's remote launcher
  std::function<std::string(const std::string& job)> dlps_token;  // dlps: the job's token (hex); null: none
  // How often time passes for the jobs (OnTick: the nodes gossip calls gone, the timeout, a restart's next
  // try): local, no calls.
  Duration tick_interval = std::chrono::milliseconds(200);
  // How often every node of a job is asked for its part (the slow round): it finds a node whose agent
  // restarted or that stopped answering, and what a push that was lost left out. Nodes push their changes.
  Duration round_interval = std::chrono::seconds(5);
  Duration unreachable_after = std::chrono::seconds(10);  // a node that answers nothing this long is lost
  Duration default_grace = std::chrono::seconds(10);
  // A restart waits this long for enough usable nodes (--min-nodes), then the job fails.
  Duration restart_wait = std::chrono::minutes(5);
  // Between a restart that could not start its ranks and the next try.
  Duration restart_retry = std::chrono::seconds(1);
  size_t keep_finished = 64;
  std::shared_ptr<Heartbeat> heartbeat;
};

// How many calls to other nodes one fan-out makes at once.
inline constexpr size_t kMaxFanOut = 16;

// Makes a run fan out to several nodes at once: fn(i) for i in [0, n), at most max_threads at a time (the
// calling thread is one of them); returns when every call has returned.
void ForEachConcurrently(size_t n, const std::function<void(size_t)>& fn, size_t max_threads = kMaxFanOut);

// The failure a kill leaves on a job: "killed with SIGTERM by uid 1000" (and " on NODE" when from another node).
std::string KillReason(int sig, const Caller& caller, const std::string& from = "");

// A node's reply, its error turned into the Status.
Result<pb::NodeReply> Answer(Result<pb::NodeReply> reply);

// Sends sig to the ranks of the job on every node of it but those in skip (SIGKILL after the job's grace
// unless sig is SIGKILL); the reason is kept as the job's failure (a kill when killed). Returns how many
// ranks were signalled.
uint32_t SignalJob(JobNodes& nodes, const std::string& from, const pb::JobSpec& spec, const std::vector<std::string>& skip, int sig,
                   const std::string& reason, bool killed);

class Coordinator {
 public:
  Coordinator(JobNodes& nodes, CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // roster: every roster node in rank order, the one in force now, asked again for each restart. Returns
  // once every rank runs; on an error nothing runs.
  Result<pb::JobSummary> Run(const pb::RunJobRequest& req, const Caller& caller, std::function<std::vector<JobNode>()> roster);
  // NotFound when the job was not started here.
  Result<pb::JobSummary> Summary(const std::string& job);
  Result<pb::JobSpec> Spec(const std::string& job);
  std::vector<pb::JobSummary> List();
  // SIGTERM (or sig) to every rank, SIGKILL after the grace period; the job ends killed. Only root or the
  // job's user may. Returns how many ranks were signalled.
  Result<uint32_t> Kill(const std::string& job, int sig, const Caller& caller);
  // Takes over a job whose coordinator is gone (a node of the job holds its spec): it becomes the job's
  // coordinator, stops every rank still running and restarts the job without the lost coordinator's node.
  // Returns at once; the coordinator's thread does the rest. Ignored for a job it already coordinates.
  void Adopt(const pb::JobSpec& spec);
  // A node's part of a job, pushed because it changed there (Reporter). Returns at once: what it calls for
  // is done by the coordinator's thread. NotFound when the job is not coordinated here.
  Status Report(const std::string& from, const pb::NodeJob& part);

  // What this coordinator did since the agent started (/metrics).
  struct Counters {
    uint64_t restarts = 0;   // attempts started after a job's first, whether they started or not
    uint64_t takeovers = 0;  // jobs taken over from a lost coordinator
    uint64_t reports = 0;    // parts nodes pushed (Report) for jobs coordinated here
    uint64_t rounds = 0;     // slow rounds: a job's nodes asked for their parts
  };
  Counters counters() {
    MutexLock lock(mu_);
    return counters_;
  }

 private:
  struct Job {
    JobCore core;
    std::function<std::vector<JobNode>()> roster;  // the roster in force, asked again for each restart
    std::vector<JobActions> todo;                  // what pushes called for, for the coordinator's thread
  };

  // Prepares and starts the spec's ranks on nodes, spec.per_node() a node (spec gets its nodes, ranks and token), all or nothing;
  // each node's part.
  Result<std::map<std::string, pb::NodeJob>> Launch(pb::JobSpec& spec, const std::vector<JobNode>& nodes);
  void Loop();
  // The slow round: every node of the job not lost is asked for its part, and the core decides.
  void Watch(const std::string& id);
  // Time passes for the job: the nodes gossip calls gone, the timeout, a restart's next try.
  void Tick(const std::string& id);
  // The job's spec and the indices of its nodes to ask, as they are now; false when it is not held here.
  bool Snapshot(const std::string& id, pb::JobSpec& spec, std::vector<size_t>& ask);
  // The failed attempt has wound down: the next one starts on the nodes picked (or waits, or gives up).
  void Restart(const std::string& id);
  // Does what the core asked for the job (spec: the job's after the call); returns the ranks signalled.
  uint32_t Act(const std::string& id, const pb::JobSpec& spec, const JobActions& a);
  JobCoreOptions CoreOptions() const;

  JobNodes& nodes_;
  const CoordinatorOptions o_;
  Mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::unique_ptr<Job>> jobs_ GUARDED_BY(mu_);
  // Jobs whose first attempt is starting: what their nodes pushed before the start returned (a rank may end
  // at once), by job id, then node.
  std::map<std::string, std::vector<std::pair<std::string, pb::NodeJob>>> starting_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  Counters counters_ GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace dlagent::jobs
