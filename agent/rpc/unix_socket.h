#pragma once
// Small helpers for Unix stream sockets, shared by the control server and agentctl.

#include <string>

#include "bootstrap/common/status.h"

namespace dlagent {

// Connects to path and returns the connected fd (caller closes). NotFound: no socket file; PermissionDenied:
// the file or its directory is not accessible to this user; Unavailable: nobody is listening (stale file).
Result<int> ConnectUnixSocket(const std::string& path);

}  // namespace dlagent
