#include "agent/daemon/membership.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>

#include <spdlog/spdlog.h>

#include "bootstrap/common/crypto.h"
#include "build_info.h"

namespace dlagent {

Result<swim::Keyring> MakeKeyring(const std::vector<std::string>& keys, const std::string& cluster, const std::string& where) {
  if (keys.empty()) return Status::InvalidArgument("gossip", where + ": no cluster key");
  std::map<uint8_t, std::string> by_id;
  for (const std::string& k : keys) {
    const uint8_t id = static_cast<uint8_t>(Sha256(k)[0]);
    if (!by_id.emplace(id, k).second && by_id[id] != k) {
      return Status::InvalidArgument("gossip", where + ": two keys share an id byte (1 in 256); make the newer one again");
    }
  }
  return swim::Keyring::Create(std::move(by_id), static_cast<uint8_t>(Sha256(keys.front())[0]), cluster);
}

GossipPlan PlanGossip(const Config& config, const GossipIdentity& identity) {
  const GossipConfig& g = config.gossip;
  GossipPlan plan;
  swim::GossipOptions& o = plan.options;
  o.name = !g.name.empty() ? g.name : identity.name;
  if (o.name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    o.name = host;
  }
  o.bind_host = g.bind;
  o.port = static_cast<int>(g.port);
  o.advertise_host = !g.advertise.empty() ? g.advertise : identity.advertise;
  o.seeds = g.seeds;
  o.swim = g.profile == GossipProfile::kFast ? swim::SwimConfig::Fast() : swim::SwimConfig::Lan();
  swim::MemberMeta& meta = plan.meta;
  meta = identity.meta;
  meta.instance_id = o.name;
  if (meta.role.empty()) meta.role = config.cluster.role;
  meta.version = kVersion;
  meta.rpc_port = static_cast<uint16_t>(g.port);
  o.meta = swim::EncodeMeta(meta);
  return plan;
}

Membership::Membership(swim::GossipNode& node, ClusterClient& client, std::string cluster, swim::MemberMeta base_meta, std::vector<std::string> keys)
    : node_(node), client_(client), cluster_(std::move(cluster)), base_meta_(std::move(base_meta)), keys_(std::move(keys)) {}

void Membership::UpdateMeta(const swim::MemberMeta& meta) { node_.UpdateMeta(swim::EncodeMeta(meta)); }

bool Membership::Gone(const std::string& name) {
  for (const swim::MemberInfo& m : node_.Members()) {
    if (m.name == name) return m.state == swim::MemberState::kDead || m.state == swim::MemberState::kLeft;
  }
  return false;
}

std::vector<std::string> Membership::cluster_keys() {
  MutexLock lock(mu_);
  return keys_;
}

Status Membership::ReloadKeys(const std::vector<std::string>& keys, const std::string& path) {
  ASSIGN_OR_RETURN(swim::Keyring ring, MakeKeyring(keys, cluster_, path));
  node_.SetKeyring(std::move(ring));
  client_.SetKeyring(node_.keyring());  // new connections prove the new primary key
  {
    MutexLock lock(mu_);
    keys_ = keys;
  }
  spdlog::info("gossip: {} key{} in force from {}, the first primary", keys.size(), keys.size() > 1 ? "s" : "", path);
  return Status::Ok();
}

Result<std::string> Membership::AnswerRosterFetch(std::string_view sealed_request, Formation* formation) {
  const std::shared_ptr<const swim::Keyring> ring = node_.keyring();
  ASSIGN_OR_RETURN(swim::Keyring::Opened request, ring->Open(sealed_request));
  if (request.plaintext != "roster") return Status::InvalidArgument("gossip", "unknown roster request");
  const Roster roster = formation ? formation->HeldRoster() : Roster();
  return ring->Seal(roster.generation == 0 ? "" : RenderRosterJson(roster), swim::NowUnixMs());
}

Result<Roster> Membership::FetchRoster(const std::string& addr) {
  const std::shared_ptr<const swim::Keyring> ring = node_.keyring();
  ASSIGN_OR_RETURN(std::string sealed, client_.FetchRoster(addr, ring->Seal("roster", swim::NowUnixMs())));
  ASSIGN_OR_RETURN(swim::Keyring::Opened reply, ring->Open(sealed));
  // A reply is fresh, not an old roster someone recorded and plays back (each reply is sealed when asked for).
  if (std::abs(reply.sent_unix_ms - swim::NowUnixMs()) > 60'000) {
    return Status::PermissionDenied("roster", addr + " answered with a roster sealed over 60 s ago (a replay, or clocks apart: check NTP)");
  }
  const std::string& json = reply.plaintext;
  if (json.empty()) return Status::NotFound("roster", addr + " holds no roster");
  return ParseRosterJson(json);
}

void Membership::Leave() { node_.Leave(std::chrono::milliseconds(500)); }

MemberListSnapshot Membership::Members() {
  MemberListSnapshot out;
  out.enabled = true;
  const MonoTime now = std::chrono::steady_clock::now();
  for (const swim::MemberInfo& m : node_.Members()) {
    MemberSnapshot s;
    s.name = m.name;
    s.address = m.addr;
    s.status = swim::MemberStateName(m.state);
    s.incarnation = m.incarnation;
    s.flaps = m.flaps;
    s.last_change_ms_ago =
        static_cast<uint64_t>(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(now - m.state_change).count()));
    if (Result<swim::MemberMeta> meta = swim::DecodeMeta(m.meta); meta.ok()) {
      s.role = meta->role;
      s.gpus = meta->gpus;
      s.availability_zone = meta->az;
      s.version = meta->version;
    }
    out.members.push_back(std::move(s));
  }
  const swim::GossipStats g = node_.stats();
  out.counters = {g.packets_in, g.packets_out, g.auth_failures, g.replays, g.malformed, g.push_pulls, g.push_pull_failures, g.push_pulls_refused};
  return out;
}

}  // namespace dlagent
