#pragma once
// Gossip packet protection: AES-256-GCM under the cluster key. A sealed packet is
//   [key id: 1 byte][nonce: 12 bytes][ciphertext][tag: 16 bytes]
// with the cluster name as associated data, so that a packet of another cluster (even one sharing the key)
// fails authentication. The key id lets keys rotate: the primary key seals, every installed key opens.
// A packet that fails authentication is refused before any byte of it is parsed.
//
// Thread safety: a Keyring is immutable after creation; Seal and Open may run concurrently.

#include <cstdint>
#include <map>
#include <string>

#include "bootstrap/common/status.h"

namespace dlagent::swim {

class Keyring {
 public:
  static constexpr size_t kOverhead = 1 + 12 + 16;
  // keys: key id -> 32 raw bytes. InvalidArgument for a wrong key length or a primary not among the keys.
  static Result<Keyring> Create(std::map<uint8_t, std::string> keys, uint8_t primary, std::string cluster);

  std::string Seal(std::string_view plaintext) const;
  // PermissionDenied: unknown key id or failed authentication; InvalidArgument: too short.
  Result<std::string> Open(std::string_view packet) const;

 private:
  std::map<uint8_t, std::string> keys_;
  uint8_t primary_ = 0;
  std::string aad_;
};

}  // namespace dlagent::swim
