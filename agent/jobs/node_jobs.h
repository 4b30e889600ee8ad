#pragma once
// NodeJobs: this node's part of every job: it starts the ranks it is given, reads their output line by line
// into the journal (DLAGENT_JOB, DLAGENT_RANK, DLAGENT_STREAM) and a buffer per rank bounded in lines and bytes
// (and all of them in bytes together), keeps every rank's exit code or signal, and stops ranks: SIGTERM to
// the rank's process group, SIGKILL after the job's grace period. A rank of this node that fails stops the
// job's other ranks here at once (the coordinator stops the other nodes' ranks). The job messages of
// jobs.proto are its data types.
//
// Signals never reach a stranger: a rank that exits stays a zombie (seen with WNOWAIT, not reaped) until its
// job has ended, so neither its pid nor its process group id can be reused while a signal may still be sent
// to them.
//
// Threading: one thread of its own polls every rank's pipes and pidfd (and beats its heartbeat at least once
// a second); every method may be called from any thread.

#include <sys/types.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/jobs/scope.h"
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
  // Default: 4 MiB. The bytes of output a rank's buffer holds (each line counts its text and kLineOverhead);
  // past it its oldest lines go. Raised to max_line_bytes + kLineOverhead when below.
  size_t max_bytes_per_rank = 4 << 20;
  // Default: 256 MiB. The bytes of output held on the node, every job's together, finished ones included. Past
  // it the lines of the jobs that ended first go, then the oldest lines of the rank that writes.
  size_t max_bytes = 256 << 20;
  size_t keep_finished = 64;  // Default: the 64 latest finished jobs are kept for jobs and logs
  size_t max_ranks = 1024;    // Default: at most 1,024 ranks of all jobs running on the node
  bool journal = true;        // Default: every line also goes to the log (the journal under systemd)
  std::shared_ptr<Heartbeat> heartbeat;
  // The node environment every rank starts from (cluster.env, PATH, HOME...), read at each start.
  std::function<std::vector<std::string>()> base_env;
  // Whether gossip says a member died or left (null: never). A job whose coordinator is gone has no one left
  // to stop it everywhere: its ranks here are stopped, checked about once a second.
  std::function<bool(const std::string& instance_id)> gone;
  // Default: "" (none). The abstract Unix datagram socket ranks report training metrics to (training.h); each
  // rank gets DLAGENT_METRICS_SOCKET=@name. Only a job's own user (or root) may report for it.
  std::string training_socket;
  // Default: null, ranks in process groups only. Each rank in a systemd scope of its own (scope.h): its tasks
  // count against the scope's limit, not agentd's, and a signal reaches all of its processes.
  std::shared_ptr<Scopes> scopes;
  // Default: null. Called from NodeJobs' thread, without its lock, with the parts (states only, the spec
  // briefed) of the jobs whose state here changed since the last call: a rank started or ended, a signal, a
  // failure, the job's end here; a training report as kTrainingPushEvery says. Must not block (the
  // Reporter queues them for the coordinator).
  std::function<void(std::vector<pb::NodeJob>)> report;
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
  // Stops every running rank of every job (agentd is stopping) and waits up to `wait` for them to end. The
  // parts say from then on that the node is leaving: no coordinator picks it for a job's next attempt.
  void StopAll(const std::string& reason, Duration wait);

  // The bytes of output held now, every job's together (never above max_bytes).
  size_t HeldBytes() const;
  // What this node's ranks did since the agent started (/metrics).
  struct Counters {
    uint64_t ranks_running = 0;           // now
    uint64_t held_bytes = 0;              // now
    uint64_t ranks_started = 0;           // since start, every attempt's
    uint64_t exits_ok = 0;                // exit code 0
    uint64_t exits_failed = 0;            // another exit code
    uint64_t exits_signal = 0;            // ended by a signal (a kill, a stop, a crash)
    uint64_t output_lines = 0;            // read from the ranks
    uint64_t output_bytes = 0;            // their text
    uint64_t dropped_lines = 0;           // held no longer: over a rank's or the node's bound
    uint64_t reports = 0;                 // training reports taken (training.h)
    uint64_t reports_malformed = 0;       // refused: not a report
    uint64_t reports_refused = 0;         // refused: no such job running here, or not sent by its user
    uint64_t reports_too_many_names = 0;  // taken in part: names over kMaxTrainingNames
  };
  Counters counters() const;
  // What the ranks of each job running here (or ended less than `grace` ago) reported last, by job id.
  std::map<std::string, pb::Training> Training(Duration grace) const;

  // Jobs this node's agent should take over: their coordinator is gone (gossip), they have restarts left,
  // and this node is the first of the job's nodes that gossip does not call gone.
  std::vector<pb::JobSpec> Orphans() const;
  // How long the ranks of a job with restarts left wait, after its coordinator is gone, for an agent to
  // take it over before they stop.
  static constexpr Duration kAdoptWait = std::chrono::seconds(15);

  // Whether the job has ranks on this node that have not all ended, or ended less than `grace` ago (another
  // node's ranks may still be finishing). A dlps token is valid only while its job lives here.
  bool Live(const std::string& job, Duration grace) const;
  // The uid the job's ranks run as, while this node holds the job (nullopt: it does not). A job prepared here
  // and not started yet counts, for kPreparedFor, in Live and Owner.
  std::optional<uint32_t> Owner(const std::string& job) const;
  static constexpr Duration kPreparedFor = std::chrono::seconds(60);
  static constexpr size_t kMaxPrepared = 1024;

  // A job's training reports alone change its pushed part at most this often (report): on the node of its
  // rank 0 often enough for its summary's latest step to stay fresh, elsewhere rarely (the summary shows the
  // latest step any node reported, so one node suffices, and a job of N nodes does not cost N pushes a step).
  static constexpr Duration kTrainingPushEvery = std::chrono::milliseconds(500);
  static constexpr Duration kTrainingPushEveryElsewhere = std::chrono::seconds(10);

  // What a held line costs beyond its text (its record and the deque's share).
  static constexpr size_t kLineOverhead = 64;

 private:
  struct Stream {
    int fd = -1;
    std::string partial;
  };
  struct Rank {
    pb::RankState state;
    int pidfd = -1;
    bool reaped = false;  // its zombie is gone: its pid may belong to someone else now
    std::string scope;    // its systemd scope ("" when it has none)
    Stream out, err;
    std::deque<pb::LogLine> lines;  // its latest lines within the bounds, the oldest first
    size_t held_bytes = 0;          // what `lines` costs (text + kLineOverhead each)
  };
  struct Job {
    pb::JobSpec spec;
    std::vector<Rank> ranks;
    uint64_t next_seq = 1;
    std::string failure;
    bool killed = false;
    // The ranks running when the first kill came: a kill that comes from two sides at once (the caller's
    // agent tells every node, and the coordinator passes the first node's news on) reports them both times.
    uint32_t killed_ranks = 0;
    MonoTime kill_at = MonoTime::max();  // SIGKILL for ranks still running, when escalated
    MonoTime ended = MonoTime::max();
    bool swept = false;  // what the ranks left running was signalled
    // After the sweep's SIGKILL: when the output is still held open then (by a process that left the ranks'
    // process groups), it is closed unread.
    MonoTime abandon_at = MonoTime::max();
    MonoTime orphaned = MonoTime::max();  // when its coordinator was first seen gone (restarts left)
    pb::Training training;                // what its ranks here reported last
    uint64_t version = 0;                 // NodeJob.version: raised by every change (Changed)
    bool dirty = false;                   // changed since the last report
    MonoTime training_pushed{};           // when a training report last made it dirty
  };

  void Loop();
  void Wake();
  // node_jobs_training.cc: the training socket's datagrams, at most kReportsPerTurn a turn.
  static int OpenTrainingSocket(const std::string& name);
  void ReadReports() REQUIRES(mu_);
  static constexpr int kReportsPerTurn = 256;
  // Lines read from one rank's stream at once, to go to the log as one record (a journal entry) once mu_ is
  // released: "job J rank R: " and the lines, joined by newlines.
  struct Echo {
    std::string job;
    uint32_t rank;
    bool stderr_stream;
    std::string text;
  };
  static constexpr size_t kEchoBatchBytes = 64 << 10;
  // Reads what the stream has (at most 128 KiB); the bytes read.
  size_t Drain(Job& job, Rank& rank, Stream& s, bool stderr_stream, std::vector<Echo>& echo) REQUIRES(mu_);
  void AddLine(Job& job, Rank& rank, bool stderr_stream, std::string text, std::vector<Echo>& echo) REQUIRES(mu_);
  // Sees that the rank exited (it stays a zombie); ReapEnded reaps a job's zombies once the job has ended.
  void Reap(Job& job, Rank& rank) REQUIRES(mu_);
  static void ReapEnded(Job& job);
  // Drops a rank's oldest line; Shed makes room for `rank`'s newest under max_bytes.
  void DropOldest(Rank& rank) REQUIRES(mu_);
  void Shed(Rank& rank) REQUIRES(mu_);
  // Once a turn: SIGKILL after the grace, the job's end, output abandoned by escaped processes.
  bool Advance(Job& job, MonoTime now) REQUIRES(mu_);
  void SignalLocked(Job& job, int sig, bool escalate, const std::string& reason, bool killed) REQUIRES(mu_);
  // sig to every process of the rank: its scope's, or where it has none (or systemd does not answer) its
  // process group's while its zombie holds the group's id.
  void SignalRank(const Rank& rank, int sig) REQUIRES(mu_);
  void Forget() REQUIRES(mu_);
  // The job's part changed: a new version, to be reported (NodeJobsOptions::report).
  void Changed(Job& job) REQUIRES(mu_);
  // The parts of the jobs changed since the last call, for the report.
  std::vector<pb::NodeJob> TakeChanged() REQUIRES(mu_);
  // Stops the running jobs whose coordinator gossip says is gone (about once a second); one with restarts
  // left first waits kAdoptWait for another agent to take it over.
  void StopOrphans() REQUIRES(mu_);
  // The node of the job that should take it over when its coordinator is gone ("" : none left).
  std::string Adopter(const pb::JobSpec& spec) const;
  pb::NodeJob Describe(const Job& job, bool with_lines, uint64_t after, uint32_t max_lines) const REQUIRES(mu_);
  size_t RunningRanks() const REQUIRES(mu_);
  static uint32_t RunningRanks(const Job& job);

  const NodeJobsOptions o_;
  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<Job>> jobs_ GUARDED_BY(mu_);
  // Jobs prepared here and not started yet: their user, and when (kPreparedFor, at most kMaxPrepared).
  struct PreparedJob {
    uint32_t uid = 0;
    MonoTime at;
  };
  std::map<std::string, PreparedJob> prepared_ GUARDED_BY(mu_);
  std::optional<uint32_t> Prepared(const std::string& job) const REQUIRES(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  bool leaving_ GUARDED_BY(mu_) = false;       // StopAll was called: the agent goes (NodeJob.leaving)
  size_t held_bytes_ GUARDED_BY(mu_) = 0;      // every rank's held_bytes
  size_t finished_bytes_ GUARDED_BY(mu_) = 0;  // the part of it held by jobs that ended
  Counters counters_ GUARDED_BY(mu_);          // the totals (the "now" members are filled in by counters())
  uint64_t version_ GUARDED_BY(mu_) = 0;       // the last Job::version given
  int wake_fd_ = -1;
  int training_fd_ = -1;          // -1: none (no name, or it could not be bound)
  MonoTime last_orphan_check_{};  // the loop's thread only
  size_t turn_ = 0;               // the loop's thread only: where a turn starts reading, in turn
  std::thread thread_;
};

}  // namespace dlagent::jobs
