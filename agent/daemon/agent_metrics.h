#pragma once
// What agentd's /metrics says (docs/operations.md lists every family): the agent, its phase, the formation,
// membership, jobs and the metrics listener itself, rendered from snapshots the daemon takes at each scrape.
// Families of a part that does not run on this agent are left out (missing, never zero).
//
// Thread safety: a function of its input.

#include <optional>
#include <string>

#include "agent/daemon/storage_watch.h"
#include "agent/jobs/jobs.h"
#include "agent/metrics/http_server.h"
#include "agent/ps/stats.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/aws/http_metrics.h"
#include "bootstrap/node/gpu_stats.h"

namespace dlagent {

struct AgentMetricsInput {
  StatusSnapshot status;
  MemberListSnapshot members;
  int gossip_health = -1;                   // Lifeguard's awareness (0 is healthy); -1: gossip does not run
  std::optional<jobs::Jobs::Metrics> jobs;  // absent: this agent runs no jobs (yet)
  metrics::HttpServerStats http;
  GpuStats gpus;                                      // NVML's figures (none without NVML)
  std::vector<MeteredHttpClient::ServiceCounts> aws;  // the AWS calls made, by service (none: no family)
  const ps::PsStats* dlps = nullptr;                  // the dlps shard's (none: ps.enabled = false)
  std::optional<StorageWatch::Snapshot> storage;      // absent: no shared storage configured
};

// The text format 0.0.4.
std::string RenderAgentMetrics(const AgentMetricsInput& in);

}  // namespace dlagent
