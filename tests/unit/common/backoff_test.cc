#include "bootstrap/common/backoff.h"

#include <atomic>

#include <gtest/gtest.h>

#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

using namespace std::chrono;

TEST(BackoffTest, DelaysAreJitteredWithinAGrowingCap) {
  BackoffPolicy p;
  p.initial = milliseconds(100);
  p.max_delay = seconds(1);
  p.max_attempts = 10;
  Backoff b(p, 42);
  Duration cap = milliseconds(100);
  std::vector<Duration> delays;
  while (auto d = b.NextDelay()) {
    EXPECT_GE(d->count(), 0);
    EXPECT_LE(*d, cap);
    delays.push_back(*d);
    cap = std::min<Duration>(cap * 2, seconds(1));
  }
  EXPECT_EQ(delays.size(), 9u);  // ten attempts: nine waits between them
  // Jitter: two seeds give different sequences.
  Backoff other(p, 43);
  EXPECT_NE(*other.NextDelay(), delays[0]);
}

TEST(BackoffTest, RetryStopsAtTheAttemptLimit) {
  FakeEnv env;
  BackoffPolicy p;
  p.max_attempts = 4;
  p.max_elapsed = Duration(0);
  int calls = 0;
  Status st = Retry(env, p, [&] {
    ++calls;
    return Status::Unavailable("sqs", "throttled");
  });
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.ToString().find("gave up after 4 attempts"), std::string::npos) << st.ToString();
}

TEST(BackoffTest, RetryCancelledEndsTheWaitWithinATenthOfASecond) {
  FakeEnv env;
  BackoffPolicy p;
  p.initial = seconds(30);
  p.max_delay = seconds(30);
  p.max_attempts = 0;
  p.max_elapsed = minutes(5);
  std::atomic<bool> cancel{false};
  const MonoTime start = env.NowMono();
  int calls = 0;
  MonoTime cancelled_at{};
  Status st = Retry(
      env, p,
      [&] {
        if (++calls == 2) {
          cancel = true;  // the agent stops during the second attempt...
          cancelled_at = env.NowMono();
        }
        return Status::Unavailable("storage", "mount target not ready");
      },
      &cancel);
  EXPECT_EQ(calls, 2) << "no attempt starts after the cancel";
  EXPECT_EQ(st.code(), StatusCode::kCancelled) << st.ToString();
  EXPECT_LE(env.NowMono() - cancelled_at, milliseconds(100)) << "...and the wait after it ends at once";
  EXPECT_LT(env.NowMono() - start, seconds(31));
}

TEST(BackoffTest, RetryStopsAtTheTimeBudgetWithoutOversleeping) {
  FakeEnv env;
  BackoffPolicy p;
  p.initial = seconds(1);
  p.max_delay = seconds(8);
  p.max_attempts = 0;  // unlimited: only time bounds it
  p.max_elapsed = seconds(20);
  const MonoTime start = env.NowMono();
  int calls = 0;
  Status st = Retry(env, p, [&] {
    ++calls;
    env.Advance(milliseconds(10));  // each attempt takes a little time
    return Status::DeadlineExceeded("imds", "timed out");
  });
  EXPECT_FALSE(st.ok());
  EXPECT_GT(calls, 1);
  EXPECT_LE(env.NowMono() - start, seconds(20));
  EXPECT_NE(st.ToString().find("budget"), std::string::npos) << st.ToString();
}

TEST(BackoffTest, RetryReturnsAtOnceOnSuccessOrPermanentError) {
  FakeEnv env;
  int calls = 0;
  EXPECT_TRUE(Retry(env, BackoffPolicy(), [&] { return ++calls < 3 ? Status::Unavailable("x", "y") : Status(); }).ok());
  EXPECT_EQ(calls, 3);
  calls = 0;
  Status st = Retry(env, BackoffPolicy(), [&] {
    ++calls;
    return Status::InvalidArgument("sqs", "bad queue name");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dlagent
