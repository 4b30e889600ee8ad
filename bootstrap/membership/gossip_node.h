#pragma once
// GossipNode: a Swim state machine on a real network. UDP packets (sealed with the cluster keyring) carry
// probes and gossip; full-state push-pull goes over a PushPullTransport (gRPC over TCP in the agent).
// Joins through its seeds at start, and again whenever it finds itself alone (every rejoin_interval), so
// that a member cut off from everyone comes back by itself.
//
// Threading: one loop thread (receive, Tick every tick_interval, send) and one push-pull worker thread,
// both owned here; the Swim state is protected by mu_. Members(), HandlePushPull() and stats() may be
// called from any thread.

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/membership/packet_crypto.h"
#include "bootstrap/membership/swim.h"

namespace dlagent::swim {

class PushPullTransport {
 public:
  virtual ~PushPullTransport() = default;
  // Sends our sealed state to addr ("ip:port") and returns the peer's sealed state. Bounded by a deadline.
  virtual Result<std::string> Exchange(const std::string& addr, const std::string& sealed_state) = 0;
};

struct GossipOptions {
  std::string name;                   // REQUIRED: unique in the cluster (the instance id)
  std::string bind_host = "0.0.0.0";  // Default: every interface.
  int port = 7946;                    // Default: 7946, UDP (and TCP for push-pull).
  std::string advertise_host;         // REQUIRED when bind_host is 0.0.0.0: the address peers use
  std::string meta;                   // EncodeMeta(...)
  std::vector<std::string> seeds;     // "ip:port" of members to join through
  SwimConfig swim = SwimConfig::Lan();
  Duration rejoin_interval = std::chrono::seconds(5);  // Default: 5 s between rejoin attempts when alone.
  std::shared_ptr<Heartbeat> heartbeat;                // Default: none. Beaten by the gossip loop (at least every 200 ms).
};

struct GossipStats {
  uint64_t packets_in = 0, packets_out = 0;
  uint64_t auth_failures = 0;  // dropped unread: wrong key or cluster, or tampered
  uint64_t replays = 0;        // dropped unread: seen before, or sealed outside the replay window
  uint64_t malformed = 0;      // authenticated but not a valid packet
  uint64_t push_pulls = 0, push_pull_failures = 0;
  uint64_t push_pulls_refused = 0;  // incoming, over the concurrency cap
};

class GossipNode {
 public:
  // Binds the UDP socket and starts the threads. transport must outlive the node.
  static Result<std::unique_ptr<GossipNode>> Start(GossipOptions options, Keyring keyring, PushPullTransport* transport);
  ~GossipNode();  // stops without leaving

  // Gossips a graceful leave for `grace`, then stops the threads.
  void Leave(Duration grace);
  std::vector<MemberInfo> Members();
  // Changes our metadata; gossip carries it to every member.
  void UpdateMeta(std::string meta);
  // Puts another keyring in force (key rotation): packets are sealed with its primary from now on, and
  // opened with any of its keys.
  void SetKeyring(Keyring keyring);
  // The keyring in force (what push-pull and roster fetches seal and open with too).
  std::shared_ptr<const Keyring> keyring();
  // Joins the member at addr ("ip:port") with a push-pull (dropped when many are already queued).
  void Join(const std::string& addr);
  // Serves a peer's push-pull: merges its state, answers with ours. PermissionDenied when it fails
  // authentication (another cluster, or no key).
  Result<std::string> HandlePushPull(std::string_view sealed_state);
  GossipStats stats();
  const std::string& advertise_addr() const { return advertise_addr_; }
  int health_score();

 private:
  GossipNode(GossipOptions options, Keyring keyring, PushPullTransport* transport, int fd, int wake_fd);
  void Loop();
  void Worker();
  void PushPull(const std::string& addr);
  void Stop();
  // Opens a sealed packet or state once: refused (and counted) when it fails authentication or is replayed.
  // REQUIRES: mu_ held.
  Result<std::string> OpenOnce(std::string_view sealed) REQUIRES(mu_);

  const GossipOptions options_;
  std::shared_ptr<const Keyring> keyring_ GUARDED_BY(mu_);
  PushPullTransport* transport_;
  const int fd_, wake_fd_;
  std::string advertise_addr_;

  Mutex mu_;
  std::unique_ptr<Swim> swim_ PT_GUARDED_BY(mu_);
  GossipStats stats_ GUARDED_BY(mu_);
  ReplayWindow replays_ GUARDED_BY(mu_);  // every sealed packet and push-pull state passes it
  std::deque<std::string> push_pull_queue_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::condition_variable cv_;

  std::atomic<int> serving_push_pulls_{0};
  std::thread loop_, worker_;
};

}  // namespace dlagent::swim
