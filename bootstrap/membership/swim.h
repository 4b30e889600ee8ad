#pragma once
// Swim: the SWIM membership protocol with Lifeguard's refinements, as a pure state machine (no I/O, no
// threads, no clock of its own). The owner feeds it packets (OnPacket) and time (Tick), and sends what it
// puts in the outbox. This lets one process simulate thousands of members on a virtual clock.
//
// Protocol (after hashicorp/memberlist):
// - every probe interval, probe the next member of a shuffled round-robin list: ping; if no ack within
//   the probe timeout, ask k members to ping it for us (ping-req, with nacks); no ack by the end of the
//   interval makes it suspect;
// - suspicion ends in death after a timeout of mult * max(1, log10(N)) * interval, up to 6 times that,
//   shortened as independent members confirm the suspicion;
// - a member that hears it is suspected or dead refutes with a higher incarnation;
// - Lifeguard: a local health score (failed probes, missing nacks, refutations) stretches our own probe
//   interval and timeout, so that a slow member doesn't accuse healthy ones; a suspect member gets the
//   suspicion piggybacked on our pings to it, so that it refutes quickly;
// - updates (alive, suspect, dead) piggyback on every packet and on gossip to a few random members, each
//   sent mult * ceil(log10(N+1)) times, newest and least-sent first;
// - dead members are remembered (dead_memory), so that a stale alive is refused and a healed partition can
//   reconnect to them (reconnect requests in the outbox).
//
// Thread safety: none; the owner serialises calls.

#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/membership/messages.h"

namespace dlagent::swim {

struct SwimConfig {
  Duration probe_interval = std::chrono::seconds(1);          // Default (LAN): 1 s.
  Duration probe_timeout = std::chrono::milliseconds(500);    // Default (LAN): 500 ms.
  int indirect_checks = 3;                                    // Default: 3 members asked to ping.
  int suspicion_mult = 4;                                     // Default: 4.
  int suspicion_max_mult = 6;                                 // Default: max timeout = 6 x min.
  int retransmit_mult = 4;                                    // Default: 4.
  int awareness_max = 8;                                      // Default: 8 (Lifeguard); 1 disables local health.
  Duration gossip_interval = std::chrono::milliseconds(200);  // Default: 200 ms.
  int gossip_nodes = 3;                                       // Default: 3.
  Duration gossip_to_dead = std::chrono::seconds(30);         // Default: dead members get gossip this long.
  Duration dead_memory = std::chrono::hours(1);               // Default: remembered (to refuse stale alives) 1 h.
  Duration reconnect_interval = std::chrono::seconds(10);     // Default: try a dead member's address every 10 s.
  Duration push_pull_interval = std::chrono::seconds(30);     // Default: 30 s, scaled by log2(N) past 32 members.
  size_t max_packet = 1400 - 37;                              // Default: 1400 B minus Keyring::kOverhead.

  static SwimConfig Lan() { return SwimConfig(); }
  // Small clusters on a good network: faster detection.
  static SwimConfig Fast();
};

enum class MemberState : uint8_t { kAlive, kSuspect, kDead, kLeft };
const char* MemberStateName(MemberState s);

struct MemberInfo {
  std::string name;
  std::string addr;
  std::string meta;
  uint32_t incarnation = 0;
  MemberState state = MemberState::kAlive;
  MonoTime state_change{};
  uint32_t flaps = 0;  // times it came back alive after being suspect or dead
};

// The full state for push-pull: each member as an Alive, followed by a Suspect or Dead when it is not
// alive. DecodeState refuses more than max_members or a malformed encoding.
std::string EncodeState(const std::vector<MemberInfo>& members);
Result<std::vector<MemberInfo>> DecodeState(std::string_view bytes, size_t max_members = 20000);

// A member changed state (for logs and metrics).
struct MemberEvent {
  std::string name;
  MemberState from, to;
  uint32_t incarnation;
};

struct OutPacket {
  std::string to_addr;
  std::string bytes;
};

class Swim {
 public:
  Swim(SwimConfig config, std::string name, std::string addr, std::string meta, uint64_t seed, MonoTime now);

  // Feeds a packet received from from_addr. A malformed packet is refused whole (returned), nothing applied.
  Status OnPacket(std::string_view bytes, MonoTime now);
  // Runs the timers due at `now`. Call at least every 50 ms or so.
  void Tick(MonoTime now);
  // Packets to send, in order.
  std::vector<OutPacket> TakeOutbox();
  // Addresses the owner should push-pull the full state with (periodic anti-entropy and reconnects to dead
  // members after a partition heals). The owner calls LocalState/MergeState on both ends.
  std::vector<std::string> TakePushPullRequests();
  // State changes of other members since the last call.
  std::vector<MemberEvent> TakeEvents();

  // Full state for push-pull (join and anti-entropy).
  std::vector<MemberInfo> LocalState() const;
  void MergeState(const std::vector<MemberInfo>& remote, MonoTime now);

  // Graceful leave: broadcast it; the owner keeps ticking for a moment so that it spreads.
  void Leave(MonoTime now);
  // Changes our metadata (bumps our incarnation and gossips it).
  void UpdateMeta(std::string meta, MonoTime now);

  const std::string& name() const { return self_; }
  uint32_t incarnation() const { return members_.at(self_).incarnation; }
  int health_score() const { return awareness_; }
  std::vector<MemberInfo> Members() const;
  const MemberInfo* Find(const std::string& name) const;
  // Members alive or suspect, ourselves included.
  size_t NumActive() const;

 private:
  struct Suspicion {
    MonoTime start;
    Duration min, max;
    int needed = 0;      // confirmations that bring the timeout to min
    std::string origin;  // who raised it: not an independent confirmation
    std::vector<std::string> confirmations;
    MonoTime deadline;
  };
  struct Broadcast {
    std::string bytes;  // encoded message
    int transmits = 0;
    uint64_t id = 0;  // newer first among equals
  };
  struct PendingProbe {
    uint32_t seq = 0;
    std::string target;
    MonoTime sent, indirect_at, fail_at;
    bool acked = false, indirect_sent = false;
    int expected_nacks = 0, nacks = 0;
  };
  struct Relay {  // a ping we send for someone else's ping-req
    std::string requester_addr;
    uint32_t requester_seq;
    bool want_nack;
    MonoTime nack_at;
  };

  void Handle(const Message& m, MonoTime now);
  void OnPing(const Ping& p, MonoTime now);
  void OnIndirectPing(const IndirectPing& p, MonoTime now);
  void OnAck(const Ack& a, MonoTime now);
  void OnNack(const Nack& n);
  void OnAlive(const Alive& a, MonoTime now);
  void OnSuspect(const Suspect& s, MonoTime now);
  void OnDead(const Dead& d, MonoTime now);

  void Probe(MonoTime now);
  void FinishProbe(MonoTime now);
  void Gossip(MonoTime now);
  void Refute(uint32_t accused_incarnation);
  void SetState(MemberInfo& m, MemberState s, MonoTime now);
  void ForgetOldDead(MonoTime now);
  void StartSuspicion(MemberInfo& m, const std::string& from, MonoTime now);
  void Queue(const std::string& node, const Message& m);
  void Send(const std::string& addr, const Message& m, const std::string& about = "");
  std::string Piggyback(size_t room, const std::string& prefer_about);
  void AdjustAwareness(int delta);
  Duration Scaled(Duration d) const { return d * (awareness_ + 1); }
  int RetransmitLimit() const;
  std::vector<std::string> RandomMembers(size_t k, const std::vector<std::string>& exclude, bool include_dead, MonoTime now);

  SwimConfig config_;
  std::string self_;
  std::mt19937_64 rng_;
  std::map<std::string, MemberInfo> members_;  // ourselves included
  std::vector<std::string> names_;             // the keys of members_, for O(1) random picks
  size_t active_ = 0;                          // members alive or suspect, ourselves included
  std::unordered_map<std::string, Suspicion> suspicions_;
  std::vector<std::string> probe_order_;
  size_t probe_index_ = 0;
  std::optional<PendingProbe> probe_;
  std::unordered_map<uint32_t, Relay> relays_;
  // At most one pending update per member, keyed by it, and an index in sending order (least sent first,
  // then newest), so that a packet takes what it needs in O(k log q) rather than scanning the queue, which
  // holds an update per member while a large cluster forms. The index points at the map's keys, which stay
  // put (unordered_map nodes do not move).
  std::unordered_map<std::string, Broadcast> broadcasts_;
  std::set<std::tuple<int, uint64_t, const std::string*>> send_order_;  // (transmits, ~id, member)
  uint64_t broadcast_id_ = 0;
  uint32_t seq_ = 0;
  int awareness_ = 0;
  MonoTime next_probe_, next_gossip_, next_reconnect_, next_push_pull_;
  std::vector<OutPacket> outbox_;
  std::vector<std::string> push_pulls_;
  std::vector<MemberEvent> events_;
  bool left_ = false;
};

}  // namespace dlagent::swim
