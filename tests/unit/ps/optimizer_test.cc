#include "agent/ps/optimizer.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "agent/ps/frame.h"

namespace dlagent::ps {
namespace {

// One update of a 3-element slice where every element starts at w and gets gradient g.
std::vector<float> Step(const OptimizerConfig& c, OptimizerState* state, std::vector<float> w, float g) {
  std::vector<float> grad(w.size(), g);
  const float* grads[] = {grad.data()};
  ApplyUpdate(c, w.data(), w.data(), grads, w.size(), state);
  return w;
}

TEST(OptimizerTest, SumsTheRanksGradientsAndWritesAnotherBufferAcrossBlocks) {
  // 5000 floats span three of the update's blocks; the old weights must stay as they were.
  const size_t n = 5000;
  std::vector<float> w_old(n), w_new(n, -1), g0(n), g1(n), g2(n);
  for (size_t i = 0; i < n; ++i) {
    w_old[i] = static_cast<float>(i);
    g0[i] = 1;
    g1[i] = static_cast<float>(i % 7);
    g2[i] = -0.5f;
  }
  const std::vector<float> before = w_old;
  const float* grads[] = {g0.data(), g1.data(), g2.data()};
  OptimizerConfig c{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.5f, .rescale = 0.25f};
  OptimizerState s;
  ApplyUpdate(c, w_old.data(), w_new.data(), grads, n, &s);
  EXPECT_EQ(w_old, before);
  for (size_t i = 0; i < n; i += 999) {
    const float sum = 1 + static_cast<float>(i % 7) - 0.5f;
    EXPECT_FLOAT_EQ(w_new[i], static_cast<float>(i) - 0.5f * 0.25f * sum) << i;
  }
  EXPECT_FLOAT_EQ(w_new[n - 1], static_cast<float>(n - 1) - 0.5f * 0.25f * (0.5f + static_cast<float>((n - 1) % 7)));
}

TEST(OptimizerTest, SgdWithWeightDecay) {
  OptimizerConfig c{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.1f, .weight_decay = 0.01f};
  OptimizerState s;
  // w = (1 - 0.1 * 0.01) * 1 - 0.1 * 0.5
  for (float w : Step(c, &s, {1, 1, 1}, 0.5f)) EXPECT_NEAR(w, 0.949f, 1e-6);
}

TEST(OptimizerTest, SgdWithMomentumOverTwoSteps) {
  OptimizerConfig c{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.1f, .momentum = 0.9f};
  OptimizerState s;
  std::vector<float> w = Step(c, &s, {1, 1, 1}, 0.5f);  // m = -0.05, w = 0.95
  EXPECT_NEAR(w[0], 0.95f, 1e-6);
  w = Step(c, &s, w, 0.5f);  // m = 0.9 * -0.05 - 0.05 = -0.095, w = 0.855
  EXPECT_NEAR(w[2], 0.855f, 1e-6);
  EXPECT_NEAR(s.m[1], -0.095f, 1e-6);
}

TEST(OptimizerTest, AdamFirstTwoStepsMoveByTheLearningRate) {
  OptimizerConfig c{.kind = OptimizerConfig::Kind::kAdam, .learning_rate = 0.1f};
  OptimizerState s;
  // t=1: m = 0.05, v = 0.00025, lr_t = 0.1 sqrt(0.001) / 0.1; step = lr_t * 0.05 / sqrt(0.00025) = 0.1
  std::vector<float> w = Step(c, &s, {1, 1, 1}, 0.5f);
  EXPECT_NEAR(w[0], 0.9f, 1e-5);
  EXPECT_NEAR(s.v[0], 0.00025f, 1e-8);  // float: 1 - 0.999f is 0.00099998
  // t=2: m = 0.095, v = 0.00049975, lr_t = 0.1 sqrt(0.001999) / 0.19 = 0.0235317; step = 0.0235317 * 0.095 / 0.0223551
  w = Step(c, &s, w, 0.5f);
  EXPECT_NEAR(w[0], 0.8f, 1e-5);
  // A different gradient: t=3 with g = -1.
  // m = 0.9*0.095 - 0.1 = -0.0145; v = 0.999*0.00049975 + 0.001 = 0.00149925; lr_t = 0.1 sqrt(1-0.999^3)/(1-0.9^3)
  const double m = -0.0145, v = 0.999 * 0.00049975 + 0.001, lr_t = 0.1 * std::sqrt(1 - std::pow(0.999, 3)) / (1 - std::pow(0.9, 3));
  w = Step(c, &s, w, -1.0f);
  EXPECT_NEAR(w[1], 0.8 - lr_t * m / (std::sqrt(v) + 1e-8), 1e-5);
}

TEST(OptimizerTest, SumStoresTheRescaledSum) {
  OptimizerConfig c{.kind = OptimizerConfig::Kind::kSum, .rescale = 0.5f};
  OptimizerState s;
  for (float w : Step(c, &s, {7, 7, 7}, 3.0f)) EXPECT_EQ(w, 1.5f);
}

TEST(OptimizerTest, SpecDefaultsAndRefusals) {
  auto c = ResolveOptimizer({.kind = "adam"});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->beta2, 0.999f);
  EXPECT_EQ(c->rescale, 1.0f);
  EXPECT_TRUE(*ResolveOptimizer(SpecOf(*c)) == *c);
  // Through the wire's InitBody (kInit) and back, unchanged.
  const InitBody body = MakeInitBody(12, SpecOf(*c));
  EXPECT_EQ(body.length, 12u);
  EXPECT_TRUE(*ResolveOptimizer(SpecOf(body)) == *c);

  const std::vector<std::pair<std::function<void(OptimizerSpec*)>, std::string>> bad = {
      {[](auto* o) { o->kind = "rmsprop"; }, "unknown optimizer 'rmsprop'"},
      {[](auto* o) { o->learning_rate = -1; }, "learning_rate must be > 0"},
      {[](auto* o) { o->momentum = 1; }, "momentum must be in [0, 1)"},
      {[](auto* o) { o->weight_decay = -0.1f; }, "weight_decay must be >= 0"},
      {[](auto* o) { o->beta1 = 1.5f; }, "beta1 and beta2"},
  };
  for (const auto& [edit, reason] : bad) {
    OptimizerSpec o{.kind = "sgd"};
    edit(&o);
    auto r = ResolveOptimizer(o);
    ASSERT_FALSE(r.ok()) << reason;
    EXPECT_NE(r.status().ToString().find(reason), std::string::npos) << r.status().ToString();
  }
}

}  // namespace
// A round spread over threads (ShardOptions::apply_threads) gives every float the same arithmetic: the
// weights and the optimizer's state equal one thread's to the bit, for each kind, over three rounds, with a
// length that is no multiple of a part or a block.
TEST(OptimizerTest, AnUpdateSpreadOverThreadsIsTheSameToTheBit) {
  const size_t n = 3 * kParallelFloats + 1234;
  std::vector<float> g0(n), g1(n), w(n);
  for (size_t i = 0; i < n; ++i) {
    g0[i] = std::sin(static_cast<float>(i)) * 1e-2f;
    g1[i] = std::cos(static_cast<float>(i) * 0.7f) * 1e-2f;
    w[i] = 1.0f / static_cast<float>(i % 97 + 1);
  }
  const float* grads[] = {g0.data(), g1.data()};
  for (OptimizerConfig c : {OptimizerConfig{.kind = OptimizerConfig::Kind::kSum, .rescale = 0.5f},
                            OptimizerConfig{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 0.1f, .momentum = 0.9f, .weight_decay = 1e-3f},
                            OptimizerConfig{.kind = OptimizerConfig::Kind::kAdam, .learning_rate = 1e-3f}}) {
    SCOPED_TRACE(OptimizerName(c.kind));
    std::vector<float> one = w, spread = w, next_one(n), next_spread(n);
    OptimizerState s1, s3;
    for (int round = 0; round < 3; ++round) {
      ApplyUpdate(c, one.data(), next_one.data(), grads, n, &s1, 1);
      ApplyUpdate(c, spread.data(), next_spread.data(), grads, n, &s3, 3);
      one.swap(next_one);
      spread.swap(next_spread);
    }
    size_t differ = 0;
    for (size_t i = 0; i < n; ++i) differ += std::bit_cast<uint32_t>(one[i]) != std::bit_cast<uint32_t>(spread[i]);
    EXPECT_EQ(differ, 0u);
    EXPECT_EQ(s1.m, s3.m);
    EXPECT_EQ(s1.v, s3.v);
    EXPECT_EQ(s1.steps, s3.steps);
    EXPECT_NE(one, w) << "the rounds changed the weights";
  }
}

}  // namespace dlagent::ps
