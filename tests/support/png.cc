#include "tests/support/png.h"

#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <unordered_map>
#include <vector>

namespace dlagent::testing {
namespace {

uint32_t Be32(const std::string& b, size_t at) {
  return (uint32_t{static_cast<unsigned char>(b[at])} << 24) | (uint32_t{static_cast<unsigned char>(b[at + 1])} << 16) |
         (uint32_t{static_cast<unsigned char>(b[at + 2])} << 8) | uint32_t{static_cast<unsigned char>(b[at + 3])};
}

Status Bad(const std::string& why) { return Status::InvalidArgument("png", why); }

int Paeth(int a, int b, int c) {
  const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
  return pa <= pb && pa <= pc ? a : (pb <= pc ? b : c);
}

}  // namespace

Result<PngStats> ReadPngStats(const std::string& bytes) {
  if (bytes.size() < 8 || bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return Bad("no PNG signature");
  PngStats s;
  size_t channels = 0;
  std::string idat;
  for (size_t at = 8; at + 12 <= bytes.size();) {
    const uint32_t len = Be32(bytes, at);
    const std::string type = bytes.substr(at + 4, 4);
    if (at + 12 + len > bytes.size()) return Bad("chunk " + type + " runs past the end");
    if (type == "IHDR") {
      if (len < 13) return Bad("short IHDR");
      s.width = Be32(bytes, at + 8);
      s.height = Be32(bytes, at + 12);
      const int depth = static_cast<unsigned char>(bytes[at + 16]), colour = static_cast<unsigned char>(bytes[at + 17]),
                interlace = static_cast<unsigned char>(bytes[at + 20]);
      if (depth != 8 || (colour != 2 && colour != 6) || interlace != 0) return Bad("not 8-bit RGB(A) without interlacing");
      channels = colour == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      idat += bytes.substr(at + 8, len);
    }
    at += 12 + len;
  }
  if (channels == 0 || s.width == 0 || s.height == 0 || s.width * s.height > (size_t{1} << 26)) return Bad("no usable IHDR");
  const size_t stride = s.width * channels;
  std::vector<unsigned char> raw(s.height * (stride + 1));
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK || raw_len != raw.size()) {
    return Bad("the image data does not inflate to " + std::to_string(raw.size()) + " bytes");
  }
  std::vector<unsigned char> prev(stride, 0), cur(stride);
  std::unordered_map<uint32_t, size_t> counts;
  for (size_t y = 0; y < s.height; ++y) {
    const unsigned char* in = &raw[y * (stride + 1)];
    const int filter = in[0];
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= channels ? cur[x - channels] : 0, b = prev[x], c = x >= channels ? prev[x - channels] : 0;
      int v = in[1 + x];
      switch (filter) {
        case 0: break;
        case 1: v += a; break;
        case 2: v += b; break;
        case 3: v += (a + b) / 2; break;
        case 4: v += Paeth(a, b, c); break;
        default: return Bad("row " + std::to_string(y) + " has filter " + std::to_string(filter));
      }
      cur[x] = static_cast<unsigned char>(v);
    }
    for (size_t x = 0; x < stride; x += channels) ++counts[(uint32_t{cur[x]} << 16) | (uint32_t{cur[x + 1]} << 8) | cur[x + 2]];
    prev.swap(cur);
  }
  size_t most = 0;
  for (const auto& [rgb, n] : counts) most = std::max(most, n);
  s.colours = counts.size();
  s.commonest_share = static_cast<double>(most) / static_cast<double>(s.width * s.height);
  return s;
}

}  // namespace dlagent::testing
