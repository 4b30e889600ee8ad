#include "agent/rpc/control_codec.h"

namespace dlagent {
namespace {

namespace pb = ::dlagent::control::v1;

static_assert(static_cast<int>(pb::PHASE_STOPPING) == static_cast<int>(AgentPhase::kStopping) + 1, "control.proto's Phase follows AgentPhase");

}  // namespace

std::string_view AgentPhaseName(AgentPhase p) {
  switch (p) {
    case AgentPhase::kStarting: return "starting";
    case AgentPhase::kServing: return "serving";
    case AgentPhase::kIdentify: return "identify";
    case AgentPhase::kDiscover: return "discover";
    case AgentPhase::kRoster: return "roster";
    case AgentPhase::kPrepare: return "prepare";
    case AgentPhase::kReady: return "ready";
    case AgentPhase::kStandby: return "standby";
    case AgentPhase::kFailed: return "failed";
    case AgentPhase::kStopping: return "stopping";
  }
  return "unknown";
}

std::string PageTokenPath(const std::string& socket) {
  const size_t slash = socket.rfind('/');
  return (slash == std::string::npos ? std::string(".") : socket.substr(0, slash)) + "/page.token";
}

void ToProto(const StatusSnapshot& s, pb::AgentStatus* out) {
  out->set_phase(static_cast<pb::Phase>(static_cast<int>(s.phase) + 1));  // the same order, after UNSPECIFIED
  out->set_phase_detail(s.phase_detail);
  auto* id = out->mutable_identity();
  id->set_instance_id(s.identity.instance_id);
  id->set_instance_type(s.identity.instance_type);
  id->set_local_ipv4(s.identity.local_ipv4);
  id->set_region(s.identity.region);
  id->set_availability_zone(s.identity.availability_zone);
  id->set_gpu_count(s.identity.gpu_count);
  if (s.cluster) {
    const ClusterSnapshot& c = *s.cluster;
    auto* v = out->mutable_cluster();
    v->set_leader(c.leader);
    v->set_generation(c.generation);
    v->set_sealed_by(c.sealed_by);
    v->set_rank(c.rank);
    for (const RosterMemberSnapshot& m : c.roster) {
      auto* r = v->add_roster();
      r->set_rank(m.rank);
      r->set_instance_id(m.instance_id);
      r->set_ip(m.ip);
      r->set_gpus(m.gpus);
      r->set_prepared(m.prepared);
      r->set_role(m.role);
    }
    v->set_failure(c.failure);
    v->set_alive(c.alive);
    v->set_expected(c.expected);
    v->set_deadline_in_ms(c.deadline_in_ms);
    for (const std::string& d : c.dead) v->add_dead(d);
    for (const std::string& m : c.maintenance) v->add_maintenance(m);
    v->set_reseal_in_ms(c.reseal_in_ms);
    v->set_sqs_requests(c.sqs_requests);
    v->set_hellos_sent(c.hellos_sent);
    v->set_hellos_accepted(c.hellos_accepted);
    v->set_hellos_refused(c.hellos_refused);
  }
  out->set_uptime_ms(s.uptime_ms);
  out->set_version(s.version);
  out->set_config_path(s.config_path);
  out->set_cluster_name(s.cluster_name);
  out->set_pid(s.pid);
  out->set_started_unix_ms(s.started_unix_ms);
  out->set_log_level(s.log_level);
  out->set_config_generation(s.config_generation);
  out->set_socket_path(s.socket_path);
  out->set_rss_bytes(s.rss_bytes);
  out->set_heap_in_use_bytes(s.heap_in_use_bytes);
  out->set_metrics_url(s.metrics_url);
}

StatusSnapshot FromProto(const pb::AgentStatus& p) {
  StatusSnapshot s;
  const int phase = static_cast<int>(p.phase()) - 1;
  s.phase = phase >= 0 && phase <= static_cast<int>(AgentPhase::kStopping) ? static_cast<AgentPhase>(phase) : AgentPhase::kStarting;
  s.phase_detail = p.phase_detail();
  s.identity.instance_id = p.identity().instance_id();
  s.identity.instance_type = p.identity().instance_type();
  s.identity.local_ipv4 = p.identity().local_ipv4();
  s.identity.region = p.identity().region();
  s.identity.availability_zone = p.identity().availability_zone();
  s.identity.gpu_count = p.identity().gpu_count();
  s.uptime_ms = p.uptime_ms();
  s.version = p.version();
  s.config_path = p.config_path();
  s.cluster_name = p.cluster_name();
  s.pid = p.pid();
  s.started_unix_ms = p.started_unix_ms();
  s.log_level = p.log_level();
  s.config_generation = p.config_generation();
  s.socket_path = p.socket_path();
  s.rss_bytes = p.rss_bytes();
  s.heap_in_use_bytes = p.heap_in_use_bytes();
  s.metrics_url = p.metrics_url();
  if (p.has_cluster()) {
    const pb::ClusterView& v = p.cluster();
    ClusterSnapshot c;
    c.leader = v.leader();
    c.generation = v.generation();
    c.sealed_by = v.sealed_by();
    c.rank = v.rank();
    for (const pb::RosterMember& m : v.roster()) c.roster.push_back({m.rank(), m.instance_id(), m.ip(), m.gpus(), m.prepared(), m.role()});
    c.failure = v.failure();
    c.alive = v.alive();
    c.expected = v.expected();
    c.deadline_in_ms = v.deadline_in_ms();
    c.dead.assign(v.dead().begin(), v.dead().end());
    c.maintenance.assign(v.maintenance().begin(), v.maintenance().end());
    c.reseal_in_ms = v.reseal_in_ms();
    c.sqs_requests = v.sqs_requests();
    c.hellos_sent = v.hellos_sent();
    c.hellos_accepted = v.hellos_accepted();
    c.hellos_refused = v.hellos_refused();
    s.cluster = std::move(c);
  }
  return s;
}

void ToProto(const MemberListSnapshot& list, pb::MemberList* reply) {
  reply->set_enabled(list.enabled);
  for (const MemberSnapshot& m : list.members) {
    pb::Member* out = reply->add_members();
    out->set_name(m.name);
    out->set_address(m.address);
    out->set_status(m.status);
    out->set_role(m.role);
    out->set_gpus(m.gpus);
    out->set_availability_zone(m.availability_zone);
    out->set_incarnation(m.incarnation);
    out->set_last_change_ms_ago(m.last_change_ms_ago);
    out->set_flaps(m.flaps);
    out->set_version(m.version);
  }
  const GossipCounters& c = list.counters;
  pb::GossipCounters* pc = reply->mutable_counters();
  pc->set_packets_in(c.packets_in);
  pc->set_packets_out(c.packets_out);
  pc->set_auth_failures(c.auth_failures);
  pc->set_replays(c.replays);
  pc->set_malformed(c.malformed);
  pc->set_push_pulls(c.push_pulls);
  pc->set_push_pull_failures(c.push_pull_failures);
  pc->set_push_pulls_refused(c.push_pulls_refused);
}

MemberListSnapshot FromProto(const pb::MemberList& reply) {
  MemberListSnapshot out;
  out.enabled = reply.enabled();
  for (const pb::Member& m : reply.members()) {
    out.members.push_back({m.name(), m.address(), m.status(), m.role(), m.availability_zone(), m.version(), m.gpus(), m.incarnation(), m.flaps(),
                           m.last_change_ms_ago()});
  }
  const pb::GossipCounters& c = reply.counters();
  out.counters = {c.packets_in(), c.packets_out(), c.auth_failures(),      c.replays(),
                  c.malformed(),  c.push_pulls(),  c.push_pull_failures(), c.push_pulls_refused()};
  return out;
}

}  // namespace dlagent
