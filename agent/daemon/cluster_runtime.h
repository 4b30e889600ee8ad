#pragma once
// ClusterRuntime: everything agentd runs to form a cluster (cluster.expected_nodes > 0): IDENTIFY (IMDS
// and the GPU count, retried until it works or the agent stops), then gossip, the SQS discovery clients,
// shared storage, the Formation, and the spot-notice poller. The daemon owns one and asks it for status.
//
// Threading: Start() returns at once; a thread of its own identifies the node and starts the rest.
// Status() and Members() may be called from any thread. Stop() (or the destructor) leaves the cluster.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "agent/daemon/cluster_keys.h"
#include "agent/daemon/config.h"
#include "agent/daemon/formation.h"
#include "agent/daemon/membership.h"
#include "agent/jobs/jobs.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/imds_event_poller.h"
#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

class ClusterRuntime {
 public:
  using PhaseFn = std::function<void(AgentPhase phase, const std::string& detail, bool log)>;
  // env must outlive the runtime. on_phase is called from the runtime's threads at each change; on_leave,
  // once, when the node must leave (a spot interruption notice, or a maintenance event near with
  // cluster.leave_before_maintenance set).
  // heartbeats (which must outlive the runtime) gets the formation's and gossip's loops.
  // on_keys, with the cluster keys each time they are loaded (at start, and at each ReloadKeys).
  ClusterRuntime(Env& env, Config config, Heartbeats& heartbeats, PhaseFn on_phase, std::function<void(const std::string& why)> on_leave,
                 std::function<void(const std::vector<std::string>& keys)> on_keys = nullptr);
  ~ClusterRuntime();

  void Start();
  // Gossips a graceful leave and stops every thread.
  void Stop();

  IdentitySnapshot Identity();
  // The formation as agentctl status shows it; nullopt until it runs.
  std::optional<ClusterSnapshot> Cluster();
  MemberListSnapshot Members();
  // Loads the cluster keys again from their source (key rotation); OK and nothing done before gossip runs.
  Status ReloadKeys();
  // The jobs this node runs and coordinates; null until gossip and the formation run.
  std::shared_ptr<jobs::Jobs> Jobs();

 private:
  void Run();
  Status Setup();
  Result<IdentitySnapshot> Identify();
  // Says what the node waits for (phase line, log), then waits the backoff's next delay; false when stopping.
  bool WaitToRetry(Backoff& backoff, const std::string& waiting_for, const Status& why);
  // Serves jobs: this node's ranks, the jobs started here, and the sealed jobs RPC of the other agents.
  void StartJobs(const IdentitySnapshot& id, const NodeFilesOptions& files);
  // What this node says of itself to agentctl health on any node.
  jobs::pb::HealthReply Health(const jobs::pb::HealthRequest& req, dlagent::Formation& formation);
  // The poller's view of this instance's scheduled maintenance: kept for status, and a graceful leave when one
  // is near and cluster.leave_before_maintenance is set.
  void OnMaintenance(const std::vector<ScheduledEvent>& active);

  Env& env_;
  const Config config_;
  Heartbeats& heartbeats_;
  PhaseFn on_phase_;
  std::function<void(const std::string& why)> on_leave_;
  std::function<void(const std::vector<std::string>& keys)> on_keys_;
  std::unique_ptr<ClusterKeyLoader> keys_;  // made before gossip; used by Setup's thread, then by ReloadKeys
  std::atomic<bool> leaving_{false};  // on_leave_ called (once)
  // stopping_: set by Stop(); every blocking retry (SQS, mounts, CloudFormation) gives up when it is set.
  std::atomic<bool> stopping_{false};

  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<ImdsClient> imds_;
  std::unique_ptr<CredentialChain> credentials_;
  std::unique_ptr<SqsClient> sqs_sender_, sqs_poller_;
  std::unique_ptr<MountManager> mounts_;
  std::unique_ptr<ImdsEventPoller> events_;

  Mutex mu_;
  std::condition_variable cv_;
  IdentitySnapshot identity_ GUARDED_BY(mu_);
  std::vector<std::string> maintenance_ GUARDED_BY(mu_);  // active scheduled events, one line each
  std::set<std::string> unparsed_event_times_;           // the event poller's thread only
  std::unique_ptr<Membership> membership_;    // set once under mu_, then read without it
  std::unique_ptr<dlagent::Formation> formation_;  // likewise
  std::shared_ptr<jobs::Jobs> jobs_ GUARDED_BY(mu_);  // shared with the jobs RPC's calls in flight
  std::atomic<bool> running_{false};          // membership_ and formation_ are set
  std::thread thread_;
};

}  // namespace dlagent
