#pragma once
// The data side of a PsServer (server.h): Jobs, the shard of the job being served and its connected ranks, and
// the data connections, one per worker: a reading thread that serves its requests (a push that completes a
// round runs the sum and the optimizer there) and a writing thread that sends the replies.
//
// Thread safety: Jobs may be used from any thread. A DataConnection is made and destroyed by one thread
// (the server's accept loop); finished() may be read from any.

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "agent/ps/checkpoint.h"
#include "agent/ps/frame.h"
#include "agent/ps/shard.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/mutex.h"

namespace dlagent::ps {

// Requests of one connection not yet answered; past it the server stops reading that connection.
inline constexpr size_t kMaxInFlight = 16384;
// A worker may leave pulled values unread up to twice its shard's weights plus this; past it, it is cut off.
inline constexpr uint64_t kSlowReaderSlack = 64 << 20;

// The shard of the job being served. With a fixed job size (ShardOptions::num_workers > 0) one shard for
// the server's life; with 0 (agentd), a job's shard is made when its first worker connects, sized by its
// Hello, and dropped when its last worker has gone, so that the next job starts clean. One job at a time.
// With job keys (agentd), only a job the agents started is served: a worker shows the job's id and its token
// (DlpsJobToken under one of the keys) in its Hello, and a worker of another job waits for the running one to
// end.
using JobKeysFn = std::function<std::vector<std::string>()>;
using JobLiveFn = std::function<bool(const std::string& job)>;
// The uid a job runs as, when it runs on this node (agentd); nullopt otherwise.
using JobOwnerFn = std::function<std::optional<uint32_t>(const std::string& job)>;

class Jobs {
 public:
  // job_keys: empty serves whoever reaches the port (dlps-server, which trusts its network).
  // job_live: null, every job with a valid token may be served; set, only a job that lives on this node.
  // job_owner: null, checkpoints are written under the checkpoint directory itself; set, under each job's
  // user's directory in it (CheckpointDir).
  explicit Jobs(const ShardOptions& o, JobKeysFn job_keys = nullptr, JobLiveFn job_live = nullptr, JobOwnerFn job_owner = nullptr)
      : options_(WithStats(o)),
        stats_(options_.stats),
        job_keys_(std::move(job_keys)),
        job_live_(std::move(job_live)),
        job_owner_(std::move(job_owner)) {
    if (options_.num_workers > 0) shard_ = std::make_shared<Shard>(options_);
  }

  // Where the server counts what its connections and shards do (never null: a private one when the options
  // name none).
  PsStats& stats() const { return *stats_; }

  // A worker's data connection, after its Hello: the shard it works on, or why it is refused.
  Result<std::shared_ptr<Shard>> Join(const Hello& h) {
    const std::string job(h.job, ::strnlen(h.job, sizeof h.job));
    RETURN_IF_ERROR(CheckToken(job, std::string_view(reinterpret_cast<const char*>(h.token), sizeof h.token)));
    MutexLock lock(mu_);
    if (job_keys_ && !job_.empty() && job != job_) {
      return Status::FailedPrecondition("dlps-server", "this shard is serving job " + job_ + "; job " + job + " must wait for it to end");
    }
    if (h.num_workers > kMaxJobWorkers) {
      return Status::InvalidArgument("dlps-server", "a job of " + std::to_string(h.num_workers) + " workers is over the limit of " +
                                                        std::to_string(kMaxJobWorkers) + " (is DLPS_NUM_WORKERS right?)");
    }
    if (h.num_workers == 0 || h.rank >= h.num_workers) {
      return Status::InvalidArgument("dlps-server",
                                     "rank " + std::to_string(h.rank) + " is outside the job of " + std::to_string(h.num_workers) + " workers");
    }
    if (!shard_) {
      ShardOptions o = options_;
      o.num_workers = h.num_workers;
      shard_ = std::make_shared<Shard>(o);
    }
    const uint32_t size = shard_->options().num_workers;
    if (h.num_workers != size) {
      return Status::FailedPrecondition("dlps-server", "the worker says the job has " + std::to_string(h.num_workers) + " workers; this server " +
                                                           (options_.num_workers > 0 ? "was started for " : "is serving a job of ") +
                                                           std::to_string(size) + (options_.num_workers > 0 ? "" : " (one job at a time)"));
    }
    if (!ranks_.insert(h.rank).second) {
      return Status::FailedPrecondition("dlps-server", "rank " + std::to_string(h.rank) + " is already connected (two workers with one DLPS_RANK?)");
    }
    job_ = job;
    return shard_;
  }

  // Where `job`'s checkpoints go under the server's checkpoint directory `root`: root itself, or with job owners
  // (agentd) its user's directory (UserCheckpointDir). The uid too (nullopt: no owners).
  struct CheckpointPlace {
    std::string dir;
    std::optional<uint32_t> uid;
  };
  Result<CheckpointPlace> CheckpointDir(const std::string& root, const std::string& job) const {
    if (!job_owner_) return CheckpointPlace{root, std::nullopt};
    const std::optional<uint32_t> uid = job_owner_(job);
    if (!uid) return Status::FailedPrecondition("dlps-server", "job " + job + " no longer runs on this node: its checkpoints cannot be reached");
    ASSIGN_OR_RETURN(std::string dir, UserCheckpointDir(root, *uid));
    return CheckpointPlace{std::move(dir), uid};
  }

  // A worker of the shard's job has gone. Nothing changes when the shard is no longer the one served (its job
  // was evicted, and the ranks are another job's now).
  void Leave(uint32_t rank, const std::shared_ptr<Shard>& shard) {
    MutexLock lock(mu_);
    if (shard != shard_) return;
    ranks_.erase(rank);
    if (ranks_.empty()) job_.clear();
    if (ranks_.empty() && options_.num_workers == 0) shard_.reset();  // the job is over
  }

  // Drops the served job's shard when the job no longer lives on this node; the job dropped ("" : none). The
  // caller ends the job's data connections.
  std::string EvictEnded() {
    if (!job_live_) return "";
    std::string job;
    {
      MutexLock lock(mu_);
      job = job_;
    }
    if (job.empty() || job_live_(job)) return "";  // asked without the lock: it may take the jobs' own
    MutexLock lock(mu_);
    if (job_ != job) return "";
    job_.clear();
    ranks_.clear();
    if (options_.num_workers == 0) shard_.reset();
    return job;
  }
  // The served job's shard, for the server itself (shutting down).
  Result<std::shared_ptr<Shard>> Served() {
    MutexLock lock(mu_);
    if (!shard_) return Status::FailedPrecondition("dlps-server", "no job is connected");
    return shard_;
  }

 private:
  Status CheckToken(const std::string& job, std::string_view token) const {
    if (!job_keys_) return Status::Ok();
    if (job.empty()) {
      return Status::PermissionDenied("dlps-server",
                                      "this shard serves jobs the agents start: run the workers with agentctl run --launcher dlps "
                                      "(DLPS_JOB and DLPS_TOKEN are not set)");
    }
    bool valid = false;
    for (const std::string& key : job_keys_()) valid = valid || ConstantTimeEquals(DlpsJobToken(key, job), token);
    if (!valid) return Status::PermissionDenied("dlps-server", "the token of job " + job + " is not valid in this cluster (DLPS_TOKEN)");
    if (job_live_ && !job_live_(job)) {
      return Status::PermissionDenied("dlps-server", "job " + job + " does not run on this node (it ended, or never ran here): its token is void");
    }
    return Status::Ok();
  }

  static ShardOptions WithStats(ShardOptions o) {
    if (!o.stats) o.stats = std::make_shared<PsStats>();
    return o;
  }

  const ShardOptions options_;
  const std::shared_ptr<PsStats> stats_;
  const JobKeysFn job_keys_;
  const JobLiveFn job_live_;
  const JobOwnerFn job_owner_;
  Mutex mu_;
  std::shared_ptr<Shard> shard_ GUARDED_BY(mu_);
  std::string job_ GUARDED_BY(mu_);           // the served job's id, with job keys
  std::set<uint32_t> ranks_ GUARDED_BY(mu_);  // connected workers
};

class DataConnection {
 public:
  virtual ~DataConnection() = default;  // ends the connection and joins its threads
  virtual bool finished() const = 0;    // the worker has gone; destroy it to close the fd
  virtual std::string job() const = 0;  // the job its Hello named
};

// Serves the worker whose Hello (already read from fd) is `hello`: refused with an error frame, or joined to
// its job. Its control requests run on the connection's reading thread (checkpoints are written under
// checkpoint_dir; empty: refused). `finished_fd` (an eventfd) is signalled when the connection has ended.
// Throws std::system_error when no thread can be started.
std::unique_ptr<DataConnection> StartDataConnection(Jobs& jobs, const std::string& checkpoint_dir, int fd, const Hello& hello,
                                                    const std::atomic<bool>& stopping, int finished_fd);

}  // namespace dlagent::ps
