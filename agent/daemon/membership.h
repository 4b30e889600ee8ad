#pragma once
// Membership: the daemon's gossip — the cluster key, the GossipNode, and the cluster gRPC service on the
// gossip port — built from [gossip] in the config. Off when gossip.key_file is empty.
//
// Thread safety: Members() may be called from any thread; Start/Leave from the main thread.

#include <memory>

#include "agent/daemon/config.h"
#include "agent/rpc/cluster_service.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/membership/gossip_node.h"

namespace dlagent {

// Reads a cluster key file: 64 hex characters (openssl rand -hex 32), surrounding whitespace ignored.
Result<std::string> LoadClusterKey(Env& env, const std::string& path);

class Membership {
 public:
  // Starts gossip when configured; returns nullptr (and OK) when gossip is off.
  static Result<std::unique_ptr<Membership>> Start(Env& env, const Config& config);
  ~Membership();

  // Gossips a graceful leave, then stops.
  void Leave();
  MemberListSnapshot Members();
  const std::string& address() const { return node_->advertise_addr(); }

 private:
  Membership() = default;
  std::unique_ptr<swim::PushPullTransport> transport_;
  std::unique_ptr<swim::GossipNode> node_;
  std::unique_ptr<ClusterServer> server_;
};

}  // namespace dlagent
