#pragma once
// Gossip packet protection: AES-256-GCM under the cluster key. A sealed packet is
//   [key id: 1 byte][nonce: 12 bytes][ciphertext of (sent at: 8 bytes, Unix ms, little-endian)(payload)][tag: 16 bytes]
// with the cluster name as associated data, so that a packet of another cluster (even one sharing the key)
// fails authentication. The key id lets keys rotate: the primary key seals, every installed key opens.
// A packet that fails authentication is refused before any byte of it is parsed. The time it was sealed at
// and its nonce let a ReplayWindow refuse a captured packet sent again.
//
// Thread safety: a Keyring is immutable after creation; Seal and Open may run concurrently. A ReplayWindow
// is not thread-safe.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <unordered_set>

#include "bootstrap/common/status.h"

namespace dlagent::swim {

class Keyring {
 public:
  static constexpr size_t kOverhead = 1 + 12 + 8 + 16;
  // keys: key id -> 32 raw bytes. InvalidArgument for a wrong key length or a primary not among the keys.
  static Result<Keyring> Create(std::map<uint8_t, std::string> keys, uint8_t primary, std::string cluster);

  struct Opened {
    std::string plaintext;
    int64_t sent_unix_ms = 0;
    std::string nonce;  // 12 bytes, unique per sealed packet
  };
  std::string Seal(std::string_view plaintext, int64_t sent_unix_ms) const;
  // PermissionDenied: unknown key id or failed authentication; InvalidArgument: too short.
  Result<Opened> Open(std::string_view packet) const;

 private:
  std::map<uint8_t, std::string> keys_;
  uint8_t primary_ = 0;
  std::string aad_;
};

// The wall clock in Unix milliseconds, as packets are sealed with.
int64_t NowUnixMs();

// Refuses a packet seen before, and one sealed further than `window` from now either way (so that the nonces
// kept are only a window's worth). Past `capacity` nonces the oldest is forgotten, and packets sealed no later
// than it are refused from then on: a flood can shrink the window, never reopen it.
class ReplayWindow {
 public:
  explicit ReplayWindow(std::chrono::milliseconds window = std::chrono::seconds(60), size_t capacity = size_t{1} << 16)
      : window_ms_(window.count()), capacity_(capacity) {}
  // PermissionDenied names why (replayed, or sealed too long ago or ahead).
  Status Admit(const Keyring::Opened& packet, int64_t now_unix_ms);

 private:
  const int64_t window_ms_;
  const size_t capacity_;
  std::unordered_set<std::string> seen_;
  std::deque<std::pair<int64_t, std::string>> order_;  // (sent at, nonce), by arrival
  int64_t floor_ms_ = INT64_MIN;                       // packets sealed at or before this are refused
};

}  // namespace dlagent::swim
