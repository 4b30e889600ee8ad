#pragma once
// dlps-train's data: a dense classification set, generated from a seed or read from a LIBSVM file.
//
// Thread safety: values.

#include <cstdint>
#include <string>
#include <vector>

#include "bootstrap/common/status.h"

namespace dlagent::ps::train {

struct Dataset {
  size_t features = 0;
  size_t classes = 0;
  std::vector<float> x;    // rows x features, row-major
  std::vector<int32_t> y;  // rows labels in [0, classes)
  size_t rows() const { return y.size(); }
};

// rows samples of `features` standard-normal features, labelled by a random linear teacher plus noise (so
// that a linear model reaches high but not perfect accuracy). The same seed gives the same set everywhere.
Dataset Synthetic(uint64_t seed, size_t rows, size_t features, size_t classes);

// LIBSVM text: "label index:value ..." per line, indices from 1; features = the largest index; labels (any
// integers) are numbered by their sorted order. Errors name the file and line.
Result<Dataset> LoadLibsvm(const std::string& path);

}  // namespace dlagent::ps::train
