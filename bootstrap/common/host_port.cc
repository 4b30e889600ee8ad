#include "bootstrap/common/host_port.h"

namespace dlagent {

Result<HostPort> ParseHostPort(std::string_view text, bool allow_port_zero) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument("address", "\"" + std::string(text) + "\" is not host:port (" + std::string(why) + ")");
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return bad("no port");
  HostPort out;
  out.host = std::string(text.substr(0, colon));
  if (out.host.size() >= 2 && out.host.front() == '[' && out.host.back() == ']') out.host = out.host.substr(1, out.host.size() - 2);
  if (out.host.empty()) return bad("no host");
  const std::string_view port = text.substr(colon + 1);
  uint32_t n = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || n > 65535) return bad("the port must be a number 1-65535");
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port.empty() || n > 65535 || (n == 0 && !allow_port_zero)) return bad("the port must be a number 1-65535");
  out.port = static_cast<uint16_t>(n);
  return out;
}

}  // namespace dlagent
