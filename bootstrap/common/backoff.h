#pragma once
// Jittered exponential backoff with a bound: the one retry policy of the agent.
//
// Thread safety: a Backoff is used by one thread; Retry() may be called from any thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>

#include "bootstrap/common/env.h"

namespace dlagent {

struct BackoffPolicy {
  Duration initial = std::chrono::milliseconds(100);  // Default: 100 ms, the cap of the first delay.
  Duration max_delay = std::chrono::seconds(20);      // Default: 20 s, the cap of any one delay.
  double multiplier = 2.0;                            // Default: 2.
  int max_attempts = 5;                               // Default: 5 attempts in all (0: no limit).
  Duration max_elapsed = std::chrono::minutes(2);     // Default: 2 min from the first attempt (0: no limit).
};

// "Full jitter" (as the AWS SDKs do): the n-th delay is uniform in [0, min(max_delay, initial * mult^n)].
class Backoff {
 public:
  Backoff(const BackoffPolicy& policy, uint64_t seed);
  // The delay before the next attempt, or nullopt when the attempt count is spent. REQUIRES: called after
  // each failed attempt.
  std::optional<Duration> NextDelay();
  int attempts() const { return attempts_; }

 private:
  BackoffPolicy policy_;
  std::mt19937_64 rng_;
  int attempts_ = 1;  // the first attempt has happened when NextDelay is first called
};

// Runs attempt() until it succeeds, fails with a non-retryable status, or the policy's budget (attempts or
// elapsed time, measured on env's clock) is spent; sleeps on env between attempts, never past max_elapsed.
// Returns the last status, annotated with the attempt count when the budget ran out. When cancel is set and
// turns true, no further attempt starts and the wait between attempts ends within 100 ms: Cancelled.
Status Retry(Env& env, const BackoffPolicy& policy, const std::function<Status()>& attempt, const std::atomic<bool>* cancel = nullptr);

}  // namespace dlagent
