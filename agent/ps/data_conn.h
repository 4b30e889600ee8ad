#pragma once
// The data side of a PsServer (server.h): Jobs, the shard of the job being served and its connected ranks, and
// the data connections, one per worker: a reading thread that serves its requests (a push that completes a
// round runs the sum and the optimizer there) and a writing thread that sends the replies.
//
// Thread safety: Jobs may be used from any thread. A DataConnection is made and destroyed by one thread
// (the server's accept loop); finished() may be read from any.

#include <atomic>
#include <memory>
#include <mutex>
#include <set>

#include "agent/ps/frame.h"
#include "agent/ps/shard.h"
#include "bootstrap/common/mutex.h"

namespace dlagent::ps {

// Requests of one connection not yet answered; past it the server stops reading that connection.
inline constexpr size_t kMaxInFlight = 16384;

// The shard of the job being served. With a fixed job size (ShardOptions::num_workers > 0) one shard for
// the server's life; with 0 (agentd), a job's shard is made when its first worker connects, sized by its
// Hello, and dropped when its last worker has gone, so that the next job starts clean. One job at a time.
class Jobs {
 public:
  explicit Jobs(const ShardOptions& o) : options_(o) {
    if (o.num_workers > 0) shard_ = std::make_shared<Shard>(o);
  }

  // A worker's data connection, after its Hello: the shard it works on, or why it is refused.
  Result<std::shared_ptr<Shard>> Join(const Hello& h) {
    MutexLock lock(mu_);
    if (h.num_workers > kMaxJobWorkers) {
      return Status::InvalidArgument("dlps-server", "a job of " + std::to_string(h.num_workers) + " workers is over the limit of " +
                                                        std::to_string(kMaxJobWorkers) +
                                                        " (is DLPS_NUM_WORKERS right?)");
    }
    if (h.num_workers == 0 || h.rank >= h.num_workers) {
      return Status::InvalidArgument("dlps-server", "rank " + std::to_string(h.rank) + " is outside the job of " + std::to_string(h.num_workers) + " workers");
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
    return shard_;
  }

  void Leave(uint32_t rank) {
    MutexLock lock(mu_);
    ranks_.erase(rank);
    if (ranks_.empty() && options_.num_workers == 0) shard_.reset();  // the job is over
  }

  // For control calls, which come from connected workers.
  Result<std::shared_ptr<Shard>> Current() {
    MutexLock lock(mu_);
    if (!shard_) return Status::FailedPrecondition("dlps-server", "no job is connected (workers connect before they call Init)");
    return shard_;
  }

 private:
  const ShardOptions options_;
  Mutex mu_;
  std::shared_ptr<Shard> shard_ GUARDED_BY(mu_);
  std::set<uint32_t> ranks_ GUARDED_BY(mu_);  // connected workers
};

class DataConnection {
 public:
  virtual ~DataConnection() = default;  // ends the connection and joins its threads
  virtual bool finished() const = 0;    // the worker has gone; destroy it to close the fd
};

// Serves the worker whose Hello (already read from fd) is `hello`: refused with an error frame, or joined to
// its job. `finished_fd` (an eventfd) is signalled when the connection has ended. Throws std::system_error
// when no thread can be started.
std::unique_ptr<DataConnection> StartDataConnection(Jobs& jobs, int fd, const Hello& hello, const std::atomic<bool>& stopping, int finished_fd);

}  // namespace dlagent::ps
