#pragma once
// Formation: the life of a node after IDENTIFY (docs/cluster.md): DISCOVER -> ROSTER -> PREPARE -> READY.
//
//   discover  While alone, or while it is a poller of a cluster that has no roster yet, the agent sends a
//             signed HELLO to the SQS queue every hello_interval (jittered). The pollers (the leader and at
//             most two helpers; only the leader once a roster exists) long-poll the queue and join each
//             HELLO's sender into gossip. Everyone else sends and reads nothing: SQS cost does not grow
//             with N, and the queue goes quiet once the cluster has formed.
//   roster    The leader (ChooseLeader over the alive members) seals generation g with DecideSeal, or
//             fails the formation. A member that sees another hold a higher (generation, leader) in its
//             gossip metadata fetches that roster over the cluster gRPC service and adopts it.
//   prepare   Mount the shared storage, write the node files, then ack: publish applied_gen = g in gossip.
//   ready     Every roster member has acked g. The leader PUTs SUCCESS to the CloudFormation wait handle
//             once per generation (FAILURE with the reason when the formation failed).
// Later, the leader reseals (g+1) per policy when roster members die or leave (on-failure), or when
// members join or go (on-change), once the view has been stable for reseal_settle.
//
// Threading: four threads of its own: the tick loop (decisions; every tick, state under mu_), the SQS
// sender and poller (blocking calls, cancelled at Stop), and a worker for slow steps (mount, files,
// CloudFormation). Snapshot() and RosterJson() may be called from any thread.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "agent/rpc/control_handler.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/discovery/discovery_queue.h"
#include "bootstrap/discovery/roster_sealer.h"
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

enum class ResealPolicy { kNever, kOnFailure, kOnChange };
Result<ResealPolicy> ParseResealPolicy(std::string_view s);

struct FormationOptions {
  std::string cluster;
  SealPolicy seal;
  ResealPolicy reseal = ResealPolicy::kOnFailure;
  Duration reseal_settle = std::chrono::seconds(30);
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
  swim::MemberMeta meta;  // as gossip carries it; roster fields are Formation's
};

struct FormationStatus {
  std::string phase;   // discover, roster, prepare, ready, standby, failed
  std::string detail;  // one line, as systemd's STATUS=
  std::vector<std::string> unprepared;  // roster members that have not acked the generation
  ClusterSnapshot cluster;              // what agentctl status shows
};

class Formation {
 public:
  struct Deps {
    Env* env = nullptr;
    FormationPeers* peers = nullptr;
    SqsClient* sqs_sender = nullptr;   // null: no SQS (gossip seeds only). Cancelled at Stop.
    SqsClient* sqs_poller = nullptr;   // its own client, so that a poll can be cancelled alone
    std::string queue;                 // URL, or a name resolved with GetQueueUrl
    std::string key;                   // the cluster key (HELLO signatures)
    MountManager* mounts = nullptr;    // null: no shared storage
    HttpClient* http = nullptr;        // CloudFormation signals
    // At each change of the phase line; log is false when only a countdown moved (STATUS= shows it, the
    // journal gets a line only when something else changed).
    std::function<void(const std::string& phase, const std::string& detail, bool log)> on_phase;
  };
  // Everything in deps must outlive the Formation. stopping: set by Stop(); the SQS sender and the mount
  // manager were built with it as their cancel flag, so that no retry outlives the agent. poll_cancel: the
  // poller's cancel flag, also set when this agent stops being a poller.
  Formation(Deps deps, FormationOptions options, SelfInfo self, std::atomic<bool>* stopping, std::atomic<bool>* poll_cancel);
  ~Formation();

  void Start();
  void Stop();

  FormationStatus Snapshot();
  // The roster this node holds, as JSON ("" when none): what peers fetch.
  std::string RosterJson();

 private:
  struct View;
  void TickLoop();
  void Tick(MonoTime now);
  View Observe(MonoTime now);
  void Adopt(const View& v, MonoTime now);
  void Lead(const View& v, MonoTime now);
  void PublishMeta();
  void UpdatePhase(const View& v, MonoTime now);
  void Nudge(const View& v, MonoTime now);
  void SenderLoop();
  void PollerLoop();
  void WorkerLoop();
  void Post(std::function<void()> task);
  void Prepare(Roster roster);
  void Signal(Roster roster);
  // Opens the discovery queue on first use (a name is resolved with GetQueueUrl); the sender and the
  // poller each open their own, on their own client.
  Status OpenQueue(SqsClient& sqs, std::unique_ptr<DiscoveryQueue>& queue);

  Deps deps_;
  const FormationOptions options_;
  const SelfInfo self_;
  std::atomic<bool>* stopping_;
  std::atomic<bool>* poll_cancel_;
  const MonoTime started_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Protected by mu_:
  bool stop_ = false;
  Roster held_;                      // generation 0: none
  uint32_t applied_gen_ = 0;
  bool preparing_ = false;
  std::string prepare_error_;        // the last failed attempt's reason, shown in the phase line
  MonoTime prepare_retry_at_{};
  uint64_t signaled_gen_ = 0;        // CloudFormation signal sent (or being sent) for this generation
  std::set<std::string> seen_;       // every member alive at some tick of this formation
  std::set<std::string> alive_;      // alive at the last tick
  std::optional<MonoTime> change_since_;  // reseal: when the current difference from the roster began
  std::string change_signature_;
  bool want_hello_ = false, want_poll_ = false;
  std::string queue_url_;
  std::string last_phase_, last_detail_;  // as last logged (without the countdown)
  std::string last_shown_;                 // as last reported, countdown included
  FormationStatus status_;
  swim::MemberMeta published_;
  MonoTime last_nudge_{};
  MonoTime next_fetch_{};  // tick thread only
  std::mt19937_64 nudge_rng_{std::random_device{}()};
  std::deque<std::function<void()>> tasks_;
  // Created by their threads once the queue URL is known; read by Status() for counters.
  std::unique_ptr<DiscoveryQueue> send_queue_, poll_queue_;

  std::thread tick_, sender_, poller_, worker_;
};

}  // namespace dlagent
