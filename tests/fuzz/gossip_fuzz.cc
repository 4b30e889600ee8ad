// libFuzzer target: what a stranger can send to the gossip port before and after authentication: sealed
// packets (opened under a key, with the replay window), and the plaintext decoders (messages, member
// metadata, push-pull states).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bootstrap/membership/messages.h"
#include "bootstrap/membership/packet_crypto.h"
#include "bootstrap/membership/swim.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  static const auto ring = *dlagent::swim::Keyring::Create({{7, std::string(32, 'k')}}, 7, "fuzz");
  static dlagent::swim::ReplayWindow window;
  if (auto opened = ring.Open(bytes); opened.ok()) (void)window.Admit(*opened, dlagent::swim::NowUnixMs());
  (void)dlagent::swim::DecodePacket(bytes);
  (void)dlagent::swim::Decode(bytes);
  (void)dlagent::swim::DecodeMeta(bytes);
  (void)dlagent::swim::DecodeState(bytes, 64);
  return 0;
}
