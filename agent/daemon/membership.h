#pragma once
// Membership: the daemon's gossip — the cluster key, the GossipNode, and the cluster gRPC service on the
// gossip port (push-pull and roster fetches) — built from [gossip] in the config. Off when gossip.key_file
// is empty.
//
// Thread safety: every method may be called from any thread, except Start/Leave (the owner's thread).

#include <functional>
#include <memory>
#include <mutex>

#include "agent/daemon/config.h"
#include "agent/daemon/formation.h"
#include "agent/rpc/cluster_service.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/membership/gossip_node.h"
#include "bootstrap/node/node_files.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

// Reads a cluster key file: 64 hex characters (openssl rand -hex 32), surrounding whitespace ignored.
// gossip.key_file: one key a line, 64 hex characters each (openssl rand -hex 32); the first is the primary,
// which seals, and every one opens. Rotation without a restart: add the new key as a second line on every
// node, reload; move it first, reload; remove the old one, reload. Raw bytes, the primary first.
Result<std::vector<std::string>> LoadClusterKeys(Env& env, const std::string& path);

// Who this node is, as far as gossip is concerned. Empty fields come from [gossip] (name: the host name).
struct GossipIdentity {
  std::string name;       // the instance id
  std::string advertise;  // the node's IPv4
  swim::MemberMeta meta;  // role, GPUs, AZ...; version and port are filled in
  std::shared_ptr<Heartbeat> heartbeat;  // the gossip loop's; may be null
};

class Membership final : public FormationPeers {
 public:
  // Starts gossip with the cluster keys (cluster_keys.h; raw, the primary first); nullptr (and OK) without keys.
  static Result<std::unique_ptr<Membership>> Start(const Config& config, std::vector<std::string> keys, GossipIdentity identity = {});
  ~Membership() override;

  // Gossips a graceful leave, then stops.
  void Leave();
  MemberListSnapshot Members();
  std::vector<swim::MemberInfo> RawMembers() override { return node_->Members(); }
  const std::string& name() const { return name_; }
  // The cluster keys in force (raw bytes, the primary first): they also sign and check discovery HELLOs.
  std::vector<std::string> cluster_keys();
  // Puts these keys in force for gossip, push-pull, rosters and HELLOs (key rotation). Keys that cannot make a
  // keyring are refused, naming the problem (where: their source), and the keys in force stay.
  Status ReloadKeys(const std::vector<std::string>& keys, const std::string& where);
  const std::string& address() const { return node_->advertise_addr(); }

  // The metadata others see for us (role, GPUs, the roster we hold, the generation we applied).
  void UpdateMeta(const swim::MemberMeta& meta) override;
  const swim::MemberMeta& base_meta() const { return base_meta_; }
  // Joins the member at addr ("ip:port").
  void Join(const std::string& addr) override { node_->Join(addr); }
  // The roster that member holds; NotFound when it holds none.
  Result<Roster> FetchRoster(const std::string& addr) override;
  // What FetchRoster requests from us are answered with: the roster this node holds (generation 0: none).
  void ServeRosters(std::function<Roster()> source);
  // Who answers the jobs RPC (sealed requests in, sealed replies out); null: refused as not served.
  void ServeJobs(JobHandler handler);
  std::shared_ptr<const swim::Keyring> keyring() const { return node_->keyring(); }
  ClusterClient* client() { return client_.get(); }
  // True when gossip knows the member as dead or left.
  bool Gone(const std::string& name);

 private:
  Membership() = default;
  Result<std::string> HandleFetchRoster(std::string_view sealed_request);

  std::string name_, cluster_;
  swim::MemberMeta base_meta_;
  std::unique_ptr<ClusterClient> client_;
  std::unique_ptr<swim::GossipNode> node_;
  std::unique_ptr<ClusterServer> server_;
  Mutex mu_;
  std::function<Roster()> roster_source_ GUARDED_BY(mu_);
  JobHandler job_handler_ GUARDED_BY(mu_);
  std::vector<std::string> keys_ GUARDED_BY(mu_);  // the raw keys of node_'s keyring, the primary first
};

}  // namespace dlagent
