#pragma once
// The text of agentd.toml as toml++ may be given it (config.cc parses what this returns).

#include <string>
#include <string_view>

#include "bootstrap/common/status.h"

namespace dlagent {

// What toml++ 3.3 must not be given, refused here with the line and column (found by fuzzing,
// tests/fuzz/config_fuzz.cc): it asserts on a table header whose '[' or '[[' is followed by anything but a
// name (a line "[" alone), and reaches a point it marks unreachable (undefined behaviour) when it tests a
// non-ASCII character for whitespace, which malformed input makes it do anywhere outside a comment. So the
// file is ASCII but for comments, whose non-ASCII bytes are blanked out (they mean nothing, and toml++'s
// line and column numbers stay right); control characters but tab and the line ends are not TOML anywhere.
// A line that starts with '[' outside a string is taken for a header: this configuration has no nested
// arrays to spread over lines. Returns the text to parse.
Result<std::string> PrepareForToml(std::string_view text, const std::string& path);

}  // namespace dlagent
