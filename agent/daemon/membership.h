#pragma once
// Membership: the daemon's view of gossip, over a GossipNode and the cluster client it was built with: what the
// formation needs of its peers (FormationPeers), the keys in force, roster fetches (both sides) and the
// members as agentctl shows them. It builds nothing: the daemon builds the client, the node and the server on
// the gossip port (from PlanGossip and MakeKeyring), then this on top of them.
//
// Thread safety: every method may be called from any thread, except Leave (the owner's thread).

#include <functional>
#include <memory>
#include <mutex>

#include "agent/daemon/config.h"
#include "agent/daemon/formation.h"
#include "agent/rpc/cluster_service.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/membership/gossip_node.h"
#include "bootstrap/node/node_files.h"

namespace dlagent {

// A keyring of the keys (raw, the primary first) for the cluster. A key's id is the first byte of its SHA-256,
// the same on every node whatever the order of the lines; where: the keys' source, for errors.
Result<swim::Keyring> MakeKeyring(const std::vector<std::string>& keys, const std::string& cluster, const std::string& where);

// Who this node is, as far as gossip is concerned. gossip.name and gossip.advertise, when set, win over these;
// without any name, the host name.
struct GossipIdentity {
  std::string name;       // the instance id
  std::string advertise;  // the node's IPv4
  swim::MemberMeta meta;  // role, GPUs, AZ...; version and port are filled in
};

// The gossip node's options from [gossip] and the identity (the heartbeat is the caller's to set), and the
// metadata they carry, decoded.
struct GossipPlan {
  swim::GossipOptions options;
  swim::MemberMeta meta;
};
GossipPlan PlanGossip(const Config& config, const GossipIdentity& identity);

class Membership final : public FormationPeers {
 public:
  // node and client must outlive it; node was started with client as its transport. keys: the raw keys of
  // node's keyring, the primary first. base_meta: what node was started with.
  Membership(swim::GossipNode& node, ClusterClient& client, std::string cluster, swim::MemberMeta base_meta, std::vector<std::string> keys);

  // Gossips a graceful leave.
  void Leave();
  MemberListSnapshot Members();
  std::vector<swim::MemberInfo> RawMembers() override { return node_.Members(); }
  const std::string& name() const { return base_meta_.instance_id; }
  // The cluster keys in force (raw bytes, the primary first): they also sign and check discovery HELLOs.
  std::vector<std::string> cluster_keys();
  // Puts these keys in force for gossip, push-pull, rosters and HELLOs (key rotation). Keys that cannot make a
  // keyring are refused, naming the problem (where: their source), and the keys in force stay.
  Status ReloadKeys(const std::vector<std::string>& keys, const std::string& where);
  const std::string& address() const { return node_.advertise_addr(); }

  // The metadata others see for us (role, GPUs, the roster we hold, the generation we applied).
  void UpdateMeta(const swim::MemberMeta& meta) override;
  const swim::MemberMeta& base_meta() const { return base_meta_; }
  // Joins the member at addr ("ip:port").
  void Join(const std::string& addr) override { node_.Join(addr); }
  // The roster that member holds; NotFound when it holds none.
  Result<Roster> FetchRoster(const std::string& addr) override;
  // Answers a peer's sealed roster request with the roster formation holds (null, or generation 0: none); the
  // roster is read only for a request that opens with the keys in force.
  Result<std::string> AnswerRosterFetch(std::string_view sealed_request, Formation* formation);
  std::shared_ptr<const swim::Keyring> keyring() const { return node_.keyring(); }
  ClusterClient* client() { return &client_; }
  // True when gossip knows the member as dead or left.
  bool Gone(const std::string& name);

 private:
  swim::GossipNode& node_;
  ClusterClient& client_;
  const std::string cluster_;
  const swim::MemberMeta base_meta_;
  Mutex mu_;
  std::vector<std::string> keys_ GUARDED_BY(mu_);  // the raw keys of node_'s keyring, the primary first
};

}  // namespace dlagent
