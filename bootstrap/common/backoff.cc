#include "bootstrap/common/backoff.h"

#include <algorithm>
#include <cmath>

#include "bootstrap/common/crypto.h"

namespace dlagent {

Backoff::Backoff(const BackoffPolicy& policy, uint64_t seed) : policy_(policy), rng_(seed) {}

std::optional<Duration> Backoff::NextDelay() {
  if (policy_.max_attempts > 0 && attempts_ >= policy_.max_attempts) return std::nullopt;
  const double cap = std::min<double>(static_cast<double>(policy_.max_delay.count()),
                                      static_cast<double>(policy_.initial.count()) * std::pow(policy_.multiplier, attempts_ - 1));
  ++attempts_;
  std::uniform_real_distribution<double> dist(0.0, cap);
  return Duration(static_cast<Duration::rep>(dist(rng_)));
}

Status Retry(Env& env, const BackoffPolicy& policy, const std::function<Status()>& attempt, const std::atomic<bool>* cancel) {
  const MonoTime start = env.NowMono();
  Backoff backoff(policy, RandomSeed());
  auto cancelled = [&] { return cancel && cancel->load(); };
  for (;;) {
    if (cancelled()) return Status(StatusCode::kCancelled, "retry", "cancelled: the agent is stopping");
    Status st = attempt();
    if (st.ok() || !st.retryable()) return st;
    std::optional<Duration> delay = backoff.NextDelay();
    if (!delay) return st.Annotate("gave up after " + std::to_string(backoff.attempts()) + " attempts");
    if (policy.max_elapsed.count() > 0) {
      const Duration left = policy.max_elapsed - (env.NowMono() - start);
      if (left <= *delay) {
        return st.Annotate("gave up after " + std::to_string(backoff.attempts() - 1) + " attempts: retry budget of " +
                           std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(policy.max_elapsed).count()) + " ms spent");
      }
    }
    if (!cancel) {
      env.SleepFor(*delay);
      continue;
    }
    for (Duration left = *delay; left > Duration(0) && !cancelled(); left -= std::chrono::milliseconds(100)) {
      env.SleepFor(std::min<Duration>(left, std::chrono::milliseconds(100)));
    }
  }
}

}  // namespace dlagent
