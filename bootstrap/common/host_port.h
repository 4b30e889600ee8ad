#pragma once
// The one parser of "host:port" in the tree (gossip addresses and seeds, dlps servers and listen addresses,
// the config's checks).
//
// Thread safety: functions only.

#include <cstdint>
#include <string>
#include <string_view>

#include "bootstrap/common/status.h"

namespace dlagent {

struct HostPort {
  std::string host;  // a name or an address; brackets of "[::1]:80" removed
  uint16_t port = 0;
};

// InvalidArgument naming the text when it has no colon, an empty host, or a port that is not a number in
// 1..65535 (0 too with allow_port_zero: "pick a free port").
Result<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero = false);

}  // namespace dlagent
