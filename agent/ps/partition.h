#pragma once
// Where the pieces of a key's tensor live. A tensor of at least split_floats is cut into one contiguous part
// per server (load balance, as BytePS and ps-lite do); a smaller one goes whole to one server chosen by a hash
// of the key. Every part is then cut into chunks of at most chunk_floats, the unit of a message and of a
// sync round on the server. Chunks are numbered from 0 in tensor order. Every worker computes the same
// placement from the same arguments.
//
// Thread safety: pure functions.

#include <cstdint>
#include <vector>

namespace dlagent::ps {

struct Chunk {
  uint32_t server = 0;
  uint32_t index = 0;   // the chunk number within the key
  uint64_t offset = 0;  // in floats, within the tensor
  uint64_t length = 0;  // in floats
};

inline constexpr uint64_t kDefaultSplitFloats = uint64_t{1} << 18;  // 1 MiB: below it a tensor stays whole
inline constexpr uint64_t kDefaultChunkFloats = uint64_t{1} << 18;  // 1 MiB per message: replies start sooner (docs/ps.md)

// REQUIRES: servers > 0, chunk_floats > 0.
std::vector<Chunk> PlaceKey(uint64_t key, uint64_t length, uint32_t servers, uint64_t split_floats = kDefaultSplitFloats,
                            uint64_t chunk_floats = kDefaultChunkFloats);

// The server that holds a small key (a stable 64-bit mix of the key, modulo servers).
uint32_t ServerForKey(uint64_t key, uint32_t servers);

}  // namespace dlagent::ps
