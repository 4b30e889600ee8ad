#pragma once
// NodeJobs: this node's part of every job: it starts the ranks it is given, reads their output line by line
// into the journal (DLAGENT_JOB, DLAGENT_RANK, DLAGENT_STREAM) and a bounded buffer per rank, keeps every
// rank's exit code or signal, and stops ranks: SIGTERM to the rank's process group, SIGKILL after the job's
// grace period. A rank of this node that fails stops the job's other ranks here at once (the coordinator
// stops the other nodes' ranks). The job messages of jobs.proto are its data types.
//
// Threading: one thread of its own polls every rank's pipes and pidfd (and beats its heartbeat at least once
// a second); every method may be called from any thread.

#include <sys/types.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/mutex.h"
#include "proto/jobs.pb.h"

namespace dlagent::jobs {

namespace pb = ::dlagent::jobs::v1;

struct NodeJobsOptions {
  std::string node;                   // REQUIRED: this node's instance id
  size_t max_lines_per_rank = 10000;  // Default: each rank's last 10,000 lines of output are kept
  size_t max_line_bytes = 16 << 10;   // Default: 16 KiB; a longer line is cut into several
  size_t keep_finished = 64;          // Default: the 64 latest finished jobs are kept for jobs and logs
  size_t max_ranks = 1024;            // Default: at most 1,024 ranks of all jobs running on the node
  bool journal = true;                // Default: every line also goes to the log (the journal under systemd)
  std::shared_ptr<Heartbeat> heartbeat;
  // The node environment every rank starts from (cluster.env, PATH, HOME...), read at each start.
  std::function<std::vector<std::string>()> base_env;
  // Whether gossip says a member died or left (null: never). A job whose coordinator is gone has no one left
  // to stop it everywhere: its ranks here are stopped, checked about once a second.
  std::function<bool(const std::string& instance_id)> gone;
};

class NodeJobs {
 public:
  explicit NodeJobs(NodeJobsOptions options);
  ~NodeJobs();  // stops every rank (SIGTERM, then SIGKILL after its grace) and the thread
  NodeJobs(const NodeJobs&) = delete;
  NodeJobs& operator=(const NodeJobs&) = delete;

  // Starts the ranks; all or none: when one cannot start, those started are killed and the error names the rank.
  // AlreadyExists when the job already has ranks here.
  Result<pb::StartReply> Start(const pb::StartRequest& req);
  // Checks that the ranks could start (the working directory, the program), and finds free ports.
  Result<pb::PrepareReply> Prepare(const pb::PrepareRequest& req);
  // One job with its lines after the cursor, or (job "") every job without lines. NotFound: no such job here.
  Result<pb::QueryReply> Query(const pb::QueryRequest& req);
  // Signals every running rank of the job; with escalate, SIGKILL follows after the grace period. The first
  // reason given is kept as the job's failure. NotFound when the job has no ranks here.
  Result<pb::SignalReply> Signal(const pb::SignalRequest& req);
  // Stops every running rank of every job (agentd is stopping) and waits up to `wait` for them to end.
  void StopAll(const std::string& reason, Duration wait);

 private:
  struct Stream {
    int fd = -1;
    std::string partial;
  };
  struct Rank {
    pb::RankState state;
    int pidfd = -1;
    Stream out, err;
    std::deque<pb::LogLine> lines;  // its last max_lines_per_rank lines, the oldest first
  };
  struct Job {
    pb::JobSpec spec;
    std::vector<Rank> ranks;
    uint64_t next_seq = 1;
    std::string failure;
    bool killed = false;
    MonoTime kill_at = MonoTime::max();  // SIGKILL for ranks still running, when escalated
    MonoTime ended = MonoTime::max();
    bool swept = false;  // what the ranks left running was signalled
  };

  void Loop();
  void Wake();
  // A line read, to go to the journal once mu_ is released.
  struct Echo {
    std::string job;
    uint32_t rank;
    bool stderr_stream;
    std::string text;
  };
  void Drain(Job& job, Rank& rank, Stream& s, bool stderr_stream, std::vector<Echo>& echo) REQUIRES(mu_);
  void AddLine(Job& job, Rank& rank, bool stderr_stream, std::string text, std::vector<Echo>& echo) REQUIRES(mu_);
  void Reap(Job& job, Rank& rank) REQUIRES(mu_);
  void SignalLocked(Job& job, int sig, bool escalate, const std::string& reason, bool killed) REQUIRES(mu_);
  void Forget() REQUIRES(mu_);
  // Stops the running jobs whose coordinator gossip says is gone (about once a second).
  void StopOrphans() REQUIRES(mu_);
  pb::NodeJob Describe(const Job& job, bool with_lines, uint64_t after, uint32_t max_lines) const REQUIRES(mu_);
  size_t RunningRanks() const REQUIRES(mu_);

  const NodeJobsOptions o_;
  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<Job>> jobs_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  int wake_fd_ = -1;
  MonoTime last_orphan_check_{};  // the loop's thread only
  std::thread thread_;
};

}  // namespace dlagent::jobs
