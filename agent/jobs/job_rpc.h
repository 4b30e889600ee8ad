#pragma once
// The jobs RPC between agents, sealed with the cluster keyring in both directions: a request is opened (an
// agent without the key can neither read nor forge one), must be sealed within the last 60 s and never seen
// before (a ReplayWindow); the reply is sealed to the request's nonce, so that a recorded reply cannot answer
// another request. Every refused call is counted and logged (at most one line a second).
//
// Thread safety: every method may be called from any thread.

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "agent/jobs/coordinator.h"
#include "agent/jobs/node_jobs.h"
#include "agent/rpc/cluster_service.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

using KeyringFn = std::function<std::shared_ptr<const swim::Keyring>()>;

// This node's answers: NodeJobs for its ranks, the coordinator for the jobs started here (and the parts other
// nodes push to it).
class NodeEndpoint {
 public:
  // coordinator may be null (set later with SetCoordinator, before any call can need it).
  using HealthFn = std::function<pb::HealthReply(const pb::HealthRequest&)>;
  NodeEndpoint(NodeJobs& local, Coordinator* coordinator, HealthFn health = nullptr)
      : local_(local), coordinator_(coordinator), health_(std::move(health)) {}
  void SetCoordinator(Coordinator* c) { coordinator_ = c; }
  pb::NodeReply Dispatch(const pb::NodeRequest& req);

 private:
  NodeJobs& local_;
  std::atomic<Coordinator*> coordinator_;
  const HealthFn health_;
};

class JobRpcServer {
 public:
  JobRpcServer(KeyringFn keyring, NodeEndpoint& endpoint) : keyring_(std::move(keyring)), endpoint_(endpoint) {}
  // The cluster service's Job handler.
  Result<std::string> Handle(std::string_view sealed);
  uint64_t refused() const { return refused_.load(); }

 private:
  KeyringFn keyring_;
  NodeEndpoint& endpoint_;
  Mutex mu_;
  swim::ReplayWindow window_ GUARDED_BY(mu_);
  std::atomic<uint64_t> refused_{0};
  std::atomic<int64_t> last_warned_ms_{0};
};

// Calls another node's JobRpcServer.
Result<pb::NodeReply> CallNode(ClusterClient& client, const swim::Keyring& keyring, const std::string& addr, const pb::NodeRequest& req);

}  // namespace dlagent::jobs
