#pragma once
// The sd_notify protocol (READY=1, STATUS=, WATCHDOG=1, RELOADING=1, STOPPING=1). Every call is a no-op
// when NOTIFY_SOCKET is unset, so the daemon runs the same outside systemd.
//
// Thread safety: all methods are thread-safe.

#include <optional>
#include <string_view>

#include "bootstrap/common/env.h"

namespace dlagent {

class SystemdNotifier {
 public:
  void Ready(std::string_view status);
  void Status(std::string_view status);
  void Reloading();
  void Stopping();
  void Watchdog();
  // Half of WATCHDOG_USEC when systemd asked for a watchdog for this process, else nullopt.
  static std::optional<Duration> WatchdogInterval();
};

}  // namespace dlagent
