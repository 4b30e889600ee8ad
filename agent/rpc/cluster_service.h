#pragma once
// The agent-to-agent gRPC service on the gossip port (TCP): push-pull of the sealed membership state.
//
// Threading: gRPC's threads run the handler, which must be thread-safe (GossipNode::HandlePushPull is).

#include <functional>
#include <memory>
#include <string>

#include "bootstrap/membership/gossip_node.h"

namespace dlagent {

using PushPullHandler = std::function<Result<std::string>(std::string_view sealed_state)>;

class ClusterServer {
 public:
  virtual ~ClusterServer() = default;
  virtual void Shutdown(Duration grace) = 0;
};

// Listens on host:port (TCP). handler must outlive the server.
Result<std::unique_ptr<ClusterServer>> StartClusterServer(const std::string& host, int port, PushPullHandler handler);

// Push-pull over gRPC, with a deadline per exchange; channels are kept per peer.
std::unique_ptr<swim::PushPullTransport> NewGrpcPushPullTransport(Duration deadline = std::chrono::seconds(3));

}  // namespace dlagent
