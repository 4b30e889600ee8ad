#pragma once
// Formation: the driver of FormationCore (bootstrap/discovery/formation_core.h, where the decisions and the
// phases are explained). It feeds the core the gossip view on its clock and carries out the core's actions:
// HELLOs and long polls on SQS, roster fetches, preparing a generation (shared storage, node files),
// CloudFormation signals, gossip metadata and push-pulls.
//
// Threading: four threads of its own: the tick loop (calls the core, under mu_), the SQS sender and poller
// (blocking calls, cancelled at Stop), and a worker for slow steps (mount, files, CloudFormation). Snapshot()
// and HeldRoster() may be called from any thread.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "agent/rpc/control_handler.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/discovery/discovery_queue.h"
#include "bootstrap/discovery/formation_core.h"
#include "bootstrap/membership/messages.h"
#include "bootstrap/membership/swim.h"
#include "bootstrap/node/mount_manager.h"
#include "bootstrap/node/node_files.h"

namespace dlagent {

// What Formation needs of gossip (Membership in the agent; a fake in tests).
class FormationPeers {
 public:
  virtual ~FormationPeers() = default;
  virtual std::vector<swim::MemberInfo> RawMembers() = 0;
  virtual void UpdateMeta(const swim::MemberMeta& meta) = 0;
  virtual void Join(const std::string& addr) = 0;
  virtual Result<Roster> FetchRoster(const std::string& addr) = 0;
};

struct FormationOptions {
  std::string cluster;
  SealPolicy seal;
  ResealPolicy reseal = ResealPolicy::kOnFailure;
  Duration reseal_settle = std::chrono::seconds(30);
  ResealQuorum reseal_quorum = ResealQuorum::kMajority;
  std::string vote_path;  // where this node's reseal vote is kept across restarts ("" for nowhere); under files.root
  Duration hello_interval = std::chrono::seconds(5);
  Duration poll_wait = std::chrono::seconds(20);
  NodeFilesOptions files;
  std::string wait_handle_url;  // "" for none
  Duration tick = std::chrono::milliseconds(100);
};

// The node as IDENTIFY found it.
struct SelfInfo {
  std::string instance_id;
  std::string ip;
  uint32_t gpus = 0;
  bool master = false;
  bool server = false;
  swim::MemberMeta meta;  // as gossip carries it; roster fields are Formation's
};

struct FormationStatus {
  AgentPhase phase = AgentPhase::kDiscover;
  std::string detail;       // one line, as systemd's STATUS=
  ClusterSnapshot cluster;  // what agentctl status shows
};

class Formation {
 public:
  struct Deps {
    Env* env = nullptr;
    FormationPeers* peers = nullptr;
    SqsClient* sqs_sender = nullptr;  // null: no SQS (gossip seeds only). Cancelled at Stop.
    SqsClient* sqs_poller = nullptr;  // its own client, so that a poll can be cancelled alone
    std::string queue;                // URL, or a name resolved with GetQueueUrl
    DiscoveryQueue::KeysFn keys;      // the cluster keys, the primary first (HELLO signatures)
    MountManager* mounts = nullptr;   // null: no shared storage
    HttpClient* http = nullptr;       // CloudFormation signals
    // At each change of the phase line; log is false when only a countdown moved (STATUS= shows it, the
    // journal gets a line only when something else changed).
    std::function<void(AgentPhase phase, const std::string& detail, bool log)> on_phase;
    std::shared_ptr<Heartbeat> heartbeat;  // beaten by the tick loop; may be null
  };
  // Everything in deps must outlive the Formation. stopping: the owner's flag, set before it calls Stop(); the
  // SQS clients and the mount manager were built with it as their cancel flag, so that no retry outlives the
  // agent (the Formation only reads it, for CloudFormation signals).
  Formation(Deps deps, FormationOptions options, SelfInfo self, const std::atomic<bool>* stopping);
  ~Formation();

  void Start();
  void Stop();

  FormationStatus Snapshot();
  // The roster this node holds (generation 0: none): what peers fetch.
  Roster HeldRoster();

 private:
  void TickLoop();
  void Tick(MonoTime now);
  // Carries out one tick's actions; true when a newer roster was adopted (worth another tick at once).
  bool Act(const FormationActions& a, MonoTime now);
  GossipView Observe();
  void ReportPhase();
  void LogEvents();
  void SenderLoop();
  void PollerLoop();
  void WorkerLoop();
  void Post(std::function<void()> task) REQUIRES(mu_);
  // Waits until Stop() or `d` has passed.
  void WaitFor(MutexLock& lock, Duration d) REQUIRES(mu_);
  void Prepare(Roster roster);
  void Signal(Roster roster);
  Status KeepVote(const Vote& v);  // on disk (vote_path), before it is gossiped
  // Opens the discovery queue on first use (a name is resolved with GetQueueUrl); the sender and the
  // poller each open their own, on their own client.
  Status OpenQueue(SqsClient& sqs, std::unique_ptr<DiscoveryQueue>& queue);

  Deps deps_;
  const FormationOptions options_;
  const SelfInfo self_;
  const std::atomic<bool>* stopping_;
  std::atomic<bool> poll_cancel_{false};  // ends the long poll in flight (Stop, or no longer a poller)

  Mutex mu_;
  std::condition_variable cv_;
  bool stop_ GUARDED_BY(mu_) = false;
  FormationCore core_ GUARDED_BY(mu_);
  std::shared_ptr<const GossipView> view_ GUARDED_BY(mu_);  // the last tick's (the poller skips HELLOs of members)
  bool want_hello_ GUARDED_BY(mu_) = false;
  bool want_poll_ GUARDED_BY(mu_) = false;
  std::optional<AgentPhase> last_phase_ GUARDED_BY(mu_);
  std::string last_detail_ GUARDED_BY(mu_);  // as last logged (without the countdown)
  std::string last_shown_ GUARDED_BY(mu_);   // as last reported, countdown included
  swim::MemberMeta published_ GUARDED_BY(mu_);
  std::deque<std::function<void()>> tasks_ GUARDED_BY(mu_);
  // Set by their threads once the queue URL is known (under mu_, as Snapshot() reads their counters); each
  // thread then uses its own without the lock.
  std::unique_ptr<DiscoveryQueue> send_queue_, poll_queue_;

  std::thread tick_, sender_, poller_, worker_;
};

}  // namespace dlagent
