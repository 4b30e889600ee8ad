#pragma once
// The agent-to-agent gRPC service on the gossip port (TCP), and its client. Three calls, each carrying bytes
// sealed with the cluster key (this layer neither seals nor opens them): push-pull of the membership state
// (gossip's anti-entropy), roster fetches (a node that lags fetches the sealed roster from one that announces
// it), and job calls (the coordinator's prepare, start, signal and status on every node, docs/jobs.md).
//
// Threading: gRPC's threads run the handlers, concurrently; each handler must be thread-safe
// (GossipNode::HandlePushPull, the formation's roster fetch and the jobs' handler are). The client is
// thread-safe.

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

// Listens on host:port (TCP). What the handlers capture must outlive the server (until Shutdown returns).
Result<std::unique_ptr<ClusterServer>> StartClusterServer(const std::string& host, int port, ClusterHandlers handlers);

// The client side of the three calls. Each call has the deadline given at construction (Default: 3 s);
// channels are kept per peer address.
class ClusterClient : public swim::PushPullTransport {
 public:
  virtual Result<std::string> FetchRoster(const std::string& addr, const std::string& sealed_request) = 0;
  virtual Result<std::string> Job(const std::string& addr, const std::string& sealed_request) = 0;
};
std::unique_ptr<ClusterClient> NewGrpcClusterClient(Duration deadline = std::chrono::seconds(3));

}  // namespace dlagent
