#include "agent/ps/optimizer.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace dlagent::ps {
namespace {

Status Bad(const std::string& what) { return Status::InvalidArgument("dlps-optimizer", what); }

bool InUnit(float x) { return std::isfinite(x) && x >= 0 && x < 1; }

}  // namespace

std::string OptimizerName(OptimizerConfig::Kind kind) {
  switch (kind) {
    case OptimizerConfig::Kind::kSum: return "sum";
    case OptimizerConfig::Kind::kSgd: return "sgd";
    case OptimizerConfig::Kind::kAdam: return "adam";
  }
  return "?";
}

Result<OptimizerConfig> ResolveOptimizer(const OptimizerSpec& p) {
  OptimizerConfig c;
  if (p.kind == "sum" || p.kind.empty()) {
    c.kind = OptimizerConfig::Kind::kSum;
  } else if (p.kind == "sgd") {
    c.kind = OptimizerConfig::Kind::kSgd;
  } else if (p.kind == "adam") {
    c.kind = OptimizerConfig::Kind::kAdam;
  } else {
    return Bad("unknown optimizer '" + p.kind + "' (sum, sgd or adam)");
  }
  if (p.learning_rate != 0) c.learning_rate = p.learning_rate;
  c.momentum = p.momentum;
  c.weight_decay = p.weight_decay;
  if (p.beta1 != 0) c.beta1 = p.beta1;
  if (p.beta2 != 0) c.beta2 = p.beta2;
  if (p.epsilon != 0) c.epsilon = p.epsilon;
  if (p.rescale != 0) c.rescale = p.rescale;
  if (!std::isfinite(c.learning_rate) || c.learning_rate <= 0) return Bad("learning_rate must be > 0, got " + std::to_string(c.learning_rate));
  if (!InUnit(c.momentum)) return Bad("momentum must be in [0, 1), got " + std::to_string(c.momentum));
  if (!std::isfinite(c.weight_decay) || c.weight_decay < 0) return Bad("weight_decay must be >= 0, got " + std::to_string(c.weight_decay));
  if (!InUnit(c.beta1) || !InUnit(c.beta2)) return Bad("beta1 and beta2 must be in [0, 1)");
  if (!std::isfinite(c.epsilon) || c.epsilon <= 0) return Bad("epsilon must be > 0");
  if (!std::isfinite(c.rescale)) return Bad("rescale must be finite");
  return c;
}

OptimizerSpec SpecOf(const OptimizerConfig& c) {
  return {OptimizerName(c.kind), c.learning_rate, c.momentum, c.weight_decay, c.beta1, c.beta2, c.epsilon, c.rescale};
}

namespace {

// The update of floats [begin, end), with the step's state already sized and counted.
void ApplyRange(const OptimizerConfig& c, const float* w_old, float* w_new, std::span<const float* const> grads, size_t begin, size_t end,
                OptimizerState* state, float adam_lr) {
  constexpr size_t kBlock = 2048;  // 8 KiB: the summed block stays in L1 for the update
  const float rescale = c.rescale, lr = c.learning_rate, wd = c.weight_decay, momentum = c.momentum;
  const float b1 = c.beta1, b2 = c.beta2, eps = c.epsilon;
  alignas(64) float sum[kBlock];
  for (size_t base = begin; base < end; base += kBlock) {
    const size_t len = std::min(kBlock, end - base);
    const float* g = grads[0] + base;
    if (grads.size() > 1) {
      for (size_t i = 0; i < len; ++i) sum[i] = g[i];
      for (size_t r = 1; r < grads.size(); ++r) {
        const float* gr = grads[r] + base;
        for (size_t i = 0; i < len; ++i) sum[i] += gr[i];
      }
      g = sum;
    }
    const float* wo = w_old + base;
    float* wn = w_new + base;
    switch (c.kind) {
      case OptimizerConfig::Kind::kSum:
        for (size_t i = 0; i < len; ++i) wn[i] = rescale * g[i];
        break;
      case OptimizerConfig::Kind::kSgd:
        if (momentum == 0) {
          for (size_t i = 0; i < len; ++i) wn[i] = wo[i] - lr * (rescale * g[i] + wd * wo[i]);
        } else {
          float* m = state->m.data() + base;
          for (size_t i = 0; i < len; ++i) {
            m[i] = momentum * m[i] - lr * (rescale * g[i] + wd * wo[i]);
            wn[i] = wo[i] + m[i];
          }
        }
        break;
      case OptimizerConfig::Kind::kAdam: {
        float* m = state->m.data() + base;
        float* v = state->v.data() + base;
        for (size_t i = 0; i < len; ++i) {
          const float gi = rescale * g[i] + wd * wo[i];
          m[i] = b1 * m[i] + (1 - b1) * gi;
          v[i] = b2 * v[i] + (1 - b2) * gi * gi;
          wn[i] = wo[i] - adam_lr * m[i] / (std::sqrt(v[i]) + eps);
        }
        break;
      }
    }
  }
}

}  // namespace

void ApplyUpdate(const OptimizerConfig& c, const float* w_old, float* w_new, std::span<const float* const> grads, size_t n, OptimizerState* state,
                 unsigned threads) {
  ++state->steps;
  if (c.kind == OptimizerConfig::Kind::kAdam || (c.kind == OptimizerConfig::Kind::kSgd && c.momentum != 0)) state->m.resize(n);
  if (c.kind == OptimizerConfig::Kind::kAdam) state->v.resize(n);
  const double t = static_cast<double>(state->steps);
  const float adam_lr = static_cast<float>(c.learning_rate * std::sqrt(1 - std::pow(double{c.beta2}, t)) / (1 - std::pow(double{c.beta1}, t)));
  const size_t parts = std::clamp<size_t>(std::min<size_t>(threads, n / kParallelFloats), 1, kMaxApplyThreads);
  if (parts == 1) {
    ApplyRange(c, w_old, w_new, grads, 0, n, state, adam_lr);
    return;
  }
  // Contiguous parts, whole blocks of cache lines each; every float gets the same arithmetic in the same order
  // as on one thread, so the result is the same to the bit.
  const size_t part = (n / parts + 1023) / 1024 * 1024;
  std::thread helpers[kMaxApplyThreads - 1];
  for (size_t k = 1; k < parts; ++k) {
    const size_t begin = std::min(n, k * part), end = std::min(n, begin + part);
    helpers[k - 1] = std::thread(ApplyRange, std::cref(c), w_old, w_new, grads, begin, end, state, adam_lr);
  }
  ApplyRange(c, w_old, w_new, grads, 0, std::min(n, part), state, adam_lr);
  for (size_t k = 1; k < parts; ++k) helpers[k - 1].join();
}

}  // namespace dlagent::ps
