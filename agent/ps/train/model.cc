#include "agent/ps/train/model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <random>

namespace dlagent::ps::train {
namespace {

void Fill(std::vector<float>& v, size_t fan_in, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f / std::sqrt(static_cast<float>(fan_in)));
  for (float& x : v) x = normal(rng);
}

// out (rows x n) = a (rows x k) * b (k x n) + bias, broadcast over the rows.
void Affine(const float* a, const float* b, const float* bias, float* out, size_t rows, size_t k, size_t n) {
  for (size_t r = 0; r < rows; ++r) std::copy(bias, bias + n, out + r * n);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows), static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a,
              static_cast<blasint>(k), b, static_cast<blasint>(n), 1.0f, out, static_cast<blasint>(n));
}

// Runs the forward pass into ws; returns the loss and hits, and if dlogits, turns ws->logits into
// d(loss)/d(logits) * scale.
BatchStats Forward(const Model& m, const float* x, const int32_t* y, size_t rows, Workspace* ws, bool dlogits, float scale) {
  const size_t c = m.classes;
  ws->logits.resize(rows * c);
  if (m.kind == ModelKind::kSoftmax) {
    Affine(x, m.params[0].data(), m.params[1].data(), ws->logits.data(), rows, m.features, c);
  } else {
    ws->hidden.resize(rows * m.hidden);
    Affine(x, m.params[0].data(), m.params[1].data(), ws->hidden.data(), rows, m.features, m.hidden);
    for (float& h : ws->hidden) h = std::max(h, 0.0f);
    Affine(ws->hidden.data(), m.params[2].data(), m.params[3].data(), ws->logits.data(), rows, m.hidden, c);
  }
  BatchStats stats;
  for (size_t r = 0; r < rows; ++r) {
    float* z = &ws->logits[r * c];
    const float top = *std::max_element(z, z + c);
    if (z[y[r]] == top) ++stats.correct;
    double sum = 0;
    for (size_t k = 0; k < c; ++k) sum += std::exp(static_cast<double>(z[k] - top));
    stats.loss += std::log(sum) - (z[y[r]] - top);
    if (dlogits) {
      for (size_t k = 0; k < c; ++k) z[k] = static_cast<float>(std::exp(static_cast<double>(z[k] - top)) / sum) * scale;
      z[y[r]] -= scale;
    }
  }
  return stats;
}

// grad_w (k x n) = a^T (rows x k)^T * d (rows x n); grad_b = column sums of d.
void AffineBackward(const float* a, const float* d, float* grad_w, float* grad_b, size_t rows, size_t k, size_t n) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<blasint>(k), static_cast<blasint>(n), static_cast<blasint>(rows), 1.0f, a,
              static_cast<blasint>(k), d, static_cast<blasint>(n), 0.0f, grad_w, static_cast<blasint>(n));
  std::fill(grad_b, grad_b + n, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < n; ++j) grad_b[j] += d[r * n + j];
  }
}

}  // namespace

Model Model::Create(ModelKind kind, size_t features, size_t hidden, size_t classes, uint64_t seed) {
  Model m;
  m.kind = kind;
  m.features = features;
  m.hidden = kind == ModelKind::kMlp ? hidden : 0;
  m.classes = classes;
  std::mt19937_64 rng(seed);
  if (kind == ModelKind::kSoftmax) {
    m.params = {std::vector<float>(features * classes), std::vector<float>(classes, 0.0f)};
    Fill(m.params[0], features, rng);
  } else {
    m.params = {std::vector<float>(features * hidden), std::vector<float>(hidden, 0.0f), std::vector<float>(hidden * classes),
                std::vector<float>(classes, 0.0f)};
    Fill(m.params[0], features, rng);
    Fill(m.params[2], hidden, rng);
  }
  return m;
}

std::vector<std::string> Model::ParamNames() const {
  if (kind == ModelKind::kSoftmax) return {"W", "b"};
  return {"W1", "b1", "W2", "b2"};
}

BatchStats Backprop(const Model& m, const float* x, const int32_t* y, size_t rows, float scale, std::vector<std::vector<float>>* grads,
                    Workspace* ws) {
  grads->resize(m.params.size());
  for (size_t i = 0; i < m.params.size(); ++i) (*grads)[i].resize(m.params[i].size());
  BatchStats stats = Forward(m, x, y, rows, ws, /*dlogits=*/true, scale);
  auto& g = *grads;
  if (m.kind == ModelKind::kSoftmax) {
    AffineBackward(x, ws->logits.data(), g[0].data(), g[1].data(), rows, m.features, m.classes);
    return stats;
  }
  AffineBackward(ws->hidden.data(), ws->logits.data(), g[2].data(), g[3].data(), rows, m.hidden, m.classes);
  // d(hidden) = d(logits) * W2^T, through the ReLU.
  ws->dhidden.resize(rows * m.hidden);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(rows), static_cast<blasint>(m.hidden), static_cast<blasint>(m.classes),
              1.0f, ws->logits.data(), static_cast<blasint>(m.classes), m.params[2].data(), static_cast<blasint>(m.classes), 0.0f, ws->dhidden.data(),
              static_cast<blasint>(m.hidden));
  for (size_t i = 0; i < ws->dhidden.size(); ++i) {
    if (ws->hidden[i] <= 0) ws->dhidden[i] = 0;
  }
  AffineBackward(x, ws->dhidden.data(), g[0].data(), g[1].data(), rows, m.features, m.hidden);
  return stats;
}

BatchStats Evaluate(const Model& m, const float* x, const int32_t* y, size_t rows, Workspace* ws) {
  return Forward(m, x, y, rows, ws, /*dlogits=*/false, 1.0f);
}

}  // namespace dlagent::ps::train
