#pragma once
// FormationCore: the decisions of DISCOVER -> ROSTER -> PREPARE -> READY (docs/cluster.md) as a pure state
// machine, as Swim is for membership. Its inputs are the gossip view and the time (Tick), the rosters fetched
// from peers (OnRosterFetched) and the results of preparing a generation (OnPrepared); its outputs are the
// actions of a tick (FormationActions), journal events (TakeEvents) and a report of where the formation
// stands (report()). It owns no thread, socket, file or clock: agent/daemon/formation.h drives it, and
// tests drive it on a virtual clock.
//
// Rosters and healing:
//   - The first generation is sealed by DecideSeal (expected nodes, or min_nodes at the join deadline) in
//     OrderRoster's order (master first, then by IP).
//   - Later generations keep every surviving member's rank. A dead member's rank goes to a node that is not
//     in the roster (an Auto Scaling group's replacement), the master first, then by IP; ranks with nobody to
//     take them are dropped (later ranks move down). Newcomers beyond the dead ranks join at the end while the
//     roster is below expected_nodes (on-change: always).
//   - The leader reseals once the difference between its view and the roster has been the same for
//     reseal_settle: on-failure when a member is gone, on-change also when a node joined; never does not
//     reseal a roster that formed. A failed roster whose last good members are all back, and no one else,
//     is whole again: it is resealed, the same nodes at the same ranks, after rejoin_settle (a member that
//     flaps changes the view within it, so that still waits for calm).
//   - Every generation after the first needs a majority of the previous roster's members to accept it
//     (ResealQuorum::kMajority): the leader proposes generation P by voting for itself in its gossip
//     metadata, each member votes for at most one leader per generation (its leader's proposal, above the
//     generation it holds and above its last vote), and the leader seals P once a majority of the previous
//     roster (itself included) voted for it. Two majorities of one roster share a member, so no generation
//     is sealed by two leaders; a partitioned minority seals nothing (it stays ready and degraded) until the
//     partition heals. A leader whose proposal others refused (they voted for another leader at P) proposes
//     above the highest vote it sees. The driver keeps the vote on disk before gossiping it (FormationActions::
//     vote), so a restarted member does not vote twice. The first generation is sealed by the leader alone
//     (DecideSeal): with min_nodes above half of expected_nodes, two sides of a partition cannot both seal it.
//   - A reseal below min_nodes is a failed generation: it lists the previous generation's nodes (so a member
//     that comes back takes its old rank) and is not prepared. `failed` is not final: once the nodes alive
//     again would make a roster of at least min_nodes (for the settle time), the leader seals a new generation.
//   - After READY, a dead member does not send the node back to `prepare`: a member that has acked a
//     generation stays acked, and the report says ready, degraded, naming the dead and when the leader will
//     reseal. The report shows the last generation that formed, never a failed one, as the roster.
//
// Thread safety: none; the driver serialises every call.

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/discovery/roster_sealer.h"
#include "bootstrap/node/node_files.h"

namespace dlagent {

enum class ResealPolicy { kNever, kOnFailure, kOnChange };

enum class ResealQuorum { kMajority, kLeader };  // kLeader: the leader alone decides (no votes)

enum class FormationPhase { kDiscover, kRoster, kPrepare, kReady, kStandby, kFailed };
std::string_view PhaseName(FormationPhase p);  // "discover", ..., as agentctl and STATUS= show it

struct FormationConfig {
  std::string cluster;  // REQUIRED
  std::string self;     // REQUIRED: this node's instance id
  SealPolicy seal;
  ResealPolicy reseal = ResealPolicy::kOnFailure;     // Default: on-failure
  Duration reseal_settle = std::chrono::seconds(30);  // Default: 30 s
  Duration rejoin_settle = std::chrono::seconds(2);   // Default: 2 s, for a failed roster whole again
  ResealQuorum quorum = ResealQuorum::kMajority;      // Default: majority
  bool signal = false;                                // a CloudFormation wait handle is configured
  Duration prepare_retry = std::chrono::seconds(10);  // Default: 10 s after a failed prepare
  Duration fetch_retry = std::chrono::seconds(1);     // Default: 1 s after a failed roster fetch
  Duration nudge_interval = std::chrono::seconds(1);  // Default: 1 s between push-pulls with a member waited on
};

// A member's acceptance of `leader` sealing roster `generation` (a leader's vote for itself is its proposal).
struct Vote {
  uint64_t generation = 0;  // 0: none
  std::string leader;
  bool operator==(const Vote&) const = default;
};

// Rosters are never changed once made, so cores share them: the simulator's 10,000 nodes hold one copy of a
// 10,000-node roster, not 10,000.
using RosterRef = std::shared_ptr<const Roster>;

// One alive (or suspect) member as gossip shows it, this node included.
struct PeerState {
  Candidate node;
  std::string addr;  // gossip address
  uint64_t roster_gen = 0;
  std::string roster_leader;
  uint64_t applied_gen = 0;
  Vote vote;
};

// The gossip view of one moment, built once (MakeGossipView) and read by every tick that uses it: the
// agent builds one per tick, the simulator one per step for all its nodes. What every core would derive
// from it alike is derived once, here.
struct GossipView {
  std::vector<PeerState> members;                 // alive and suspect members with metadata
  std::unordered_map<std::string, size_t> index;  // instance id -> members
  std::string leader;                             // ChooseLeader
  std::vector<std::string> pollers_forming;       // ChoosePollers with two helpers (no roster yet)
  std::vector<std::string> pollers_formed;        // the leader alone (a roster exists)
  // The first two members (in order) that announce the highest (roster_gen, roster_leader): a core fetches
  // the first that is not itself. members.size() for none.
  size_t best_roster[2] = {0, 0};
  // 0: unknown. Two views with one nonzero version have the same members and metadata, so a core may keep
  // what it derived from the last one (the simulator's nodes share views that change far less often than
  // they tick).
  uint64_t version = 0;
  const PeerState* Find(const std::string& id) const {
    auto it = index.find(id);
    return it == index.end() ? nullptr : &members[it->second];
  }

  // A roster as this view sees it, worked out on the first call for that roster and kept for the next cores
  // that ask (the last few rosters asked for). Not thread-safe: one core reads a view at a time.
  struct RosterInView {
    RosterRef roster;
    std::vector<int32_t> member;    // by rank: index in members, -1 when not in the view
    std::vector<uint64_t> applied;  // by rank: the member's applied_gen, 0 when not in the view
    uint64_t max_applied = 0;
    std::vector<std::string> dead;  // ranks not in the view, in rank order
  };
  const RosterInView& In(const RosterRef& roster) const;

 private:
  mutable std::deque<RosterInView> rosters_;
};
GossipView MakeGossipView(std::vector<PeerState> members, uint64_t version = 0);

struct FormationEvent {
  enum Level { kInfo, kWarning, kError } level = kInfo;
  std::string text;
};

// What the driver does after a tick. Every field is a request; none has been done.
struct FormationActions {
  std::string fetch_from;            // instance id whose roster to fetch (then OnRosterFetched); "" for none
  std::string fetch_addr;            // its gossip address
  RosterRef prepare;                 // mount storage, write node files (then OnPrepared); null for none
  RosterRef signal;                  // PUT SUCCESS or FAILURE to the CloudFormation wait handle; null for none
  bool publish = false;              // roster_gen / roster_leader / applied_gen / vote changed: gossip them
  std::optional<Vote> vote;          // a new vote: keep it on disk, then OnVoteKept (it is gossiped after that)
  std::string nudge_addr;            // push-pull with this member now; "" for none
  bool hello = false, poll = false;  // discovery roles: send HELLOs; long-poll the queue
};

struct FormationReport {
  FormationPhase phase = FormationPhase::kDiscover;
  std::string detail;     // one line, as STATUS= (without the countdown)
  std::string countdown;  // ", deadline in 4m" or ""; changes every second, so not worth a journal line
  std::string leader;
  uint64_t generation = 0;        // of `roster`: the last generation that formed; 0 for none
  std::string sealed_by;          // the leader that sealed `roster` (a roster is its generation and its sealer)
  int32_t rank = -1;              // in `roster`
  RosterRef roster;               // the last generation that formed (never null: no nodes for none)
  std::vector<bool> acked;        // by rank in `roster`: the member was seen to have prepared it
  size_t unprepared = 0;          // members not acked
  std::string failure;            // the last seal failed: why
  std::vector<std::string> dead;  // roster members not alive now
  uint32_t alive = 0, expected = 0;
  int64_t deadline_in_ms = -1;  // the leader's join deadline while it waits; -1 otherwise
  int64_t reseal_in_ms = -1;    // the leader's reseal countdown while the view differs; -1 otherwise
  std::string quorum_wait;      // the leader waits for votes: "generation 3: 1 of 3 votes needed" ("" otherwise)
};

class FormationCore {
 public:
  // `vote`: the last vote this node gave (kept on disk across restarts by the driver).
  FormationCore(FormationConfig config, MonoTime started, uint64_t seed, Vote vote = {});

  // One look at the view (read during the call only).
  FormationActions Tick(MonoTime now, const GossipView& view);
  // The roster fetched from `from` (announced as roster_gen/roster_leader in its gossip metadata).
  void OnRosterFetched(const std::string& from, const Result<RosterRef>& roster, MonoTime now);
  // Preparing `roster` finished (storage mounted, files written) or failed.
  void OnPrepared(const Roster& roster, const Status& result, MonoTime now);
  // The vote asked for (FormationActions::vote) is on disk, or could not be kept (then it is not given,
  // and asked for again after fetch_retry).
  void OnVoteKept(const Vote& vote, const Status& result, MonoTime now);

  const FormationReport& report() const { return report_; }
  const Roster& held() const { return *held_; }  // what peers fetch; generation 0: none
  const RosterRef& held_ref() const { return held_; }
  uint64_t applied_gen() const { return applied_gen_; }
  const Vote& vote() const { return vote_; }  // the last vote kept (and gossiped)
  std::vector<FormationEvent> TakeEvents();

 private:
  void Observe();
  void Adopt(MonoTime now, FormationActions& out);
  void Lead(MonoTime now, FormationActions& out);
  void Accept(MonoTime now, FormationActions& out);  // vote for the leader's proposal
  void CastVote(Vote v, MonoTime now, FormationActions& out);
  uint64_t NextGeneration() const;  // the generation the leader proposes next
  // True once a majority of the held roster voted for `r` (the leader's vote for itself proposes it).
  bool Quorum(const Roster& r, MonoTime now, FormationActions& out);
  void Hold(RosterRef r);  // held_ = r, and what follows from it
  void Formed();           // good_ = held_: carry the acks seen over to its ranks
  void Seal(Roster r, const std::string& why, FormationActions& out);
  // The next generation's nodes from the held roster and the view (see the header comment).
  std::vector<RosterNode> NextNodes(std::vector<std::string>* gone, std::vector<std::string>* joined) const;
  void Report(MonoTime now, FormationActions& out);
  void RosterReport();  // rank, roster, dead, unprepared
  void ReportPhase(MonoTime now, FormationActions& out);
  void Nudge(MonoTime now, FormationActions& out);
  void Log(FormationEvent::Level level, std::string text) { events_.push_back({level, std::move(text)}); }
  bool InRoster(const std::string& id) const;

  const FormationConfig config_;
  const MonoTime started_;
  std::mt19937_64 rng_;

  const GossipView* view_ = nullptr;  // during Tick only
  std::string leader_;                // as of the last tick

  RosterRef held_;  // the last roster adopted or sealed, failed ones included; generation 0: none
  bool self_in_held_ = false;
  RosterRef good_;  // the last one that formed (what the report shows)
  int32_t good_rank_ = -1;
  uint64_t applied_gen_ = 0;
  Vote vote_;
  Vote pending_vote_;                 // asked to be kept, not yet kept
  MonoTime vote_retry_at_{};          // after a vote could not be kept
  std::string quorum_logged_;         // the quorum wait last logged
  std::vector<std::string> unvoted_;  // alive members of the held roster that did not vote for the proposal
  bool preparing_ = false;
  std::string prepare_error_;
  MonoTime prepare_retry_at_{};
  uint64_t signaled_gen_ = 0;
  std::set<std::string> seen_;  // members seen while leading, before the first seal
  // By rank in good_: the highest generation each member was seen to apply. Sticky: a member that acked and
  // then died stays acked.
  std::vector<uint64_t> seen_applied_;
  std::string waiting_for_;               // the first unprepared members, named
  std::optional<MonoTime> change_since_;  // when the view's present difference from the roster began
  std::string change_signature_;
  Duration change_settle_{};  // the calm that difference needs (reseal_settle, or rejoin_settle when whole again)
  MonoTime next_fetch_{};
  MonoTime last_nudge_{};
  int64_t deadline_in_ms_ = -1;
  uint64_t published_gen_ = 0, published_applied_ = 0;
  std::string published_leader_;
  Vote published_vote_;
  FormationReport report_;
  std::tuple<uint64_t, uint64_t, uint64_t> roster_key_{};  // (view version, generation, applied) of report_'s roster part
  std::vector<FormationEvent> events_;
};

}  // namespace dlagent
