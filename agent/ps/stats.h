#pragma once
// PsStats: what a parameter server's connections and shards did since it started (agentd's /metrics:
// dlagent_dlps_*). One per server, shared by every job's shard it serves.
//
// Thread safety: relaxed atomics; a reader may see a round counted and not yet timed.

#include <array>
#include <atomic>
#include <cstdint>

namespace dlagent::ps {

struct PsStats {
  // Upper bounds of the time buckets, in seconds.
  static constexpr std::array<double, 12> kBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1, 10};
  struct Histogram {
    std::array<std::atomic<uint64_t>, kBuckets.size() + 1> buckets{};  // per bucket, not cumulative; the last above 10 s
    std::atomic<uint64_t> micros{0};                                   // every observation's, summed
    void Observe(uint64_t us) {
      size_t i = 0;
      while (i < kBuckets.size() && static_cast<double>(us) > kBuckets[i] * 1e6) ++i;
      buckets[i].fetch_add(1, std::memory_order_relaxed);
      micros.fetch_add(us, std::memory_order_relaxed);
    }
  };

  std::atomic<uint64_t> connections{0};                    // workers' data connections accepted
  std::atomic<uint64_t> pushes{0}, pulls{0}, controls{0};  // requests served (refused ones not)
  std::atomic<uint64_t> bytes_in{0};                       // pushed values
  std::atomic<uint64_t> bytes_out{0};                      // values sent in pull replies
  // Rounds completed (sync: every worker pushed a slice; async: each push's update), how long summing and the
  // optimizer took, and (sync) the time from a round's first push to its last.
  std::atomic<uint64_t> rounds{0};
  Histogram apply, round;
  // Refused, by reason: hello (a worker's first frame: another protocol, no valid job token, another job
  // running), oversized (a frame over the limits), malformed (not whole floats, a pull with a payload, an
  // unknown request), push (a push the shard refused: wrong round, twice in a round, unknown slice).
  std::atomic<uint64_t> refused_hello{0}, refused_oversized{0}, refused_malformed{0}, refused_push{0};
};

}  // namespace dlagent::ps
