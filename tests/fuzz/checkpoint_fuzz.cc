// libFuzzer target: checkpoint files on shared storage, which users can write: a shard's file (slices, their
// values and SHA-256) and the manifest that names every server's file.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agent/ps/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (auto slices = dlagent::ps::DecodeShardFile(bytes, "fuzz.shard"); slices.ok()) {
    // A file that decodes encodes back to the same slices.
    auto again = dlagent::ps::DecodeShardFile(dlagent::ps::EncodeShardFile(*slices), "fuzz.shard");
    if (!again.ok() || again->size() != slices->size()) __builtin_trap();
  }
  const uint32_t count = size > 0 ? 1 + data[0] % 4 : 1;
  for (uint32_t i = 0; i < count; ++i) (void)dlagent::ps::ManifestEntry(bytes, "fuzz manifest", i, count);
  return 0;
}
