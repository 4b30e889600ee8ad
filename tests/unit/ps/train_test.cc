#include <cmath>
#include <fstream>

#include <gtest/gtest.h>

#include "agent/ps/train/data.h"
#include "agent/ps/train/model.h"
#include "tests/support/temp_dir.h"

namespace dlagent::ps::train {
namespace {

// The loss summed over the rows, from the forward pass.
double Loss(const Model& m, const Dataset& d) {
  Workspace ws;
  return Evaluate(m, d.x.data(), d.y.data(), d.rows(), &ws).loss;
}

// Backprop's gradient against central differences of the loss, for every parameter of a small model.
void CheckGradients(ModelKind kind) {
  const Dataset d = Synthetic(3, 8, 5, 4);
  Model m = Model::Create(kind, d.features, 6, d.classes, 13);
  for (auto& p : m.params) {
    for (float& x : p) x += 0.05f;  // biases off zero, so that they matter
  }
  const float h = 1e-3f;
  if (kind == ModelKind::kMlp) {
    // Differences across a ReLU's kink are not derivatives: every hidden pre-activation must be far from 0.
    double margin = 1e9;
    for (size_t r = 0; r < d.rows(); ++r) {
      for (size_t u = 0; u < m.hidden; ++u) {
        double pre = m.params[1][u];
        for (size_t f = 0; f < d.features; ++f) pre += d.x[r * d.features + f] * m.params[0][f * m.hidden + u];
        margin = std::min(margin, std::fabs(pre));
      }
    }
    ASSERT_GT(margin, 50 * h) << "pick another seed";
  }
  std::vector<std::vector<float>> grads;
  Workspace ws;
  Backprop(m, d.x.data(), d.y.data(), d.rows(), 1.0f, &grads, &ws);
  for (size_t i = 0; i < m.params.size(); ++i) {
    for (size_t j = 0; j < m.params[i].size(); ++j) {
      const float keep = m.params[i][j];
      m.params[i][j] = keep + h;
      const double up = Loss(m, d);
      m.params[i][j] = keep - h;
      const double down = Loss(m, d);
      m.params[i][j] = keep;
      const double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grads[i][j], numeric, 2e-3 + 2e-2 * std::fabs(numeric)) << m.ParamNames()[i] << "[" << j << "]";
    }
  }
}

TEST(TrainModelTest, SoftmaxGradientsMatchFiniteDifferences) { CheckGradients(ModelKind::kSoftmax); }
TEST(TrainModelTest, MlpGradientsMatchFiniteDifferences) { CheckGradients(ModelKind::kMlp); }

TEST(TrainModelTest, ScaleMultipliesTheGradient) {
  const Dataset d = Synthetic(3, 8, 5, 4);
  const Model m = Model::Create(ModelKind::kSoftmax, d.features, 0, d.classes, 1);
  std::vector<std::vector<float>> one, quarter;
  Workspace ws;
  Backprop(m, d.x.data(), d.y.data(), d.rows(), 1.0f, &one, &ws);
  Backprop(m, d.x.data(), d.y.data(), d.rows(), 0.25f, &quarter, &ws);
  for (size_t j = 0; j < one[0].size(); ++j) EXPECT_FLOAT_EQ(quarter[0][j], 0.25f * one[0][j]);
}

TEST(TrainDataTest, SyntheticIsTheSameForTheSameSeedAndUsesEveryClass) {
  const Dataset a = Synthetic(7, 500, 10, 3), b = Synthetic(7, 500, 10, 3), c = Synthetic(8, 500, 10, 3);
  EXPECT_EQ(a.x, b.x);
  EXPECT_EQ(a.y, b.y);
  EXPECT_NE(a.x, c.x);
  for (int32_t k = 0; k < 3; ++k) EXPECT_NE(std::count(a.y.begin(), a.y.end(), k), 0) << "class " << k;
}

TEST(TrainDataTest, ReadsLibsvmAndNamesTheLineOfAnError) {
  testing::TempDir dir;
  const std::string good = dir.Join("good.svm");
  std::ofstream(good) << "# a comment\n+1 1:0.5 3:2\n-1 2:1.5\n\n+1 3:-1\n";
  Result<Dataset> d = LoadLibsvm(good);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->features, 3u);
  EXPECT_EQ(d->classes, 2u);
  EXPECT_EQ(d->y, (std::vector<int32_t>{1, 0, 1}));
  EXPECT_EQ(d->x, (std::vector<float>{0.5f, 0, 2, 0, 1.5f, 0, 0, 0, -1}));

  const std::pair<std::string, std::string> bad[] = {
      {"1 1:0.5\nx 2:1\n", ":2: the label 'x' is not an integer"},
      {"1 1:0.5\n2 0:1\n", ":2: '0:1': the index must be 1..16777216"},
      {"1 1:0.5\n2 3\n", ":2: '3' is not index:value"},
      {"1 1:0.5\n2 3:abc\n", ":2: '3:abc': the value is not a number"},
      {"1 1:0.5\n1 2:1\n", "has only one class"},
  };
  for (const auto& [text, error] : bad) {
    const std::string path = dir.Join("bad.svm");
    std::ofstream(path) << text;
    Result<Dataset> r = LoadLibsvm(path);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.status().ToString().find(error), std::string::npos) << r.status().ToString();
  }
  EXPECT_EQ(LoadLibsvm(dir.Join("missing.svm")).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace dlagent::ps::train
