// libFuzzer target: what anyone who can write to the discovery queue or answer a roster fetch can send: HELLO
// bodies (checked against a key) and roster JSON.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "bootstrap/discovery/hello.h"
#include "bootstrap/node/roster.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)dlagent::VerifyHello(text, std::string(32, 'k'), "fuzz", std::chrono::system_clock::now());
  if (auto roster = dlagent::ParseRosterJson(text); roster.ok()) (void)dlagent::CheckRosterNodes(roster->nodes);
  return 0;
}
