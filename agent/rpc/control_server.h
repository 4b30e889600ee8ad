#pragma once
// The control socket: gRPC's Control service on a Unix socket that only root and the agent's group may use.
//
// Threading: one accept thread owned by the server polls the listening socket, checks each peer's
// credentials (SO_PEERCRED, SO_PEERGROUPS) and hands accepted connections to gRPC; gRPC's own threads run
// the (non-blocking) handlers. Shutdown() stops both. Thread safety: Shutdown() may be called from any thread,
// once.

#include <memory>
#include <string>

#include "agent/rpc/control_handler.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/heartbeat.h"

namespace dlagent {

struct ControlServerOptions {
  std::string socket_path;               // REQUIRED: an absolute path; its directory is created (0750) if missing.
  std::string group;                     // Default: "" (no group). When the group exists the socket is root:<group> 0660.
  std::shared_ptr<Heartbeat> heartbeat;  // Default: none. Beaten by the accept loop at least once a second.
  // Connections at once of each user other than root and the agent's own user (who are never refused, so
  // that no one can shut them out), and of all such users together. A connection without calls for 60 s is
  // closed; each can make the agent hold at most 8 calls of up to 1 MiB (proto/grpc_limits.h).
  size_t max_connections_per_user = 16;  // Default: 16
  size_t max_connections = 128;          // Default: 128
};

class ControlServer {
 public:
  virtual ~ControlServer() = default;
  // Stops accepting, cancels calls still running after the grace period, removes the socket file.
  virtual void Shutdown(Duration grace) = 0;
};

// Binds and starts serving. Fails with AlreadyExists when another agent is listening on the path, and
// replaces a stale socket file left by a crashed agent. handler must outlive the server.
Result<std::unique_ptr<ControlServer>> StartControlServer(const ControlServerOptions& options, ControlHandler* handler);

}  // namespace dlagent
