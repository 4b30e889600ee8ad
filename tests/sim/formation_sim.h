#pragma once
// A deterministic simulator of FormationCore: N nodes in one process on a virtual clock, each running the real
// core. Two models of the world around it:
//   - perfect (the default, for unit tests): every node that is up is in one gossip view at once, roster
//     fetches answer at once, preparing takes `prepare_time`;
//   - discovery: nodes boot alone and meet only through a simulated SQS queue (each request takes
//     `sqs_latency`, a share is throttled and retried after a second, a sent message is seen by receives
//     only after `consistency`, a received one that is not deleted comes back after the visibility timeout,
//     a share is delivered twice) and gossip (a node a poller joins is in the view at once, as a push-pull
//     makes it; metadata changes reach the others after `gossip_delay`; a crashed member stays in the view
//     for `detect`). Pollers long-poll for up to `poll_wait`; HELLOs go out every [interval/2, interval].
// Same seed, same run. The SWIM simulator (swim_sim.h) covers gossip itself.
//
// Thread safety: none.

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "bootstrap/discovery/formation_core.h"

namespace dlagent::testing {

struct FormationSimOptions {
  Duration tick = std::chrono::milliseconds(100);
  Duration prepare_time = Duration(0);
  bool discovery = false;  // false: the perfect model
  Duration hello_interval = std::chrono::seconds(5);
  Duration poll_wait = std::chrono::seconds(20);
  Duration sqs_latency = std::chrono::milliseconds(20);
  double throttle = 0.0;   // share of SQS requests throttled
  double duplicate = 0.0;  // share of received HELLOs delivered again after the visibility timeout
  Duration visibility_timeout = std::chrono::seconds(30);
  Duration consistency = std::chrono::milliseconds(200);
  Duration gossip_delay = std::chrono::seconds(1);
  Duration detect = std::chrono::seconds(5);
  uint64_t seed = 1;
};

struct FormationSimCounters {
  uint64_t sqs_requests = 0;  // sends, receives and deletes
  uint64_t throttled = 0;
  size_t max_pollers = 0;  // nodes that poll at once, at the most
  size_t pollers_now = 0;  // at the last step
  double seal_cpu_ms = 0;  // CPU time of the tick in which a leader sealed the first generation
};

class FormationSim {
 public:
  // `base` is every node's config (self is set per node).
  explicit FormationSim(FormationConfig base, FormationSimOptions options = {});
  // The perfect model with this tick and prepare time.
  FormationSim(FormationConfig base, Duration tick, Duration prepare_time);

  // Boots a node now: "i-<1000+n>" at 10.<n / 62500>.<n / 250 % 250>.<n % 250 + 1>, n counting from 0.
  int Boot(bool master = false);
  void Crash(int i);
  void Restart(int i);  // the same instance, a fresh agent (with the vote its last agent kept on disk)
  // Cuts the listed nodes off from the rest: two gossip views, and no roster fetch across (at once, as if
  // both sides had declared the other dead). Heal() joins them again.
  void Partition(const std::vector<int>& side);
  void Heal();

  void Run(Duration d);
  // Runs until every listed up node's phase is `phase` (and, when set, its generation is `generation`), or
  // `limit` passes; returns the virtual time it took.
  std::optional<Duration> RunUntil(const std::vector<int>& nodes, FormationPhase phase, Duration limit, uint64_t generation = 0);

  int size() const { return static_cast<int>(nodes_.size()); }
  bool up(int i) const { return nodes_[i].up; }
  const FormationReport& report(int i) const { return nodes_[i].core->report(); }
  const Roster& held(int i) const { return nodes_[i].core->held(); }
  // Every roster some node sealed (leader and generation), in order: at most one per generation.
  const std::vector<Roster>& sealed() const { return sealed_; }
  std::string id(int i) const { return nodes_[i].peer.node.instance_id; }
  // The instance ids of node i's roster, in rank order.
  std::vector<std::string> ranks(int i) const;
  const std::vector<Roster>& signals() const { return signals_; }
  const FormationSimCounters& counters() const { return counters_; }
  MonoTime now() const { return now_; }

 private:
  struct Node {
    PeerState peer;  // as the others see it
    std::unique_ptr<FormationCore> core;
    bool up = false;
    int side = 0;               // Partition()
    bool member = false;        // in the gossip cluster (discovery model)
    MonoTime gone_from_view{};  // crashed: in the view until then
    std::optional<std::pair<MonoTime, RosterRef>> preparing;
    MonoTime next_hello{}, sqs_ready{};  // next HELLO; no SQS request before sqs_ready (latency, throttling)
    bool polling = false;
    MonoTime poll_ends{};
  };
  struct Message {
    int from;
    MonoTime visible_at;
  };
  struct MetaChange {
    MonoTime at;
    int node;
    uint64_t roster_gen, applied_gen;
    std::string roster_leader;
    Vote vote;
  };
  void Step();
  // The view shared by one side, rebuilt only after something in it changed (version_ counts the changes).
  const GossipView& View(int side);
  bool InView(const Node& n, int side) const;
  void Discover(int i, const FormationActions& a);
  bool Request(Node& n);  // one SQS request; false when throttled

  const FormationConfig base_;
  const FormationSimOptions o_;
  std::mt19937_64 rng_;
  MonoTime now_{std::chrono::hours(1)};
  std::vector<Node> nodes_;
  std::unordered_map<std::string, int> by_id_;  // instance id -> nodes_
  std::deque<Message> queue_;                   // in the order they become visible
  std::deque<Message> redelivered_;             // duplicates, until their visibility timeout passes
  std::deque<MetaChange> meta_changes_;
  std::vector<Roster> signals_, sealed_;
  FormationSimCounters counters_;
  uint64_t version_ = 1;
  uint64_t view_version_[2] = {0, 0};
  GossipView view_[2];
};

}  // namespace dlagent::testing
