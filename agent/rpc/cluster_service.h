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
// Given the sealed request, the sealed roster ("" when there is none).
using FetchRosterHandler = std::function<Result<std::string>(std::string_view sealed_request)>;

// Given a sealed job request, the sealed reply.
using JobHandler = std::function<Result<std::string>(std::string_view sealed_request)>;

struct ClusterHandlers {
  PushPullHandler push_pull;
  FetchRosterHandler fetch_roster;
  JobHandler job;
};

class ClusterServer {
 public:
  virtual ~ClusterServer() = default;
  virtual void Shutdown(Duration grace) = 0;
};

// Listens on host:port (TCP). What the handlers capture must outlive the server.
Result<std::unique_ptr<ClusterServer>> StartClusterServer(const std::string& host, int port, ClusterHandlers handlers);

// The client side: push-pull for gossip, and roster fetches. A deadline per call; channels kept per peer.
class ClusterClient : public swim::PushPullTransport {
 public:
  virtual Result<std::string> FetchRoster(const std::string& addr, const std::string& sealed_request) = 0;
  virtual Result<std::string> Job(const std::string& addr, const std::string& sealed_request) = 0;
};
std::unique_ptr<ClusterClient> NewGrpcClusterClient(Duration deadline = std::chrono::seconds(3));

}  // namespace dlagent
