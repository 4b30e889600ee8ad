#include "agent/ps/train/data.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

namespace dlagent::ps::train {

Dataset Synthetic(uint64_t seed, size_t rows, size_t features, size_t classes) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> teacher(features * classes);
  for (float& t : teacher) t = normal(rng);
  Dataset d;
  d.features = features;
  d.classes = classes;
  d.x.resize(rows * features);
  d.y.resize(rows);
  std::vector<float> score(classes);
  for (size_t r = 0; r < rows; ++r) {
    float* row = &d.x[r * features];
    for (size_t f = 0; f < features; ++f) row[f] = normal(rng);
    for (size_t c = 0; c < classes; ++c) {
      score[c] = 0.2f * normal(rng) * std::sqrt(static_cast<float>(features));
      for (size_t f = 0; f < features; ++f) score[c] += row[f] * teacher[f * classes + c];
    }
    d.y[r] = static_cast<int32_t>(std::max_element(score.begin(), score.end()) - score.begin());
  }
  return d;
}

Result<Dataset> LoadLibsvm(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("dlps-train", "cannot open " + path + ": " + std::strerror(errno));
  struct Row {
    long label;
    std::vector<std::pair<size_t, float>> values;
  };
  std::vector<Row> rows;
  size_t features = 0;
  std::string line;
  for (size_t lineno = 1; std::getline(in, line); ++lineno) {
    const auto bad = [&](const std::string& what) {
      return Status::InvalidArgument("dlps-train", path + ":" + std::to_string(lineno) + ": " + what);
    };
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ss(line);
    std::string token;
    ss >> token;
    char* end = nullptr;
    Row row;
    const double label = std::strtod(token.c_str(), &end);
    if (*end != '\0' || label != static_cast<double>(static_cast<long>(label))) return bad("the label '" + token + "' is not an integer");
    row.label = static_cast<long>(label);
    while (ss >> token) {
      const size_t colon = token.find(':');
      if (colon == std::string::npos) return bad("'" + token + "' is not index:value");
      const unsigned long index = std::strtoul(token.c_str(), &end, 10);
      if (end != token.c_str() + colon || index == 0 || index > (1u << 24)) return bad("'" + token + "': the index must be 1..16777216");
      const float value = std::strtof(token.c_str() + colon + 1, &end);
      if (*end != '\0' || colon + 1 == token.size()) return bad("'" + token + "': the value is not a number");
      row.values.emplace_back(index - 1, value);
      features = std::max<size_t>(features, index);
    }
    rows.push_back(std::move(row));
  }
  if (rows.empty()) return Status::InvalidArgument("dlps-train", path + " has no samples");
  std::map<long, int32_t> labels;
  for (const Row& r : rows) labels[r.label] = 0;
  if (labels.size() < 2) return Status::InvalidArgument("dlps-train", path + " has only one class");
  int32_t next = 0;
  for (auto& [label, index] : labels) index = next++;
  Dataset d;
  d.features = features;
  d.classes = labels.size();
  d.x.assign(rows.size() * features, 0.0f);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (auto [f, v] : rows[i].values) d.x[i * features + f] = v;
    d.y.push_back(labels[rows[i].label]);
  }
  return d;
}

}  // namespace dlagent::ps::train
