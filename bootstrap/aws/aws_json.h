#pragma once
// Safe JSON for answers from AWS services and emulators: size and depth bounded, never throws.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "bootstrap/common/env.h"

namespace dlagent {

// Parses text that must hold one JSON object (at most max_bytes, nesting at most 32 deep, valid UTF-8).
// InvalidArgument names `what` and the problem.
Result<nlohmann::json> ParseJsonObject(std::string_view text, std::string_view component, std::string_view what, size_t max_bytes = 1 << 20);

// The string member `key` of obj: "" when absent and not required; InvalidArgument when required and
// absent, or present with another type.
Result<std::string> JsonString(const nlohmann::json& obj, const char* key, bool required, std::string_view component, std::string_view what);

// "2026-11-22T10:00:00Z", with optional fractional seconds and a Z or +hh:mm / -hh:mm offset.
Result<WallTime> ParseIso8601(std::string_view text);
std::string FormatIso8601(WallTime t);
// t in UTC through strftime's format (whole seconds).
std::string FormatUtc(WallTime t, const char* strftime_format);

}  // namespace dlagent
