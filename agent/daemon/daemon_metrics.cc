// The daemon's /metrics and status page: what each scrape reads (docs/operations.md).

#include <spdlog/spdlog.h>

#include "agent/daemon/agent_metrics.h"
#include "agent/daemon/daemon.h"
#include "agent/metrics/exposition.h"
#include "bootstrap/common/atomic_file.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {

Status Daemon::StartMetrics(const Config& c, const std::string& address) {
  if (!c.metrics.enabled) return Status::Ok();
  metrics::HttpServerOptions o;
  o.listen = address + ":" + std::to_string(c.metrics.port);
  o.heartbeat = heartbeats_.Register("metrics");
  gpus_ = std::make_unique<GpuSampler>();
  // The page token (the output of jobs on the page) in a file only the agent's user reads, beside the control
  // socket, in a directory only root writes (/run/dlagent); a new one at each start.
  const std::string token = RandomHex(16);
  const std::string token_file = PageTokenPath(c.agent.socket);
  if (Status st = WriteFileAtomically(env_, token_file, token + "\n", 0600); !st.ok()) {
    spdlog::warn("metrics: the status page shows no job output: {}", st.ToString());
  }
  StatusPageSources sources{[this] { return GetStatus(); }, [this] { return ListMembers(); }, [this] { return ServedJobs(); }, nullptr};
  if (ps_) {  // built before, gone after the page
    sources.dlps = [stats = &ps_->stats()] {
      constexpr auto R = std::memory_order_relaxed;
      return std::optional<DlpsPoint>(DlpsPoint{0, stats->bytes_in.load(R), stats->bytes_out.load(R), stats->rounds.load(R)});
    };
  }
  page_ = std::make_unique<StatusPage>(env_, std::move(sources), token);
  Result<std::unique_ptr<metrics::HttpServer>> server = metrics::HttpServer::Start(
      env_, o, [this](const metrics::HttpRequest& req, const metrics::HttpServerStats& stats) { return ServeHttp(req, stats); });
  if (!server.ok()) {
    return Status::Unavailable("metrics",
                               std::string(server.status().message()) + " (metrics.bind, metrics.port; metrics.enabled = false turns it off)");
  }
  metrics_ = std::move(*server);
  const std::string url = "http://" + address + ":" + std::to_string(metrics_->port()) + "/metrics";
  spdlog::info("metrics: serving {} and the status page at /", url);
  MutexLock lock(mu_);
  metrics_url_ = url;
  return Status::Ok();
}

metrics::HttpReply Daemon::ServeHttp(const metrics::HttpRequest& req, const metrics::HttpServerStats& stats) {
  if (req.path != "/metrics") {
    if (std::optional<metrics::HttpReply> reply = page_->Serve(req)) return *std::move(reply);
    return {404, "text/plain; charset=utf-8", "not found: " + req.path + " (this agent serves /metrics and its status page at /)\n", ""};
  }
  AgentMetricsInput in;
  in.status = GetStatus();
  in.members = ListMembers();
  if (GossipRuns() && gossip_) in.gossip_health = gossip_->health_score();
  if (std::shared_ptr<jobs::Jobs> jobs = ServedJobs()) in.jobs = jobs->metrics();
  in.http = stats;
  in.gpus = gpus_->stats();
  if (aws_calls_ != nullptr) in.aws = aws_calls_->counts();
  if (ps_) in.dlps = &ps_->stats();
  if (booted_ && storage_watch_) in.storage = storage_watch_->snapshot();
  return {200, std::string(metrics::Exposition::kContentType), RenderAgentMetrics(in), ""};
}

}  // namespace dlagent
