#pragma once
// Reads a PNG's pixels far enough to tell a blank screenshot from a page (8-bit RGB or RGBA, not interlaced:
// what Chromium writes). Tests only.

#include <cstddef>
#include <string>

#include "bootstrap/common/status.h"

namespace dlagent::testing {

struct PngStats {
  size_t width = 0, height = 0;
  size_t colours = 0;          // distinct RGB values
  double commonest_share = 1;  // the share of pixels of the commonest colour (1: one colour)
};

// InvalidArgument names what is not a PNG it can read.
Result<PngStats> ReadPngStats(const std::string& bytes);

}  // namespace dlagent::testing
