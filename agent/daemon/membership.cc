#include "agent/daemon/membership.h"

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>

#include <spdlog/spdlog.h>

#include "agent/daemon/cluster_keys.h"
#include "bootstrap/common/crypto.h"
#include "build_info.h"

namespace dlagent {

Result<std::vector<std::string>> LoadClusterKeys(Env& env, const std::string& path) {
  Result<std::string> text = env.ReadFile(path, 4096);
  if (!text.ok()) return Status(text.status().code(), "gossip", "cannot read gossip.key_file " + path + ": " + std::string(text.status().message()));
  return ParseClusterKeys(*text, path);
}

namespace {

// A keyring of the keys, the first primary. A key's id is the first byte of its SHA-256, the same on every
// node whatever the order of the lines.
Result<swim::Keyring> MakeKeyring(const std::vector<std::string>& keys, const std::string& cluster, const std::string& path) {
  std::map<uint8_t, std::string> by_id;
  for (const std::string& k : keys) {
    const uint8_t id = static_cast<uint8_t>(Sha256(k)[0]);
    if (!by_id.emplace(id, k).second && by_id[id] != k) {
      return Status::InvalidArgument("gossip", path + ": two keys share an id byte (1 in 256); make the newer one again");
    }
  }
  return swim::Keyring::Create(std::move(by_id), static_cast<uint8_t>(Sha256(keys.front())[0]), cluster);
}

}  // namespace

Result<std::unique_ptr<Membership>> Membership::Start(const Config& config, std::vector<std::string> keys, GossipIdentity identity) {
  const GossipConfig& g = config.gossip;
  if (keys.empty()) return std::unique_ptr<Membership>();
  const std::string where = KeySourceOf(g).Describe();
  ASSIGN_OR_RETURN(swim::Keyring keyring, MakeKeyring(keys, config.cluster.name, where));

  swim::GossipOptions o;
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
  o.heartbeat = identity.heartbeat;
  o.swim = g.profile == GossipProfile::kFast ? swim::SwimConfig::Fast() : swim::SwimConfig::Lan();
  swim::MemberMeta meta = identity.meta;
  meta.instance_id = o.name;
  if (meta.role.empty()) meta.role = config.cluster.role;
  meta.version = kVersion;
  meta.rpc_port = static_cast<uint16_t>(g.port);
  o.meta = swim::EncodeMeta(meta);

  std::unique_ptr<Membership> m(new Membership());
  {
    MutexLock lock(m->mu_);
    m->keys_ = keys;
  }
  m->name_ = o.name;
  m->cluster_ = config.cluster.name;
  m->base_meta_ = meta;
  m->client_ = NewGrpcClusterClient();
  ASSIGN_OR_RETURN(m->node_, swim::GossipNode::Start(o, std::move(keyring), m->client_.get()));
  swim::GossipNode* node = m->node_.get();
  Membership* self = m.get();
  ClusterHandlers handlers;
  handlers.push_pull = [node](std::string_view sealed) { return node->HandlePushPull(sealed); };
  handlers.fetch_roster = [self](std::string_view sealed) { return self->HandleFetchRoster(sealed); };
  handlers.job = [self](std::string_view sealed) -> Result<std::string> {
    JobHandler h;
    {
      MutexLock lock(self->mu_);
      h = self->job_handler_;
    }
    if (!h) return Status::Unavailable("jobs", "this agent runs no jobs (it forms no roster, or is stopping)");
    return h(sealed);
  };
  ASSIGN_OR_RETURN(m->server_, StartClusterServer(g.bind, static_cast<int>(g.port), std::move(handlers)));
  spdlog::info("gossip: member {} on {} (profile {}, {} seeds)", o.name, m->node_->advertise_addr(), g.profile == GossipProfile::kFast ? "fast" : "lan",
               g.seeds.size());
  return m;
}

void Membership::UpdateMeta(const swim::MemberMeta& meta) { node_->UpdateMeta(swim::EncodeMeta(meta)); }

void Membership::ServeRosters(std::function<Roster()> source) {
  MutexLock lock(mu_);
  roster_source_ = std::move(source);
}

void Membership::ServeJobs(JobHandler handler) {
  MutexLock lock(mu_);
  job_handler_ = std::move(handler);
}

bool Membership::Gone(const std::string& name) {
  for (const swim::MemberInfo& m : node_->Members()) {
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
  node_->SetKeyring(std::move(ring));
  {
    MutexLock lock(mu_);
    keys_ = keys;
  }
  spdlog::info("gossip: {} key{} in force from {}, the first primary", keys.size(), keys.size() > 1 ? "s" : "", path);
  return Status::Ok();
}

Result<std::string> Membership::HandleFetchRoster(std::string_view sealed_request) {
  const std::shared_ptr<const swim::Keyring> ring = node_->keyring();
  ASSIGN_OR_RETURN(swim::Keyring::Opened request, ring->Open(sealed_request));
  if (request.plaintext != "roster") return Status::InvalidArgument("gossip", "unknown roster request");
  Roster roster;
  {
    MutexLock lock(mu_);
    if (roster_source_) roster = roster_source_();
  }
  return ring->Seal(roster.generation == 0 ? "" : RenderRosterJson(roster), swim::NowUnixMs());
}

Result<Roster> Membership::FetchRoster(const std::string& addr) {
  const std::shared_ptr<const swim::Keyring> ring = node_->keyring();
  ASSIGN_OR_RETURN(std::string sealed, client_->FetchRoster(addr, ring->Seal("roster", swim::NowUnixMs())));
  ASSIGN_OR_RETURN(swim::Keyring::Opened reply, ring->Open(sealed));
  // A reply is fresh, not an old roster someone recorded and plays back (each reply is sealed when asked for).
  if (std::abs(reply.sent_unix_ms - swim::NowUnixMs()) > 60'000) {
    return Status::PermissionDenied("roster", addr + " answered with a roster sealed over 60 s ago (a replay, or clocks apart: check NTP)");
  }
  const std::string& json = reply.plaintext;
  if (json.empty()) return Status::NotFound("roster", addr + " holds no roster");
  return ParseRosterJson(json);
}

Membership::~Membership() {
  // The server's handler calls into the node: stop serving first.
  if (server_) server_->Shutdown(std::chrono::milliseconds(500));
  node_.reset();
}

void Membership::Leave() {
  node_->Leave(std::chrono::milliseconds(500));
}

MemberListSnapshot Membership::Members() {
  MemberListSnapshot out;
  out.enabled = true;
  const MonoTime now = std::chrono::steady_clock::now();
  for (const swim::MemberInfo& m : node_->Members()) {
    MemberSnapshot s;
    s.name = m.name;
    s.address = m.addr;
    s.status = swim::MemberStateName(m.state);
    s.incarnation = m.incarnation;
    s.flaps = m.flaps;
    s.last_change_ms_ago = static_cast<uint64_t>(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(now - m.state_change).count()));
    if (Result<swim::MemberMeta> meta = swim::DecodeMeta(m.meta); meta.ok()) {
      s.role = meta->role;
      s.gpus = meta->gpus;
      s.availability_zone = meta->az;
      s.version = meta->version;
    }
    out.members.push_back(std::move(s));
  }
  const swim::GossipStats g = node_->stats();
  out.counters = {g.packets_in, g.packets_out, g.auth_failures, g.replays, g.malformed, g.push_pulls, g.push_pull_failures, g.push_pulls_refused};
  return out;
}

}  // namespace dlagent
