// The daemon's /metrics: what each scrape reads (docs/operations.md).

#include <spdlog/spdlog.h>

#include "agent/daemon/agent_metrics.h"
#include "agent/daemon/daemon.h"
#include "agent/metrics/exposition.h"

namespace dlagent {

Status Daemon::StartMetrics(const Config& c, const std::string& address) {
  if (!c.metrics.enabled) return Status::Ok();
  metrics::HttpServerOptions o;
  o.listen = address + ":" + std::to_string(c.metrics.port);
  o.heartbeat = heartbeats_.Register("metrics");
  gpus_ = std::make_unique<GpuSampler>();
  Result<std::unique_ptr<metrics::HttpServer>> server = metrics::HttpServer::Start(
      env_, o, [this](const metrics::HttpRequest& req, const metrics::HttpServerStats& stats) { return ServeHttp(req, stats); });
  if (!server.ok()) {
    return Status::Unavailable("metrics",
                               std::string(server.status().message()) + " (metrics.bind, metrics.port; metrics.enabled = false turns it off)");
  }
  metrics_ = std::move(*server);
  const std::string url = "http://" + address + ":" + std::to_string(metrics_->port()) + "/metrics";
  spdlog::info("metrics: serving {}", url);
  MutexLock lock(mu_);
  metrics_url_ = url;
  return Status::Ok();
}

metrics::HttpReply Daemon::ServeHttp(const metrics::HttpRequest& req, const metrics::HttpServerStats& stats) {
  if (req.path != "/metrics") return {404, "text/plain; charset=utf-8", "not found: " + req.path + " (this agent serves /metrics)\n", ""};
  AgentMetricsInput in;
  in.status = GetStatus();
  in.members = ListMembers();
  if (GossipRuns() && gossip_) in.gossip_health = gossip_->health_score();
  if (std::shared_ptr<jobs::Jobs> jobs = ServedJobs()) in.jobs = jobs->metrics();
  in.http = stats;
  in.gpus = gpus_->stats();
  if (aws_calls_ != nullptr) in.aws = aws_calls_->counts();
  return {200, std::string(metrics::Exposition::kContentType), RenderAgentMetrics(in), ""};
}

}  // namespace dlagent
