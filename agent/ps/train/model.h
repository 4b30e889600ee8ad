#pragma once
// dlps-train's models: softmax regression and a one-hidden-layer MLP (ReLU), forward and backward with
// OpenBLAS sgemm, cross-entropy loss.
//
// Thread safety: a Model is read-only during Backprop; a Workspace belongs to one thread.

#include <cstdint>
#include <string>
#include <vector>

namespace dlagent::ps::train {

enum class ModelKind { kSoftmax, kMlp };

struct Model {
  ModelKind kind = ModelKind::kSoftmax;
  size_t features = 0, hidden = 0, classes = 0;
  // softmax: W (features x classes), b (classes); mlp: W1 (features x hidden), b1, W2 (hidden x classes), b2.
  std::vector<std::vector<float>> params;

  // Small random weights from seed (scaled by 1/sqrt(fan-in)), zero biases.
  static Model Create(ModelKind kind, size_t features, size_t hidden, size_t classes, uint64_t seed);
  std::vector<std::string> ParamNames() const;
};

struct Workspace {
  std::vector<float> hidden, logits, dhidden;
};

struct BatchStats {
  double loss = 0;     // summed over the rows
  size_t correct = 0;  // rows whose arg-max is the label
};

// grads (resized to the params' shapes) = d(sum of the rows' losses) / d(params), times scale (1 / the global
// batch, so that the workers' gradients add up to the global batch's mean).
BatchStats Backprop(const Model& m, const float* x, const int32_t* y, size_t rows, float scale, std::vector<std::vector<float>>* grads,
                    Workspace* ws);
// The forward pass only.
BatchStats Evaluate(const Model& m, const float* x, const int32_t* y, size_t rows, Workspace* ws);

}  // namespace dlagent::ps::train
