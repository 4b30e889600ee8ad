#pragma once
// The one way the agent writes a file: to a temporary file beside the target, fsync, rename over the
// target, fsync the directory. A crash or an error at any step leaves either the old file or the new one,
// never a mix, and no temporary file behind.
//
// Thread safety: safe to call concurrently for different paths; concurrent writers of one path each
// produce a whole file (the last rename wins).

#include <cstdint>
#include <string>
#include <string_view>

#include "bootstrap/common/env.h"

namespace dlagent {

// REQUIRES: the directory of path exists. mode is applied exactly (not masked by the umask).
// Errors name the step and path; on error the previous contents of path are untouched.
Status WriteFileAtomically(Env& env, const std::string& path, std::string_view contents, uint32_t mode = 0644);

}  // namespace dlagent
