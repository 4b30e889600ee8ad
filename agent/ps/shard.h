#pragma once
// Shard: the slices of tensors one server holds, and the rounds over them. A
// slice is one chunk of a key (agent/ps/partition.h).
//
// sync: a round of a slice completes when every worker has pushed its gradient for that round; the sum goes
//       through the optimizer, the version goes up by one and the pulls waiting
//       for it are answered. A push for the wrong round, a second push by one
//       rank in a round, a rank outside the job or a length that is not the
//       slice's is refused, naming which.
// async: every push is applied at once (version + 1 each). Round 0 is special in both: it sets the weights (the
// job's initial values) and leaves the version at 0.
//
// A push is received in two steps so that its values go from the socket straight to where they are summed:
// BeginPush checks it and returns the buffer it belongs in (this rank's receive buffer of the slice), the
// caller fills it, EndPush accounts for it. The push that completes a round sums all ranks' buffers and applies
// the optimizer in one pass (optimizer.h), on the calling thread (the server's connection thread), into a weights buffer other than the one pulls of
// the previous version may still be sent from.
//
// Memory: a slice's buffers (weights, a receive buffer per rank, optimizer state) are allocated once and
// reused, and weight buffers are pooled: steady-state rounds allocate nothing and touch no fresh page.
//
// Thread safety: every method may be called from any thread; callbacks run on the thread that made the answer
// possible (the caller, or the one whose push completed the round).

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "agent/ps/optimizer.h"
#include "agent/ps/stats.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps {

enum class Mode { kSync, kAsync };

// What a job's workers can make one server hold; a request over a bound is refused, naming it.
inline constexpr uint32_t kMaxJobWorkers = 4096;  // ranks in one job
inline constexpr size_t kMaxOpenBarriers = 64;    // barrier generations waiting at once

struct ShardOptions {
  Mode mode = Mode::kSync;
  uint32_t num_workers = 1;  // at most kMaxJobWorkers
  // Memory the job's Inits may declare: each slice's weights twice (the current version and one being sent),
  // a receive buffer per worker, the optimizer's state (momentum: one more copy, Adam: two) and per-rank
  // bookkeeping. Default: 16 GiB.
  uint64_t max_bytes = uint64_t{1} << 34;
  uint32_t max_slices = 1 << 20;   // Default: 2^20
  std::shared_ptr<PsStats> stats;  // Default: none. Rounds and their times are counted here (stats.h)
  // Threads a round's update of a large slice is spread over (ApplyUpdate): the round's last push waits for it.
  // 1 where workers share the cores (spread over 2, the 2-worker sync step measured 2-10% slower on 2 cores);
  // a server node, which runs no ranks, spreads over up to kMaxApplyThreads of its cores.
  unsigned apply_threads = 1;
};

struct PushHeader {
  uint64_t key = 0;
  uint32_t chunk = 0;
  uint32_t rank = 0;
  uint64_t round = 0;  // 0: set the initial values
};

// The values a pull is answered with: one version's weights, kept alive until the reply is sent.
using Snapshot = std::shared_ptr<const std::vector<float>>;

struct PullAnswer {
  uint64_t version = 0;
  Snapshot values;
  uint32_t update_micros = 0;  // what summing and the optimizer took for this
                               // version (0 for version 0)
};

class Shard {
 public:
  using PullDone = std::function<void(const Status&, const PullAnswer&)>;
  struct Slice;

  // Where a push's values go; returned by BeginPush, handed back to EndPush or AbortPush.
  struct PushSlot {
    std::shared_ptr<Slice> slice;
    PushHeader header;
    float* values = nullptr;  // length floats
    size_t length = 0;
    uint64_t epoch = 0;  // FailPending in between voids the push
  };

  explicit Shard(ShardOptions options);
  ~Shard();  // fails what is still waiting (Unavailable "shutting down")
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const ShardOptions& options() const { return options_; }

  // Declares a slice; the same declaration again is a no-op returning the current version.
  Result<uint64_t> Init(uint64_t key, uint32_t chunk, uint64_t length, const OptimizerConfig& optimizer);

  Result<PushSlot> BeginPush(const PushHeader& h, uint64_t floats);
  // Returns the slice's version after the push (a completed round's, or the one still in progress).
  Result<uint64_t> EndPush(const PushSlot& slot);
  // The values never arrived in full (the connection broke): the rank has not pushed.
  void AbortPush(const PushSlot& slot);
  // BeginPush, a copy, EndPush: for tests and restores.
  Result<uint64_t> Push(const PushHeader& h, const float* values, uint64_t floats);

  // The floats of every declared slice, in bytes (what one pull of the whole shard sends). Any thread.
  uint64_t weight_bytes() const { return weight_bytes_.load(std::memory_order_relaxed); }

  // Done is called once the slice has reached min_version, or with an error.
  void Pull(uint64_t key, uint32_t chunk, uint64_t min_version, PullDone done);
  // Fails every pull that is waiting and every round in progress with `why` (a worker is gone), and every push,
  // barrier and pull of a version not yet reached after it: a job that lost a worker cannot complete another
  // round, and its other workers must not wait for their deadlines. Pulls of versions already reached still
  // succeed (the final weights, after the job's last barrier). A server serves one job.
  void FailPending(const Status& why);

  // One slice's state, for checkpoints.
  struct SliceState {
    uint64_t key = 0;
    uint32_t chunk = 0;
    OptimizerConfig optimizer;
    Snapshot weights;  // the current version's values
    OptimizerState state;
  };
  // Every slice as of its current version, in key order. In sync mode call it between rounds (after a barrier
  // of all workers) for one consistent version across slices and servers.
  std::vector<SliceState> Export();
  // Loads the states into declared slices of the same length and optimizer: all or none. Refused once a slice
  // has taken a push (restore right after Init) or when a slice is missing or differs, naming it. A key cut
  // into other chunks than here (a checkpoint written with another chunk size) is re-cut into this shard's.
  Status Import(std::vector<SliceState> checkpoint);

  // Barrier for `generation` of the job's workers; done runs when all num_workers ranks have entered it.
  void Barrier(uint32_t rank, uint64_t generation, std::function<void(const Status&)> done);

 private:
  std::shared_ptr<Slice> Find(uint64_t key, uint32_t chunk, std::string* error);
  std::vector<SliceState> InThisLayout(std::vector<SliceState> states);
  Status Failed();

  Mutex failed_mu_;
  Status failed_ GUARDED_BY(failed_mu_);  // set by FailPending

  const ShardOptions options_;
  Mutex map_mu_;
  std::map<std::pair<uint64_t, uint32_t>, std::shared_ptr<Slice>> slices_ GUARDED_BY(map_mu_);
  uint64_t declared_bytes_ GUARDED_BY(map_mu_) = 0;
  std::atomic<uint64_t> weight_bytes_{0};

  Mutex barrier_mu_;
  std::map<uint64_t, std::pair<std::vector<bool>, std::vector<std::function<void(const Status&)>>>> barriers_
      GUARDED_BY(barrier_mu_);  // by generation
};

}  // namespace dlagent::ps
