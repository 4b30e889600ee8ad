#pragma once
// DiscoveryQueue: the cluster's SQS queue as a rendezvous. A booting agent sends signed HELLOs; the leader
// (and at most two helpers) poll with long polls, hand each accepted HELLO to the caller (which joins the
// sender into gossip), and delete every message they read: accepted, duplicate or refused. A refused
// message (bad signature, another cluster, stale, malformed) is counted and logged, never acted on.
//
// Thread safety: one poller per object; SendHello may be called from any thread.

#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/discovery/hello.h"

namespace dlagent {

struct DiscoveryCounters {
  uint64_t sent = 0, received = 0, accepted = 0, duplicates = 0;
  std::map<HelloVerdict, uint64_t> refused;
};

class DiscoveryQueue {
 public:
  // The cluster keys (raw bytes) in force, the primary first: HELLOs are signed with it and accepted under
  // any of them, so that the keys can rotate while the cluster runs. Called from the queue's threads.
  using KeysFn = std::function<std::vector<std::string>()>;
  // sqs and env must outlive the queue.
  DiscoveryQueue(SqsClient& sqs, Env& env, std::string queue_url, KeysFn keys, std::string cluster);

  Status SendHello(const Hello& hello);

  // One long poll (up to `wait`): calls on_hello for each accepted HELLO from an instance not handed over
  // in the last `dedup_window`, then deletes every message read. Returns how many HELLOs were handed over.
  // cancel (may be null): ends the long poll early, with Cancelled.
  Result<int> PollOnce(Duration wait, const std::function<void(const Hello&)>& on_hello, Duration dedup_window = std::chrono::seconds(10),
                       const std::atomic<bool>* cancel = nullptr);

  DiscoveryCounters counters() const;

 private:
  SqsClient& sqs_;
  Env& env_;
  const std::string queue_url_;
  const KeysFn keys_;
  const std::string cluster_;
  mutable Mutex mu_;
  DiscoveryCounters counters_ GUARDED_BY(mu_);
  std::map<std::string, MonoTime> handed_over_;  // instance id -> when; poller only
};

}  // namespace dlagent
