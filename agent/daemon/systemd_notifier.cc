#include "agent/daemon/systemd_notifier.h"

#include <systemd/sd-daemon.h>

#include <string>

namespace dlagent {
namespace {
void Send(const std::string& msg) { sd_notify(0, msg.c_str()); }
}  // namespace

void SystemdNotifier::Ready(std::string_view status) { Send("READY=1\nSTATUS=" + std::string(status)); }
void SystemdNotifier::Status(std::string_view status) { Send("STATUS=" + std::string(status)); }
void SystemdNotifier::Reloading() { Send("RELOADING=1\nSTATUS=reloading configuration"); }
void SystemdNotifier::Stopping() { Send("STOPPING=1\nSTATUS=stopping"); }
void SystemdNotifier::Watchdog() { Send("WATCHDOG=1"); }

std::optional<Duration> SystemdNotifier::WatchdogInterval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec / 2);
}

}  // namespace dlagent
