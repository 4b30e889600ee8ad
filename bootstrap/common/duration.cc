#include "bootstrap/common/duration.h"

#include <cstdio>
#include <limits>

namespace dlagent {

Result<Duration> ParseDuration(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(
        "duration", "\"" + std::string(text) + "\" is not a duration (" + std::string(why) + "); write e.g. \"500ms\", \"30s\", \"5m\" or \"1h30m\"");
  };
  if (text.empty()) return bad("empty");
  using namespace std::chrono;
  Duration total{0};
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] < '0' || text[i] > '9') return bad("expected a number");
    int64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (n > std::numeric_limits<int64_t>::max() / 10 / 1000000000 / 3600) return bad("too large");
      n = n * 10 + (text[i++] - '0');
    }
    size_t unit_start = i;
    while (i < text.size() && (text[i] < '0' || text[i] > '9')) ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    if (unit == "ms")
      total += milliseconds(n);
    else if (unit == "s")
      total += seconds(n);
    else if (unit == "m")
      total += minutes(n);
    else if (unit == "h")
      total += hours(n);
    else if (unit.empty())
      return bad("missing unit");
    else
      return bad("unknown unit \"" + std::string(unit) + "\"");
  }
  return total;
}

std::string FormatDuration(Duration d) {
  using namespace std::chrono;
  char buf[64];
  const bool neg = d.count() < 0;
  if (neg) d = -d;
  const int64_t ms = duration_cast<milliseconds>(d).count();
  const int64_t s = ms / 1000;
  if (s < 1)
    std::snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  else if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s % 86400 / 3600));
  return neg ? "-" + std::string(buf) : std::string(buf);
}

}  // namespace dlagent
