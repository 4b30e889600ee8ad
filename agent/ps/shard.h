#pragma once
// Shard: the slices of tensors one server holds, and the rounds over them. A slice is one chunk of a key
// (agent/ps/partition.h). The gRPC handlers only hand work over: copying a payload, summing (OpenBLAS), the
// optimizer and the copy of weights for pulls run on the shard's own threads, never on gRPC's.
//
// sync: a round of a slice completes when every worker has pushed its gradient for that round; the sum
//       goes through the optimizer, the version goes up by one and the pulls waiting for it are answered.
//       A push for the wrong round, a second push by one rank in a round, a rank outside the job or a
//       length that is not the slice's is refused, naming which.
// async: every push is applied at once (version + 1 each).
//
// Memory: a slice allocates its weights, its sum and one scratch buffer when it is declared, and the buffers
// that pulls are answered from are kept and reused; steady-state rounds allocate nothing (fresh pages cost
// more than the copies).
//
// Thread safety: every method may be called from any thread; callbacks run on the shard's threads.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/ps/optimizer.h"
#include "agent/ps/wire.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps {

enum class Mode { kSync, kAsync };

struct ShardOptions {
  Mode mode = Mode::kSync;
  uint32_t num_workers = 1;
  int threads = 1;  // for summing and updates
};

// The values a pull is answered with: a snapshot of one version, shared with gRPC until it is sent.
using Snapshot = std::shared_ptr<const std::vector<float>>;

class Shard {
 public:
  using PushDone = std::function<void(const Status&, uint64_t version)>;
  using PullDone = std::function<void(const Status&, uint64_t version, Snapshot values)>;

  explicit Shard(ShardOptions options);
  ~Shard();  // fails what is still waiting (Unavailable "shutting down")
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const ShardOptions& options() const { return options_; }

  // Declares a slice; the same declaration again is a no-op returning the current version.
  Result<uint64_t> Init(uint64_t key, uint32_t chunk, uint64_t length, const OptimizerConfig& optimizer);
  // Done is called once the values are accounted for (summed, or applied in async mode), not when the round
  // completes.
  void Push(const PushHeader& h, Payload values, PushDone done);
  // Done is called once the slice has reached min_version, or with an error.
  void Pull(uint64_t key, uint32_t chunk, uint64_t min_version, PullDone done);
  // Fails every pull that is waiting and every round in progress with `why` (a worker is gone).
  void FailPending(const Status& why);

  // Barrier for `generation` of the job's workers; done runs when all num_workers ranks have entered it.
  void Barrier(uint32_t rank, uint64_t generation, std::function<void(const Status&)> done);

 private:
  struct Slice;
  void Post(std::function<void()> task);
  void Work();
  void ApplyPush(Slice& s, const PushHeader& h, const Payload& values, PushDone& done);
  Snapshot Publish(Slice& s);
  std::shared_ptr<Slice> Find(uint64_t key, uint32_t chunk, std::string* error);

  const ShardOptions options_;
  std::mutex map_mu_;
  std::map<std::pair<uint64_t, uint32_t>, std::shared_ptr<Slice>> slices_;  // protected by map_mu_

  std::mutex barrier_mu_;
  std::map<uint64_t, std::pair<std::vector<bool>, std::vector<std::function<void(const Status&)>>>> barriers_;  // by generation

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<std::function<void()>> queue_;  // protected by queue_mu_
  bool stopping_ = false;                    // protected by queue_mu_
  std::vector<std::thread> threads_;
};

}  // namespace dlagent::ps
