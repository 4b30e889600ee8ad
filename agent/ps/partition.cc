#include "agent/ps/partition.h"

#include <algorithm>

namespace dlagent::ps {

uint32_t ServerForKey(uint64_t key, uint32_t servers) {
  uint64_t z = key + 0x9e3779b97f4a7c15ULL;  // splitmix64: consecutive keys spread evenly
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return static_cast<uint32_t>((z ^ (z >> 31)) % servers);
}

std::vector<Chunk> PlaceKey(uint64_t key, uint64_t length, uint32_t servers, uint64_t split_floats, uint64_t chunk_floats) {
  std::vector<Chunk> chunks;
  auto add_part = [&](uint32_t server, uint64_t offset, uint64_t part_length) {
    uint64_t done = 0;
    do {  // at least one chunk: an empty tensor is one empty chunk
      const uint64_t n = std::min(chunk_floats, part_length - done);
      chunks.push_back({server, static_cast<uint32_t>(chunks.size()), offset + done, n});
      done += n;
    } while (done < part_length);
  };
  if (length < split_floats || servers == 1) {
    add_part(ServerForKey(key, servers), 0, length);
    return chunks;
  }
  // Even parts; the first length % servers parts take one float more.
  const uint64_t base = length / servers, extra = length % servers;
  uint64_t offset = 0;
  for (uint32_t s = 0; s < servers; ++s) {
    const uint64_t n = base + (s < extra ? 1 : 0);
    if (n > 0) add_part(s, offset, n);
    offset += n;
  }
  return chunks;
}

}  // namespace dlagent::ps
