#pragma once
// The one way the agent's accept loops take a connection (the control socket's and the shard's): both poll
// their listening socket with a wake-up fd and a heartbeat, and then call AcceptOne.
//
// Thread safety: safe to call from any thread.

#include <string>

#include "bootstrap/common/env.h"

namespace dlagent {

// Takes one connection from a non-blocking listening socket: the new fd (close-on-exec, non-blocking), or -1
// when there was none to take. A peer that gave up before it was taken (ECONNABORTED) or a signal is not an
// error. When the process is out of fds or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) it waits `backoff` before
// it returns, so that a loop polling a listening socket that stays readable does not spin; *error (when
// given) then says what happened, for the caller to log.
int AcceptOne(int listen_fd, std::string* error = nullptr, Duration backoff = std::chrono::milliseconds(100));

}  // namespace dlagent
