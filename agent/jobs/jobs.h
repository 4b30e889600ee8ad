#pragma once
// Jobs: the agent's side of `agentctl run / jobs / logs / kill` (docs/jobs.md). It owns this node's ranks
// (NodeJobs), the jobs started from here (Coordinator) and the sealed RPC other agents call; agentctl's
// requests come from the control socket with the caller's credentials.
//
// Threading: NodeJobs and the Coordinator run threads of their own; every method may be called from any
// thread, and those that reach other nodes block, each call with a deadline.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/jobs/coordinator.h"
#include "agent/jobs/job_rpc.h"
#include "agent/jobs/node_jobs.h"
#include "agent/jobs/reporter.h"
#include "agent/rpc/cluster_service.h"

namespace dlagent::jobs {

struct JobsDeps {
  ClusterClient* client = nullptr;                           // REQUIRED: reaches the other agents
  KeyringFn keyring;                                         // REQUIRED: the cluster keyring in force
  std::function<bool(const std::string& instance_id)> gone;  // REQUIRED: gossip says dead or left
  // REQUIRED: every roster node in rank order (empty: no roster yet), and whether the cluster is READY.
  std::function<std::vector<JobNode>()> roster;
  std::function<bool(std::string* why_not)> ready;
  std::function<std::vector<std::string>()> base_env;  // the node environment ranks start from
  NodeEndpoint::HealthFn health;                       // this node's own health, as other nodes' agentctl health asks for it
  std::function<std::vector<std::string>()> alive;     // the members gossip calls alive here
};

struct JobsOptions {
  std::string self;       // REQUIRED: the instance id
  std::string self_addr;  // REQUIRED: this agent's cluster service, ip:port
  uint16_t dlps_port = 7070;
  std::string agentctl = "/usr/bin/agentctl";
  std::function<std::string(const std::string& job)> dlps_token;  // the dlps launcher's job token (hex)
  Duration tick_interval = std::chrono::milliseconds(200);        // CoordinatorOptions
  Duration round_interval = std::chrono::seconds(5);
  std::shared_ptr<Heartbeat> node_heartbeat, coordinator_heartbeat;
  bool training_reports = true;    // Default: ranks may report training metrics (DLAGENT_METRICS_SOCKET, training.h)
  std::shared_ptr<Scopes> scopes;  // Default: null, ranks in process groups only (NodeJobsOptions::scopes)
};

class Jobs final : private JobNodes {
 public:
  Jobs(JobsDeps deps, JobsOptions options);
  ~Jobs() override;

  // The cluster service's Job handler.
  Result<std::string> HandleRpc(std::string_view sealed) { return server_.Handle(sealed); }
  uint64_t refused_calls() const { return server_.refused(); }

  Result<pb::JobSummary> Run(const pb::RunJobRequest& req, const Caller& caller);
  // Every job the roster's nodes hold, oldest first (ListOrder), each command shortened (Brief): one call to
  // each node.
  Result<pb::JobList> ListAll(const Caller& caller);
  // A page of ListAll (ListPage: `after` is the last page's next, "" for the first; `limit` jobs at most, 0 for
  // 100), as the control socket answers.
  Result<pb::JobList> List(const Caller& caller, const std::string& after = "", uint32_t limit = 0);
  Result<pb::JobOutputReply> Output(const pb::JobOutputRequest& req, const Caller& caller);
  Result<pb::KillJobReply> Kill(const pb::KillJobRequest& req, const Caller& caller);
  // Every roster node asked for its health at once; each row names what fails.
  Result<pb::HealthReport> Health(const pb::HealthCheckRequest& req, const Caller& caller);
  // Starts a process of a running job on one of its nodes, as the job's user (only they or root may ask).
  Result<pb::AttachReply> Attach(const pb::AttachRequest& req, const Caller& caller);
  // agentd is stopping: SIGTERM to every rank on this node, SIGKILL after each job's grace (waits up to wait).
  void StopAll(Duration wait) { local_.StopAll("agentd on " + o_.self + " is stopping", wait); }
  // What the jobs look like from this agent (/metrics): the jobs it coordinates by state, and this node's ranks.
  struct Metrics {
    std::map<std::string, uint64_t> coordinated;  // by state (running, restarting, succeeded, ...)
    Coordinator::Counters coordinator;
    Reporter::Counters reporter;
    NodeJobs::Counters node;
    uint64_t refused_calls = 0;  // other agents' job calls refused (not sealed with the cluster key, malformed)
    // What the ranks here reported, for jobs running here or ended less than kTrainingKept ago, by job id.
    std::map<std::string, pb::Training> training;
  };
  static constexpr Duration kTrainingKept = std::chrono::minutes(5);
  Metrics metrics();

  // Whether the job runs on this node, or ended here less than `grace` ago (NodeJobs::Live).
  bool Live(const std::string& job, Duration grace) const { return local_.Live(job, grace); }
  std::optional<uint32_t> Owner(const std::string& job) const { return local_.Owner(job); }

 private:
  Result<pb::NodeReply> Call(const std::string& instance_id, const std::string& addr, const pb::NodeRequest& req) override;
  bool Gone(const std::string& instance_id) override { return deps_.gone(instance_id); }
  std::vector<pb::JobSpec> Orphans() override { return local_.Orphans(); }
  std::vector<JobNode> Roster() override { return deps_.roster(); }
  // The job's spec from here, its coordinator or any roster node; NotFound names the job.
  Result<pb::JobSpec> FindSpec(const std::string& job);

  const JobsDeps deps_;
  const JobsOptions o_;
  Reporter reporter_;  // before local_, which hands it parts until its thread stops
  NodeJobs local_;
  NodeEndpoint endpoint_;
  JobRpcServer server_;
  Coordinator coordinator_;
};

}  // namespace dlagent::jobs
