#pragma once
// Human durations: "500ms", "90s", "5m", "1h30m" in config files, "4m12s" in status lines.

#include <string>
#include <string_view>

#include "bootstrap/common/env.h"

namespace dlagent {

// Accepts one or more <integer><unit> groups, units ms, s, m, h (e.g. "1h30m", "250ms").
// InvalidArgument names the text and the accepted form.
Result<Duration> ParseDuration(std::string_view text);

// Rounds to the most useful units: "850ms", "12s", "4m12s", "3h05m", "2d04h".
std::string FormatDuration(Duration d);

}  // namespace dlagent
