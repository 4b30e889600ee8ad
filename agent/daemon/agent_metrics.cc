#include "agent/daemon/agent_metrics.h"

#include <array>
#include <map>
#include <string>

#include "agent/metrics/exposition.h"

namespace dlagent {
namespace {

using metrics::Exposition;
using metrics::MetricType;

constexpr auto kCounter = MetricType::kCounter;
constexpr auto kGauge = MetricType::kGauge;

double D(uint64_t v) { return static_cast<double>(v); }

// A family of one sample without labels.
void One(Exposition& e, std::string_view name, MetricType type, std::string_view help, double value) {
  e.Family(name, type, help);
  e.Sample(value);
}

void Agent(Exposition& e, const StatusSnapshot& s) {
  e.Family("dlagent_build_info", kGauge, "The agent's version, as a label; always 1.");
  e.Sample(1, {{"version", s.version}});
  One(e, "dlagent_start_time_seconds", kGauge, "When the agent started, in seconds since the Unix epoch.",
      static_cast<double>(s.started_unix_ms) / 1000.0);
  One(e, "dlagent_resident_memory_bytes", kGauge, "The agent's resident memory (VmRSS).", D(s.rss_bytes));
  One(e, "dlagent_heap_in_use_bytes", kGauge, "What the agent's heap holds in use (mallinfo2).", D(s.heap_in_use_bytes));
  One(e, "dlagent_config_reloads_total", kCounter, "Configuration reloads accepted (SIGHUP, systemctl reload).",
      D(s.config_generation > 0 ? s.config_generation - 1 : 0));
  One(e, "dlagent_phase_changes_total", kCounter,
      "Times the agent's phase changed (a healthy node: starting, identify, discover, roster, prepare, ready).", D(s.phase_changes));
  if (s.ready_after_ms >= 0) {
    One(e, "dlagent_ready_seconds", kGauge, "From the agent's start to its first READY: how long the boot took on this node.",
        static_cast<double>(s.ready_after_ms) / 1000.0);
  }
  e.Family("dlagent_phase", kGauge, "Where the agent stands: 1 for the phase it is in, 0 for the others (docs/cluster.md).");
  for (AgentPhase p : {AgentPhase::kStarting, AgentPhase::kServing, AgentPhase::kIdentify, AgentPhase::kDiscover, AgentPhase::kRoster,
                       AgentPhase::kPrepare, AgentPhase::kReady, AgentPhase::kStandby, AgentPhase::kFailed, AgentPhase::kStopping}) {
    e.Sample(p == s.phase ? 1 : 0, {{"phase", AgentPhaseName(p)}});
  }
  if (!s.identity.instance_id.empty()) {
    e.Family("dlagent_node_info", kGauge, "This node's identity (IMDS), as labels; always 1.");
    e.Sample(1, {{"instance_id", s.identity.instance_id},
                 {"instance_type", s.identity.instance_type},
                 {"availability_zone", s.identity.availability_zone},
                 {"address", s.identity.local_ipv4}});
    One(e, "dlagent_gpus", kGauge, "The GPUs this node has (NVML, /dev or the configured count).", s.identity.gpu_count);
  }
}

void Formation(Exposition& e, const ClusterSnapshot& c) {
  One(e, "dlagent_roster_generation", kGauge, "The sealed roster's generation; 0 before the first seal.", D(c.generation));
  One(e, "dlagent_roster_members", kGauge, "Nodes in the sealed roster.", D(c.roster.size()));
  One(e, "dlagent_roster_dead_members", kGauge, "Roster members that gossip does not call alive (a degraded roster).", D(c.dead.size()));
  One(e, "dlagent_roster_rank", kGauge, "This node's rank in the roster; -1 when it is not in it.", c.rank);
  One(e, "dlagent_formation_alive_members", kGauge, "Members this agent sees alive while it forms or keeps the roster.", c.alive);
  One(e, "dlagent_formation_expected_members", kGauge, "cluster.expected_nodes.", c.expected);
  One(e, "dlagent_formation_sqs_requests_total", kCounter, "Requests this agent made of the discovery queue.", D(c.sqs_requests));
  One(e, "dlagent_formation_hellos_sent_total", kCounter, "HELLOs this agent sent to the discovery queue.", D(c.hellos_sent));
  e.Family("dlagent_formation_hellos_received_total", kCounter, "HELLOs this agent read from the queue, by outcome.");
  e.Sample(D(c.hellos_accepted), {{"outcome", "accepted"}});
  e.Sample(D(c.hellos_refused), {{"outcome", "refused"}});
  One(e, "dlagent_maintenance_events", kGauge, "Scheduled maintenance events IMDS lists for this instance.", D(c.maintenance.size()));
}

void Membership(Exposition& e, const MemberListSnapshot& m, int health) {
  std::array<uint64_t, 4> by_state{};
  constexpr std::array<const char*, 4> kStates = {"alive", "suspect", "dead", "left"};
  uint64_t flaps = 0;
  for (const MemberSnapshot& member : m.members) {
    for (size_t i = 0; i < kStates.size(); ++i) by_state[i] += member.status == kStates[i];
    flaps += member.flaps;
  }
  e.Family("dlagent_members", kGauge, "Members this agent knows, by state (itself included).");
  for (size_t i = 0; i < kStates.size(); ++i) e.Sample(D(by_state[i]), {{"state", kStates[i]}});
  One(e, "dlagent_member_flaps", kGauge, "Times members went from alive to suspect or dead and back, summed over the members known.", D(flaps));
  const GossipCounters& g = m.counters;
  e.Family("dlagent_gossip_packets_total", kCounter, "Gossip packets (UDP), by direction.");
  e.Sample(D(g.packets_in), {{"direction", "in"}});
  e.Sample(D(g.packets_out), {{"direction", "out"}});
  e.Family("dlagent_gossip_packets_dropped_total", kCounter,
           "Gossip packets dropped unread, by reason: auth (wrong key or cluster, tampered), replay, malformed.");
  e.Sample(D(g.auth_failures), {{"reason", "auth"}});
  e.Sample(D(g.replays), {{"reason", "replay"}});
  e.Sample(D(g.malformed), {{"reason", "malformed"}});
  One(e, "dlagent_gossip_push_pulls_total", kCounter, "Full-state syncs (push-pull, TCP) this agent made or served.", D(g.push_pulls));
  One(e, "dlagent_gossip_push_pull_failures_total", kCounter, "Push-pulls that failed.", D(g.push_pull_failures));
  One(e, "dlagent_gossip_push_pulls_refused_total", kCounter, "Incoming push-pulls refused over the concurrency cap.", D(g.push_pulls_refused));
  if (health >= 0) {
    One(e, "dlagent_gossip_health_score", kGauge, "Lifeguard's local health (awareness): 0 is healthy; higher slows this agent's probes.", health);
  }
}

// What ranks reported (DLAGENT_METRICS_SOCKET), labelled by job_id ("job" is Prometheus's own) for jobs that run
// here or ended less than Jobs::kTrainingKept ago, and by name (at most kMaxTrainingNames a job).
void Training(Exposition& e, const jobs::Jobs::Metrics& j) {
  One(e, "dlagent_training_reports_total", kCounter, "Training reports this node's ranks sent (DLAGENT_METRICS_SOCKET) that were taken.",
      D(j.node.reports));
  e.Family("dlagent_training_reports_refused_total", kCounter,
           "Training reports refused, by reason: malformed, refused (no such job running here, or not its user), too_many_names (taken in part).");
  e.Sample(D(j.node.reports_malformed), {{"reason", "malformed"}});
  e.Sample(D(j.node.reports_refused), {{"reason", "refused"}});
  e.Sample(D(j.node.reports_too_many_names), {{"reason", "too_many_names"}});
  if (j.training.empty()) return;
  e.Family("dlagent_training_step", kGauge, "The last step a job's ranks on this node reported.");
  for (const auto& [id, t] : j.training) {
    if (t.step_unix_ms() > 0) e.Sample(D(t.step()), {{"job_id", id}});
  }
  e.Family("dlagent_training_last_step_timestamp_seconds", kGauge,
           "When a job's ranks on this node last reported a step (Unix time): alert on its age for a stuck trainer.");
  for (const auto& [id, t] : j.training) {
    if (t.step_unix_ms() > 0) e.Sample(static_cast<double>(t.step_unix_ms()) / 1000.0, {{"job_id", id}});
  }
  e.Family("dlagent_training_value", kGauge,
           "The last value of each scalar a job's ranks on this node reported (loss, samples_per_second...), by name.");
  for (const auto& [id, t] : j.training) {
    std::map<std::string, double> sorted(t.values().begin(), t.values().end());  // a stable order, scrape to scrape
    for (const auto& [name, value] : sorted) e.Sample(value, {{"job_id", id}, {"name", name}});
  }
}

void Jobs(Exposition& e, const jobs::Jobs::Metrics& j) {
  e.Family("dlagent_jobs", kGauge, "Jobs this agent coordinates (started here or taken over), by state; summed over agents, the cluster's.");
  for (const char* state : {"running", "stopping", "restarting", "succeeded", "failed", "killed"}) {
    auto it = j.coordinated.find(state);
    e.Sample(D(it == j.coordinated.end() ? 0 : it->second), {{"state", state}});
  }
  One(e, "dlagent_job_restarts_total", kCounter, "Job attempts this agent started after a job's first (agentctl run --restarts).",
      D(j.coordinator.restarts));
  One(e, "dlagent_job_takeovers_total", kCounter, "Jobs this agent took over from a coordinator that was lost.", D(j.coordinator.takeovers));
  One(e, "dlagent_job_reports_received_total", kCounter, "Parts of jobs coordinated here that nodes pushed when they changed.",
      D(j.coordinator.reports));
  One(e, "dlagent_job_rounds_total", kCounter, "Slow rounds: a job's nodes asked for their parts (every 5 s a job).", D(j.coordinator.rounds));
  e.Family("dlagent_job_reports_sent_total", kCounter, "This node's parts of jobs pushed to their coordinators, by outcome.");
  e.Sample(D(j.reporter.delivered), {{"outcome", "delivered"}});
  e.Sample(D(j.reporter.retried), {{"outcome", "retried"}});
  e.Sample(D(j.reporter.dropped), {{"outcome", "dropped"}});
  e.Sample(D(j.reporter.unknown), {{"outcome", "unknown"}});
  One(e, "dlagent_ranks_running", kGauge, "Job ranks running on this node.", D(j.node.ranks_running));
  One(e, "dlagent_ranks_started_total", kCounter, "Job ranks started on this node.", D(j.node.ranks_started));
  e.Family("dlagent_rank_exits_total", kCounter, "Job ranks on this node that ended, by how: ok (exit 0), failed (another code), signal.");
  e.Sample(D(j.node.exits_ok), {{"how", "ok"}});
  e.Sample(D(j.node.exits_failed), {{"how", "failed"}});
  e.Sample(D(j.node.exits_signal), {{"how", "signal"}});
  One(e, "dlagent_job_output_lines_total", kCounter, "Lines of output read from this node's ranks.", D(j.node.output_lines));
  One(e, "dlagent_job_output_bytes_total", kCounter, "Bytes of output read from this node's ranks (their text).", D(j.node.output_bytes));
  One(e, "dlagent_job_output_dropped_lines_total", kCounter, "Lines of output no longer held: over a rank's or the node's bound.",
      D(j.node.dropped_lines));
  One(e, "dlagent_job_output_held_bytes", kGauge, "Bytes of job output this agent holds for agentctl logs.", D(j.node.held_bytes));
  One(e, "dlagent_job_calls_refused_total", kCounter, "Job calls from other agents refused (not sealed with the cluster key, malformed).",
      D(j.refused_calls));
  Training(e, j);
}

// NVML's figures, a series per GPU (gpu: its index; at most 64), each family left out when no GPU gives it.
void Gpus(Exposition& e, const GpuStats& g) {
  auto family = [&](const char* name, MetricType type, const char* help, auto get) {
    bool any = false;
    for (const GpuStat& s : g.gpus) any = any || get(s).has_value();
    if (!any) return;
    e.Family(name, type, help);
    for (const GpuStat& s : g.gpus) {
      if (const auto v = get(s)) e.Sample(static_cast<double>(*v), {{"gpu", std::to_string(s.index)}});
    }
  };
  family("dlagent_gpu_utilization_ratio", kGauge, "NVML: the part of the last sample period a kernel ran on the GPU (0..1).",
         [](const GpuStat& s) { return s.utilization; });
  family("dlagent_gpu_memory_utilization_ratio", kGauge, "NVML: the part of the last sample period the GPU's memory was read or written (0..1).",
         [](const GpuStat& s) { return s.memory_utilization; });
  family("dlagent_gpu_memory_used_bytes", kGauge, "NVML: GPU memory in use.", [](const GpuStat& s) { return s.memory_used_bytes; });
  family("dlagent_gpu_memory_total_bytes", kGauge, "NVML: GPU memory in all.", [](const GpuStat& s) { return s.memory_total_bytes; });
  family("dlagent_gpu_temperature_celsius", kGauge, "NVML: the GPU's temperature.", [](const GpuStat& s) { return s.temperature_celsius; });
  family("dlagent_gpu_power_watts", kGauge, "NVML: the GPU's power draw.", [](const GpuStat& s) { return s.power_watts; });
  bool ecc = false;
  for (const GpuStat& s : g.gpus) ecc = ecc || s.ecc_corrected || s.ecc_uncorrected;
  if (ecc) {
    e.Family("dlagent_gpu_ecc_errors_total", kCounter, "NVML: memory errors ECC saw since the driver loaded, by type (corrected, uncorrected).");
    for (const GpuStat& s : g.gpus) {
      const std::string gpu = std::to_string(s.index);
      if (s.ecc_corrected) e.Sample(D(*s.ecc_corrected), {{"gpu", gpu}, {"type", "corrected"}});
      if (s.ecc_uncorrected) e.Sample(D(*s.ecc_uncorrected), {{"gpu", gpu}, {"type", "uncorrected"}});
    }
  }
  One(e, "dlagent_gpu_stats_timestamp_seconds", kGauge, "When NVML was last read in full (Unix time); an old one: the driver hangs.",
      static_cast<double>(g.read_unix_ms) / 1000.0);
}

// The calls to AWS (instance metadata included), by service and outcome, and their durations.
void Aws(Exposition& e, const std::vector<MeteredHttpClient::ServiceCounts>& aws) {
  e.Family("dlagent_aws_requests_total", kCounter,
           "Calls to AWS (IMDS, SQS, Secrets Manager, SSM, CloudFormation, credentials), by service and outcome: ok, throttled, error (another "
           "HTTP status), failed (no answer), cancelled. A call retried counts each time.");
  for (const auto& s : aws) {
    for (size_t k = 0; k < MeteredHttpClient::kOutcomes.size(); ++k) {
      e.Sample(D(s.calls[k]), {{"service", s.service}, {"outcome", MeteredHttpClient::kOutcomes[k]}});
    }
  }
  e.Family("dlagent_aws_retries_total", kCounter,
           "Of the calls to AWS, those that repeated one that failed (a retry after an error, a throttle or no answer), by service.");
  for (const auto& s : aws) e.Sample(D(s.retries), {{"service", s.service}});
  e.Family("dlagent_aws_request_duration_seconds", metrics::MetricType::kHistogram, "How long calls to AWS took, by service (long polls included).");
  for (const auto& s : aws) {
    metrics::HistogramData h;
    h.bounds.assign(MeteredHttpClient::kBuckets.begin(), MeteredHttpClient::kBuckets.end());
    h.counts.assign(s.buckets.begin(), s.buckets.end());
    h.sum = s.seconds;
    e.Histogram(h, {{"service", s.service}});
  }
}

// The parameter-server shard this agent serves (ps.enabled).
void Dlps(Exposition& e, const ps::PsStats& p) {
  constexpr auto R = std::memory_order_relaxed;
  One(e, "dlagent_dlps_connections_total", kCounter, "Workers' data connections the dlps shard accepted.", D(p.connections.load(R)));
  e.Family("dlagent_dlps_requests_total", kCounter, "Requests the dlps shard served, by kind: push, pull, control (barriers, checkpoints, inits).");
  e.Sample(D(p.pushes.load(R)), {{"kind", "push"}});
  e.Sample(D(p.pulls.load(R)), {{"kind", "pull"}});
  e.Sample(D(p.controls.load(R)), {{"kind", "control"}});
  e.Family("dlagent_dlps_bytes_total", kCounter, "Values the dlps shard received in pushes (in) and sent in pull replies (out).");
  e.Sample(D(p.bytes_in.load(R)), {{"direction", "in"}});
  e.Sample(D(p.bytes_out.load(R)), {{"direction", "out"}});
  One(e, "dlagent_dlps_rounds_total", kCounter, "Rounds the dlps shard completed (sync: every worker pushed a slice; async: each update).",
      D(p.rounds.load(R)));
  const auto histogram = [&](std::string_view name, std::string_view help, const ps::PsStats::Histogram& h) {
    e.Family(name, metrics::MetricType::kHistogram, help);
    metrics::HistogramData d;
    d.bounds.assign(ps::PsStats::kBuckets.begin(), ps::PsStats::kBuckets.end());
    for (const auto& b : h.buckets) d.counts.push_back(b.load(R));
    d.sum = static_cast<double>(h.micros.load(R)) / 1e6;
    e.Histogram(d);
  };
  histogram("dlagent_dlps_apply_duration_seconds", "What summing a round's gradients and the optimizer took, per round.", p.apply);
  histogram("dlagent_dlps_round_duration_seconds", "From a round's first push to its last (sync): how long the slowest worker kept the others.",
            p.round);
  e.Family("dlagent_dlps_refused_total", kCounter,
           "Frames the dlps shard refused, by reason: hello (another protocol, no valid job token, another job running), oversized, "
           "malformed (not whole floats, a pull with a payload, an unknown request), push (wrong round, twice in a round, unknown slice).");
  e.Sample(D(p.refused_hello.load(R)), {{"reason", "hello"}});
  e.Sample(D(p.refused_oversized.load(R)), {{"reason", "oversized"}});
  e.Sample(D(p.refused_malformed.load(R)), {{"reason", "malformed"}});
  e.Sample(D(p.refused_push.load(R)), {{"reason", "push"}});
}

// The shared storage (storage.kind), as StorageWatch last checked it.
void Storage(Exposition& e, const StorageWatch::Snapshot& s) {
  One(e, "dlagent_storage_mounted", kGauge, "Whether the shared storage is mounted at storage.mount_point (1) or not (0).", s.mounted ? 1 : 0);
  One(e, "dlagent_storage_check_timestamp_seconds", kGauge, "When the agent last checked the shared storage (every 30 s).",
      static_cast<double>(s.checked_unix_ms) / 1e3);
  if (!s.mounted) return;  // nothing was probed: missing, not zero
  One(e, "dlagent_storage_probe_ok", kGauge, "Whether the last write, sync and read back of a small file on the shared storage succeeded.",
      s.probe_ok ? 1 : 0);
  One(e, "dlagent_storage_probe_duration_seconds", kGauge,
      "How long the last write, sync and read back took (10 s when it did not answer: a hung NFS server).", s.probe_seconds);
}

void Http(Exposition& e, const metrics::HttpServerStats& h) {
  One(e, "dlagent_metrics_requests_total", kCounter, "Requests the metrics listener answered with a page.", D(h.requests));
  e.Family("dlagent_metrics_requests_refused_total", kCounter,
           "Connections to the metrics listener refused, by reason: bad_request (400, 405, 431), timeout, too_many (over the connection cap).");
  e.Sample(D(h.bad_requests), {{"reason", "bad_request"}});
  e.Sample(D(h.timeouts), {{"reason", "timeout"}});
  e.Sample(D(h.refused), {{"reason", "too_many"}});
}

}  // namespace

std::string RenderAgentMetrics(const AgentMetricsInput& in) {
  Exposition e;
  Agent(e, in.status);
  if (in.status.cluster) Formation(e, *in.status.cluster);
  if (in.members.enabled) Membership(e, in.members, in.gossip_health);
  if (in.jobs) Jobs(e, *in.jobs);
  if (in.gpus.nvml && in.gpus.read_unix_ms > 0) Gpus(e, in.gpus);
  if (!in.aws.empty()) Aws(e, in.aws);
  if (in.dlps != nullptr) Dlps(e, *in.dlps);
  if (in.storage && in.storage->checked) Storage(e, *in.storage);
  Http(e, in.http);
  return e.Take();
}

}  // namespace dlagent
