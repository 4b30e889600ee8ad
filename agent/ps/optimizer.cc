#include "agent/ps/optimizer.h"

#include <cblas.h>

#include <cmath>

#include "proto/dlps.pb.h"

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

Result<OptimizerConfig> OptimizerFromProto(const dlps::v1::Optimizer& p) {
  OptimizerConfig c;
  if (p.kind() == "sum" || p.kind().empty()) {
    c.kind = OptimizerConfig::Kind::kSum;
  } else if (p.kind() == "sgd") {
    c.kind = OptimizerConfig::Kind::kSgd;
  } else if (p.kind() == "adam") {
    c.kind = OptimizerConfig::Kind::kAdam;
  } else {
    return Bad("unknown optimizer '" + p.kind() + "' (sum, sgd or adam)");
  }
  if (p.learning_rate() != 0) c.learning_rate = p.learning_rate();
  c.momentum = p.momentum();
  c.weight_decay = p.weight_decay();
  if (p.beta1() != 0) c.beta1 = p.beta1();
  if (p.beta2() != 0) c.beta2 = p.beta2();
  if (p.epsilon() != 0) c.epsilon = p.epsilon();
  if (p.rescale() != 0) c.rescale = p.rescale();
  if (!std::isfinite(c.learning_rate) || c.learning_rate <= 0) return Bad("learning_rate must be > 0, got " + std::to_string(c.learning_rate));
  if (!InUnit(c.momentum)) return Bad("momentum must be in [0, 1), got " + std::to_string(c.momentum));
  if (!std::isfinite(c.weight_decay) || c.weight_decay < 0) return Bad("weight_decay must be >= 0, got " + std::to_string(c.weight_decay));
  if (!InUnit(c.beta1) || !InUnit(c.beta2)) return Bad("beta1 and beta2 must be in [0, 1)");
  if (!std::isfinite(c.epsilon) || c.epsilon <= 0) return Bad("epsilon must be > 0");
  if (!std::isfinite(c.rescale)) return Bad("rescale must be finite");
  return c;
}

void OptimizerToProto(const OptimizerConfig& c, dlps::v1::Optimizer* p) {
  p->set_kind(OptimizerName(c.kind));
  p->set_learning_rate(c.learning_rate);
  p->set_momentum(c.momentum);
  p->set_weight_decay(c.weight_decay);
  p->set_beta1(c.beta1);
  p->set_beta2(c.beta2);
  p->set_epsilon(c.epsilon);
  p->set_rescale(c.rescale);
}

void ApplyUpdate(const OptimizerConfig& c, float* w, float* grad, size_t n, OptimizerState* state) {
  const auto len = static_cast<blasint>(n);  // chunks are at most a few million floats
  ++state->steps;
  switch (c.kind) {
    case OptimizerConfig::Kind::kSum:
      if (c.rescale != 1) cblas_sscal(len, c.rescale, grad, 1);
      cblas_scopy(len, grad, 1, w, 1);
      return;
    case OptimizerConfig::Kind::kSgd:
      if (c.momentum == 0) {
        // w = (1 - lr wd) w - lr rescale grad
        if (c.weight_decay != 0) cblas_sscal(len, 1 - c.learning_rate * c.weight_decay, w, 1);
        cblas_saxpy(len, -c.learning_rate * c.rescale, grad, 1, w, 1);
        return;
      }
      state->m.resize(n);
      for (size_t i = 0; i < n; ++i) {  // one pass over w, grad and m
        const float g = c.rescale * grad[i] + c.weight_decay * w[i];
        state->m[i] = c.momentum * state->m[i] - c.learning_rate * g;
        w[i] += state->m[i];
      }
      return;
    case OptimizerConfig::Kind::kAdam: {
      state->m.resize(n);
      state->v.resize(n);
      const double t = static_cast<double>(state->steps);
      const float lr_t = static_cast<float>(c.learning_rate * std::sqrt(1 - std::pow(double{c.beta2}, t)) /
                                            (1 - std::pow(double{c.beta1}, t)));
      float* m = state->m.data();
      float* v = state->v.data();
      for (size_t i = 0; i < n; ++i) {
        const float g = c.rescale * grad[i] + c.weight_decay * w[i];
        m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
        v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
        w[i] -= lr_t * m[i] / (std::sqrt(v[i]) + c.epsilon);
      }
      return;
    }
  }
}

}  // namespace dlagent::ps
