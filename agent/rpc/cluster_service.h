#pragma once
// The agent-to-agent gRPC service on the gossip port (TCP), and its client. Three calls, each carrying bytes
// sealed with the cluster key (this layer neither seals nor opens them): push-pull of the membership state
// (gossip's anti-entropy), roster fetches (a node that lags fetches the sealed roster from one that announces
// it), and job calls (the coordinator's prepare, start, signal and status on every node, docs/jobs.md).
//
// Every connection starts with a proof that the caller holds the cluster key: before HTTP/2's preface, a
// preamble sealed with the keyring ("DLAC", a 2-byte length, then a sealed, fresh, never replayed packet).
// The server reads it on its own accept thread, within 2 s, and closes a connection without it before gRPC
// sees a byte: only holders of the key can make the agent hold anything for them (gRPC 1.51 bounds neither
// connections nor, before the peer acknowledges its settings, the calls on one).
//
// Threading: gRPC's threads run the handlers, concurrently; each handler must be thread-safe
// (GossipNode::HandlePushPull, the formation's roster fetch and the jobs' handler are). The client is
// thread-safe.

#include <functional>
#include <memory>
#include <string>

#include "bootstrap/membership/gossip_node.h"
#include "bootstrap/membership/packet_crypto.h"

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

// How many connections the cluster port takes (the file descriptors they cost).
struct ClusterServerLimits {
  size_t max_connections = 1024;  // Default: 1,024 proven connections at once; a connection idle 5 min is closed
  size_t max_unproven = 64;       // Default: 64 connections whose preamble has not come yet; past it the oldest goes
};

// The keyring that proves connections now (null: none is asked for, or sent). Thread-safe.
using ConnectionKeyring = std::function<std::shared_ptr<const swim::Keyring>()>;

// Listens on host:port (TCP, IPv4). What the handlers and `keys` capture must outlive the server (until
// Shutdown returns). With `keys`, a connection must open with a preamble sealed by one of its keys; without,
// none is asked for (tests). A connection refused, or past a limit, is closed at once (one log line a second
// says so); the peer's call fails and is retried as any failed call is.
Result<std::unique_ptr<ClusterServer>> StartClusterServer(const std::string& host, int port, ClusterHandlers handlers,
                                                          ConnectionKeyring keys = nullptr, const ClusterServerLimits& limits = {});

// The client side of the three calls. Each call has the deadline given at construction (Default: 3 s);
// channels are kept per peer address.
class ClusterClient : public swim::PushPullTransport {
 public:
  virtual Result<std::string> FetchRoster(const std::string& addr, const std::string& sealed_request) = 0;
  virtual Result<std::string> Job(const std::string& addr, const std::string& sealed_request) = 0;
  // The keyring whose primary key seals the preamble of each new connection (null: no preamble).
  virtual void SetKeyring(std::shared_ptr<const swim::Keyring> keyring) = 0;
};
std::unique_ptr<ClusterClient> NewGrpcClusterClient(Duration deadline = std::chrono::seconds(3));

}  // namespace dlagent
