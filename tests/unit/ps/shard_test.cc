#include "agent/ps/shard.h"

#include <future>

#include <gtest/gtest.h>

namespace dlagent::ps {
namespace {

using namespace std::chrono_literals;

Status PushSync(Shard& shard, PushHeader h, const std::vector<float>& v) { return shard.Push(h, v.data(), v.size()).status(); }

struct PullResult {
  Status status;
  uint64_t version = 0;
  std::vector<float> values;
};

std::future<PullResult> PullAsync(Shard& shard, uint64_t key, uint64_t min_version) {
  auto p = std::make_shared<std::promise<PullResult>>();
  shard.Pull(key, 0, min_version, [p](const Status& st, const PullAnswer& a) {
    p->set_value({st, a.version, a.values ? *a.values : std::vector<float>{}});
  });
  return p->get_future();
}

TEST(ShardTest, SyncRoundWaitsForEveryWorkerThenAppliesTheSum) {
  Shard shard({.mode = Mode::kSync, .num_workers = 3});
  OptimizerConfig sgd{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.5f};
  ASSERT_TRUE(shard.Init(7, 0, 2, sgd).ok());
  ASSERT_TRUE(PushSync(shard, {7, 0, 0, 0}, {10, 20}).ok());
  auto pull = PullAsync(shard, 7, 1);
  ASSERT_TRUE(PushSync(shard, {7, 0, 0, 1}, {1, 2}).ok());
  ASSERT_TRUE(PushSync(shard, {7, 0, 2, 1}, {3, 4}).ok());
  EXPECT_EQ(pull.wait_for(0s), std::future_status::timeout) << "rank 1 has not pushed";  // answered inside the push that completes it
  ASSERT_TRUE(PushSync(shard, {7, 0, 1, 1}, {5, 6}).ok());
  PullResult r = pull.get();
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.version, 1u);
  EXPECT_EQ(r.values, (std::vector<float>{10 - 0.5f * 9, 20 - 0.5f * 12}));
}

TEST(ShardTest, TheMemoryBoundCountsEveryWorkersReceiveBufferAndTheOptimizersState) {
  // 8 workers: a slice of n floats holds its weights twice, 8 receive buffers and, with Adam, two moments.
  constexpr uint64_t kFloats = 1 << 16, kCopy = kFloats * sizeof(float);
  ShardOptions o{.mode = Mode::kSync, .num_workers = 8};
  o.max_bytes = 12 * kCopy + 4096;  // room for one Adam slice and its bookkeeping, not for a second copy's worth more
  Shard shard(o);
  OptimizerConfig adam{.kind = OptimizerConfig::Kind::kAdam, .learning_rate = 0.01f};
  ASSERT_TRUE(shard.Init(1, 0, kFloats, adam).ok());
  EXPECT_EQ(shard.weight_bytes(), kCopy);
  Result<uint64_t> more = shard.Init(2, 0, 1024, {});
  EXPECT_EQ(more.status().code(), StatusCode::kResourceExhausted) << more.status().ToString();
  // Counted as weights alone, the bound would have let 11 such slices in.
  Shard sum(o);
  EXPECT_TRUE(sum.Init(1, 0, kFloats, {}).ok());
  EXPECT_EQ(sum.Init(2, 0, kFloats, {}).status().code(), StatusCode::kResourceExhausted);
}

TEST(ShardTest, SyncRefusesWrongRoundsDoublePushesStrangersAndWrongLengths) {
  Shard shard({.mode = Mode::kSync, .num_workers = 2});
  ASSERT_TRUE(shard.Init(1, 0, 2, {}).ok());
  Status st = PushSync(shard, {1, 0, 0, 2}, {1, 1});
  EXPECT_NE(st.ToString().find("pushed round 2 of key 1 chunk 0, but the round in progress is 1"), std::string::npos) << st.ToString();
  ASSERT_TRUE(PushSync(shard, {1, 0, 0, 1}, {1, 1}).ok());
  st = PushSync(shard, {1, 0, 0, 1}, {1, 1});
  EXPECT_NE(st.ToString().find("rank 0 pushed twice in round 1"), std::string::npos) << st.ToString();
  st = PushSync(shard, {1, 0, 5, 1}, {1, 1});
  EXPECT_NE(st.ToString().find("rank 5 is outside the job of 2 workers"), std::string::npos) << st.ToString();
  st = PushSync(shard, {1, 0, 1, 1}, {1, 1, 1});
  EXPECT_NE(st.ToString().find("holds 2 floats; rank 1 pushed 3"), std::string::npos) << st.ToString();
  st = PushSync(shard, {2, 0, 1, 1}, {1});
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  auto again = shard.Init(1, 0, 3, {});
  EXPECT_FALSE(again.ok()) << "redeclared with another length";
}

TEST(ShardTest, AsyncAppliesEachPushAtOnce) {
  Shard shard({.mode = Mode::kAsync, .num_workers = 2});
  ASSERT_TRUE(shard.Init(3, 0, 1, {.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 1}).ok());
  ASSERT_TRUE(PushSync(shard, {3, 0, 1, 1}, {2}).ok());
  PullResult r = PullAsync(shard, 3, 0).get();
  EXPECT_EQ(r.version, 1u);
  EXPECT_EQ(r.values, std::vector<float>{-2});
  ASSERT_TRUE(PushSync(shard, {3, 0, 0, 7}, {3}).ok());  // async: the round number is not checked
  r = PullAsync(shard, 3, 2).get();
  EXPECT_EQ(r.values, std::vector<float>{-5});
}

TEST(ShardTest, APulledVersionStaysIntactWhileLaterRoundsComplete) {
  // A reply may still be on its way when the next round completes: its values must not change under it.
  Shard shard({.mode = Mode::kSync, .num_workers = 1});
  ASSERT_TRUE(shard.Init(1, 0, 3, {.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 1}).ok());
  ASSERT_TRUE(PushSync(shard, {1, 0, 0, 0}, {5, 5, 5}).ok());
  Snapshot held;
  shard.Pull(1, 0, 0, [&](const Status&, const PullAnswer& a) { held = a.values; });
  ASSERT_TRUE(held);
  for (uint64_t round = 1; round <= 20; ++round) ASSERT_TRUE(PushSync(shard, {1, 0, 0, round}, {1, 1, 1}).ok());
  EXPECT_EQ(*held, (std::vector<float>{5, 5, 5}));
  PullResult r = PullAsync(shard, 1, 20).get();
  EXPECT_EQ(r.values, (std::vector<float>{-15, -15, -15}));
}

TEST(ShardTest, AfterFailPendingNothingCountsAndEverythingFailsAtOnce) {
  Shard shard({.mode = Mode::kSync, .num_workers = 2});
  ASSERT_TRUE(shard.Init(1, 0, 1, {}).ok());
  Result<Shard::PushSlot> slot = shard.BeginPush({1, 0, 0, 1}, 1);
  ASSERT_TRUE(slot.ok()) << slot.status().ToString();
  shard.FailPending(Status::Unavailable("dlps", "worker 1 is gone"));
  slot->values[0] = 4;
  EXPECT_EQ(shard.EndPush(*slot).status().code(), StatusCode::kCancelled);
  // The job lost a worker: later pushes, pulls and barriers fail with the reason instead of waiting.
  EXPECT_NE(PushSync(shard, {1, 0, 1, 1}, {2}).ToString().find("worker 1 is gone"), std::string::npos);
  EXPECT_NE(PullAsync(shard, 1, 1).get().status.ToString().find("worker 1 is gone"), std::string::npos);
  EXPECT_TRUE(PullAsync(shard, 1, 0).get().status.ok()) << "a version already reached can still be read";
  Status barrier;
  shard.Barrier(0, 1, [&](const Status& st) { barrier = st; });
  EXPECT_NE(barrier.ToString().find("worker 1 is gone"), std::string::npos);
}

TEST(ShardTest, FailPendingAnswersWaitingPullsAndBarriers) {
  Shard shard({.mode = Mode::kSync, .num_workers = 2});
  ASSERT_TRUE(shard.Init(1, 0, 1, {}).ok());
  auto pull = PullAsync(shard, 1, 1);
  std::promise<Status> barrier;
  shard.Barrier(0, 1, [&](const Status& st) { barrier.set_value(st); });
  ASSERT_EQ(pull.wait_for(0s), std::future_status::timeout) << "Pull registers the waiter before it returns";
  shard.FailPending(Status::Unavailable("dlps", "worker 1 is gone"));
  EXPECT_NE(pull.get().status.ToString().find("worker 1 is gone"), std::string::npos);
  EXPECT_NE(barrier.get_future().get().ToString().find("worker 1 is gone"), std::string::npos);
}

TEST(ShardTest, BarrierReleasesWhenAllRanksArrive) {
  Shard shard({.num_workers = 2});
  std::promise<Status> a, b;
  shard.Barrier(1, 1, [&](const Status& st) { a.set_value(st); });
  auto fa = a.get_future();
  EXPECT_EQ(fa.wait_for(0s), std::future_status::timeout);  // a barrier releases inside the call that completes it
  shard.Barrier(0, 1, [&](const Status& st) { b.set_value(st); });
  EXPECT_TRUE(fa.get().ok());
  EXPECT_TRUE(b.get_future().get().ok());
}

}  // namespace
}  // namespace dlagent::ps
