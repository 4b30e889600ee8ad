#include "bootstrap/discovery/formation_core.h"

#include <algorithm>

#include "bootstrap/common/duration.h"

namespace dlagent {
namespace {

using RosterId = std::pair<uint64_t, std::string>;  // (generation, leader): the higher one wins

RosterId IdOf(const Roster& r) { return {r.generation, r.leader}; }

std::string Names(const std::vector<std::string>& names, size_t max = 8) {
  if (names.empty()) return "none";
  std::string out;
  for (size_t i = 0; i < names.size() && i < max; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > max) out += " and " + std::to_string(names.size() - max) + " more";
  return out;
}

int64_t Millis(Duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

}  // namespace

std::string_view PhaseName(FormationPhase p) {
  switch (p) {
    case FormationPhase::kDiscover: return "discover";
    case FormationPhase::kRoster: return "roster";
    case FormationPhase::kPrepare: return "prepare";
    case FormationPhase::kReady: return "ready";
    case FormationPhase::kStandby: return "standby";
    case FormationPhase::kFailed: return "failed";
  }
  return "unknown";
}

FormationCore::FormationCore(FormationConfig config, MonoTime started, uint64_t seed, Vote vote)
    : config_(std::move(config)),
      started_(started),
      rng_(seed),
      held_(std::make_shared<const Roster>()),
      good_(held_),
      vote_(std::move(vote)),
      published_vote_(vote_) {
  report_.roster = good_;
  report_.expected = static_cast<uint32_t>(config_.seal.expected_nodes);
  report_.detail = "discover: 0/" + std::to_string(config_.seal.expected_nodes) + " nodes";
}

std::vector<FormationEvent> FormationCore::TakeEvents() { return std::exchange(events_, {}); }

bool FormationCore::InRoster(const std::string& id) const {
  return std::any_of(held_->nodes.begin(), held_->nodes.end(), [&](const RosterNode& n) { return n.instance_id == id; });
}

FormationActions FormationCore::Tick(MonoTime now, const GossipView& view) {
  FormationActions out;
  view_ = &view;
  Observe();
  Adopt(now, out);
  report_.quorum_wait.clear();
  unvoted_.clear();
  if (leader_ == config_.self) {
    Lead(now, out);
  } else {
    Accept(now, out);
  }

  // Prepare the held roster once, if this node is in it and it formed.
  if (held_->generation > 0 && held_->failure.empty() && self_in_held_ && applied_gen_ < held_->generation && !preparing_ &&
      now >= prepare_retry_at_) {
    preparing_ = true;
    out.prepare = held_;
  }

  // Discovery: HELLOs while alone or while a poller of a cluster without a roster; the leader and two helpers
  // poll until a roster exists, then the leader alone (it takes in replacements).
  const std::vector<std::string>& pollers = held_->generation > 0 ? view_->pollers_formed : view_->pollers_forming;
  out.poll = std::find(pollers.begin(), pollers.end(), config_.self) != pollers.end();
  out.hello = view_->members.size() <= 1 || (out.poll && held_->generation == 0);

  if (held_->generation != published_gen_ || held_->leader != published_leader_ || applied_gen_ != published_applied_ || vote_ != published_vote_) {
    published_gen_ = held_->generation;
    published_leader_ = held_->leader;
    published_applied_ = applied_gen_;
    published_vote_ = vote_;
    out.publish = true;
  }
  Report(now, out);
  Nudge(now, out);
  view_ = nullptr;
  return out;
}

void FormationCore::Observe() {
  leader_ = view_->leader;
  // Who was seen (and lost) is named by the leader's first seal only.
  if (held_->generation > 0 || leader_ != config_.self) return;
  for (const PeerState& p : view_->members) seen_.insert(p.node.instance_id);
}

void FormationCore::Adopt(MonoTime now, FormationActions& out) {
  if (now < next_fetch_) return;  // a fetch is under way, or the last one failed
  const size_t none = view_->members.size();
  size_t best = view_->best_roster[0];
  if (best != none && view_->members[best].node.instance_id == config_.self) best = view_->best_roster[1];
  if (best == none) return;
  const PeerState& from = view_->members[best];
  if (RosterId{from.roster_gen, from.roster_leader} <= IdOf(*held_)) return;
  out.fetch_from = from.node.instance_id;
  out.fetch_addr = from.addr;
  next_fetch_ = now + config_.fetch_retry;
}

void FormationCore::OnRosterFetched(const std::string& from, const Result<RosterRef>& fetched, MonoTime now) {
  if (!fetched.ok()) {
    Log(FormationEvent::kWarning,
        "cannot fetch the roster of " + from + ": " + fetched.status().ToString() + "; trying again in " + FormatDuration(config_.fetch_retry));
    return;
  }
  const Roster& r = **fetched;
  if (r.cluster != config_.cluster) {
    Log(FormationEvent::kWarning,
        from + " served a roster of cluster " + r.cluster + ", not " + config_.cluster + "; trying again in " + FormatDuration(config_.fetch_retry));
    return;
  }
  next_fetch_ = now;                    // another newer one may be announced already
  if (IdOf(r) <= IdOf(*held_)) return;  // not newer than what this node holds
  if (r.generation == held_->generation && r.failure.empty() && held_->failure.empty()) {
    // Two leaders on two sides of a partition (or one back from a stop) sealed the same generation: the
    // higher (generation, leader) wins everywhere, but for a while the number named two rosters.
    Log(FormationEvent::kWarning, "roster generation " + std::to_string(r.generation) + " was sealed twice, by " + held_->leader + " and by " +
                                      r.leader + " (a partition, or a leader that was stopped); taking " + r.leader + "'s, the higher");
  }
  Hold(*fetched);
  if (held_->failure.empty()) {
    Log(FormationEvent::kInfo, "adopted roster generation " + std::to_string(held_->generation) + " of " + std::to_string(held_->nodes.size()) +
                                   " nodes sealed by " + held_->leader);
  } else {
    Log(FormationEvent::kError, "formation failed (reported by " + held_->leader + "): " + held_->failure);
  }
}

void FormationCore::OnPrepared(const Roster& roster, const Status& result, MonoTime now) {
  preparing_ = false;
  if (!result.ok()) {
    prepare_error_ = result.ToString();
    prepare_retry_at_ = now + config_.prepare_retry;
    return;
  }
  prepare_error_.clear();
  applied_gen_ = std::max(applied_gen_, roster.generation);
}

void FormationCore::Hold(RosterRef r) {
  held_ = std::move(r);
  self_in_held_ = InRoster(config_.self);
  change_since_.reset();
  if (held_->failure.empty()) Formed();
}

void FormationCore::Formed() {
  const RosterRef old = std::exchange(good_, held_);
  const uint64_t gen = good_->generation;
  // What was seen of the old roster's members still counts where it reaches the new generation (a member
  // that prepared it before this node adopted it, and then died). Ranks mostly stay; the rest are looked up.
  std::vector<uint64_t> seen(good_->nodes.size(), 0);
  std::unordered_map<std::string, uint64_t> moved;
  for (size_t r = 0; r < seen_applied_.size(); ++r) {
    if (seen_applied_[r] < gen) continue;
    const std::string& id = old->nodes[r].instance_id;
    if (r < seen.size() && good_->nodes[r].instance_id == id) {
      seen[r] = seen_applied_[r];
    } else {
      moved[id] = seen_applied_[r];
    }
  }
  good_rank_ = -1;
  for (size_t r = 0; r < good_->nodes.size(); ++r) {
    const std::string& id = good_->nodes[r].instance_id;
    if (id == config_.self) good_rank_ = static_cast<int32_t>(r);
    if (auto it = moved.find(id); it != moved.end()) seen[r] = it->second;
  }
  seen_applied_ = std::move(seen);
  report_.acked.clear();
  roster_key_ = {};  // report the new roster at the next tick
}

void FormationCore::Seal(Roster r, const std::string& why, FormationActions& out) {
  Hold(std::make_shared<const Roster>(std::move(r)));
  if (held_->failure.empty()) {
    Log(FormationEvent::kInfo,
        "sealed roster generation " + std::to_string(held_->generation) + " with " + std::to_string(held_->nodes.size()) + " nodes: " + why);
    return;  // signalled once every member has acked it
  }
  Log(FormationEvent::kError, "formation failed: " + held_->failure);
  if (config_.signal && signaled_gen_ < held_->generation) {
    signaled_gen_ = held_->generation;
    out.signal = held_;
  }
}

std::vector<RosterNode> FormationCore::NextNodes(std::vector<std::string>* gone, std::vector<std::string>* joined) const {
  std::vector<RosterNode> newcomers;
  std::set<std::string> members;
  for (const RosterNode& n : held_->nodes) members.insert(n.instance_id);
  for (const PeerState& p : view_->members) {
    if (!members.count(p.node.instance_id)) newcomers.push_back({p.node.instance_id, p.node.ip, p.node.gpus, p.node.master, p.node.server});
  }
  (void)OrderRoster(newcomers);  // master first, then by IP; a conflict is caught on the whole roster
  std::vector<RosterNode> next;
  size_t k = 0;
  for (const RosterNode& n : held_->nodes) {
    if (const PeerState* p = view_->Find(n.instance_id)) {
      const Candidate& c = p->node;
      next.push_back({c.instance_id, c.ip, c.gpus, c.master, c.server});  // as it is now
    } else {
      gone->push_back(n.instance_id);
      if (k < newcomers.size()) {
        joined->push_back(newcomers[k].instance_id);
        next.push_back(newcomers[k++]);
      }
    }
  }
  const bool take_all = config_.reseal == ResealPolicy::kOnChange || !held_->failure.empty();
  while (k < newcomers.size() && (take_all || next.size() < config_.seal.expected_nodes)) {
    joined->push_back(newcomers[k].instance_id);
    next.push_back(newcomers[k++]);
  }
  return next;
}

void FormationCore::Lead(MonoTime now, FormationActions& out) {
  if (held_->generation == 0) {
    // A cluster that holds a roster already (this leader restarted): take theirs (Adopt fetches it), never
    // seal another first generation.
    std::vector<Candidate> candidates;
    for (const PeerState& p : view_->members) {
      if (p.roster_gen > 0 && p.node.instance_id != config_.self) return;
      candidates.push_back(p.node);
    }
    SealDecision d = DecideSeal(config_.seal, config_.cluster, 1, config_.self, candidates, seen_, started_, now);
    if (d.kind == SealDecision::kWaiting) {
      deadline_in_ms_ = Millis(d.deadline_in);
      return;
    }
    deadline_in_ms_ = -1;
    if (d.kind == SealDecision::kFailed) {
      Roster failed{config_.cluster, 1, config_.self, {}, d.reason};
      for (const Candidate& c : candidates) failed.nodes.push_back({c.instance_id, c.ip, c.gpus, c.master, c.server});
      if (!OrderRoster(failed.nodes).ok()) failed.nodes.clear();
      return Seal(std::move(failed), d.reason, out);
    }
    return Seal(std::move(d.roster), d.reason, out);
  }
  const bool failed = !held_->failure.empty();
  if (!failed && config_.reseal == ResealPolicy::kNever) return;

  std::vector<std::string> gone, joined;
  std::vector<RosterNode> next = NextNodes(&gone, &joined);
  // A roster that formed changes when someone left or (per policy) joined; a failed one heals once the nodes
  // alive would make one of at least min_nodes.
  const bool change = failed ? next.size() >= config_.seal.min_nodes : !gone.empty() || !joined.empty();
  if (!change) {
    change_since_.reset();
    return;
  }
  const std::string why = "gone: " + Names(gone) + "; joined: " + Names(joined);
  const std::string signature = Names(gone, SIZE_MAX) + "|" + Names(joined, SIZE_MAX);
  // Whole again: every member of the last good roster is back, and no one else.
  const bool whole = failed && gone.empty() && joined.empty() && !held_->nodes.empty();
  const Duration settle = whole ? std::min(config_.rejoin_settle, config_.reseal_settle) : config_.reseal_settle;
  if (!change_since_ || signature != change_signature_) {
    change_since_ = now;
    change_signature_ = signature;
    change_settle_ = settle;
    Log(FormationEvent::kInfo, "roster generation " + std::to_string(held_->generation) + (failed ? " (failed)" : "") + " differs from the view (" +
                                   (whole ? "every member of the last roster is back" : why) + "); resealing after " + FormatDuration(settle) +
                                   " of calm");
    return;
  }
  if (now - *change_since_ < settle) return;
  Roster r{config_.cluster, NextGeneration(), config_.self, std::move(next), ""};
  if (Status st = CheckRosterNodes(r.nodes); !st.ok()) {
    r.failure = "cannot reseal: " + st.ToString();
  } else if (r.nodes.size() < config_.seal.min_nodes) {
    r.failure = "generation " + std::to_string(r.generation) + " would have " + std::to_string(r.nodes.size()) + " nodes, below min_nodes " +
                std::to_string(config_.seal.min_nodes) + " (" + why + ")";
  }
  if (!r.failure.empty()) {
    if (failed) {  // nothing new to report: stay failed until the view changes
      change_since_.reset();
      return;
    }
    r.nodes = held_->nodes;  // the ranks a member that comes back takes again
  }
  if (!Quorum(r, now, out)) return;
  Seal(std::move(r), why, out);
}

void FormationCore::CastVote(Vote v, MonoTime now, FormationActions& out) {
  // One vote per generation, never a lower one; one at a time on its way to disk.
  if (v.generation <= std::max(vote_.generation, pending_vote_.generation) || now < vote_retry_at_) return;
  pending_vote_ = v;
  out.vote = std::move(v);
}

void FormationCore::OnVoteKept(const Vote& vote, const Status& result, MonoTime now) {
  if (vote != pending_vote_) return;
  pending_vote_ = {};
  if (!result.ok()) {
    vote_retry_at_ = now + config_.fetch_retry;
    Log(FormationEvent::kError, "cannot keep the vote for " + vote.leader + " as the sealer of generation " + std::to_string(vote.generation) +
                                    " on disk, so it is not given: " + result.ToString());
    return;
  }
  vote_ = vote;
  Log(FormationEvent::kInfo, vote.leader == config_.self
                                 ? "proposed generation " + std::to_string(vote.generation) + " (voted for itself)"
                                 : "voted for " + vote.leader + " as the sealer of generation " + std::to_string(vote.generation));
}

void FormationCore::Accept(MonoTime now, FormationActions& out) {
  if (config_.quorum != ResealQuorum::kMajority || held_->generation == 0) return;
  const PeerState* leader = view_->Find(leader_);
  if (!leader || leader->vote.leader != leader_) return;  // no proposal
  const Vote& proposal = leader->vote;
  if (proposal.generation <= held_->generation) return;
  CastVote(proposal, now, out);  // which refuses a generation this node has voted in
}

uint64_t FormationCore::NextGeneration() const {
  uint64_t p = held_->generation + 1;
  if (config_.quorum != ResealQuorum::kMajority) return p;
  // Above every vote this node and the roster's members gave another leader: they would refuse it.
  if (vote_.generation >= p) p = vote_.leader == config_.self ? vote_.generation : vote_.generation + 1;
  for (const RosterNode& n : held_->nodes) {
    const PeerState* peer = view_->Find(n.instance_id);
    if (peer && peer->vote.generation >= p && peer->vote.leader != config_.self) p = peer->vote.generation + 1;
  }
  return p;
}

bool FormationCore::Quorum(const Roster& r, MonoTime now, FormationActions& out) {
  if (config_.quorum != ResealQuorum::kMajority || held_->nodes.empty()) return true;
  const Vote mine{r.generation, config_.self};
  CastVote(mine, now, out);
  size_t votes = 0;
  for (const RosterNode& n : held_->nodes) {
    const PeerState* peer = view_->Find(n.instance_id);
    const Vote& theirs = n.instance_id == config_.self ? vote_ : peer ? peer->vote : Vote{};
    if (theirs == mine) {
      ++votes;
    } else if (peer) {
      unvoted_.push_back(n.instance_id);
    }
  }
  const size_t needed = held_->nodes.size() / 2 + 1;
  if (votes >= needed) return true;
  report_.quorum_wait = "generation " + std::to_string(mine.generation) + " waits for a majority of generation " + std::to_string(held_->generation) +
                        "'s " + std::to_string(held_->nodes.size()) + " members: " + std::to_string(votes) + " of " + std::to_string(needed) +
                        " votes";
  const std::string logged = std::to_string(mine.generation) + "/" + std::to_string(unvoted_.size());
  if (logged != quorum_logged_) {
    quorum_logged_ = logged;
    Log(unvoted_.empty() ? FormationEvent::kWarning : FormationEvent::kInfo,
        "resealing: " + report_.quorum_wait + (unvoted_.empty() ? "; too few are alive: waiting for members to come back" : ""));
  }
  return false;
}

void FormationCore::Report(MonoTime now, FormationActions& out) {
  FormationReport& s = report_;
  s.leader = leader_;
  s.alive = static_cast<uint32_t>(view_->members.size());
  s.deadline_in_ms = leader_ == config_.self ? deadline_in_ms_ : -1;
  s.reseal_in_ms = leader_ == config_.self && change_since_ ? std::max<int64_t>(0, Millis(change_settle_ - (now - *change_since_))) : -1;
  s.failure = held_->failure;
  s.generation = good_->generation;
  s.sealed_by = good_->leader;
  // The roster's acks and deaths: one pass over the roster, skipped when neither the view nor the roster moved.
  const std::tuple<uint64_t, uint64_t, uint64_t> key{view_->version, good_->generation, applied_gen_};
  if (view_->version == 0 || key != roster_key_) {
    roster_key_ = key;
    RosterReport();
  }
  ReportPhase(now, out);
  if (!s.quorum_wait.empty()) s.countdown = ", resealing: " + s.quorum_wait;
}

void FormationCore::RosterReport() {
  FormationReport& s = report_;
  const GossipView::RosterInView& in = view_->In(good_);
  const size_t n = good_->nodes.size();
  const uint64_t gen = good_->generation;
  s.roster = good_;
  s.rank = good_rank_;
  s.dead = in.dead;
  // Every member acked and nobody is ahead of this generation: nothing to learn from the view.
  if (s.acked.size() == n && s.unprepared == 0 && in.max_applied <= gen) return;
  s.acked.assign(n, false);
  s.unprepared = 0;
  std::vector<std::string> first;
  for (size_t r = 0; r < n; ++r) {
    seen_applied_[r] = std::max(seen_applied_[r], in.applied[r]);  // sticky: a member that acked and then died stays acked
    const bool acked = static_cast<int32_t>(r) == good_rank_ ? applied_gen_ >= gen : seen_applied_[r] >= gen;
    s.acked[r] = acked;
    if (!acked && s.unprepared++ < 4) first.push_back(good_->nodes[r].instance_id);
  }
  waiting_for_ = Names(first, 4) + (s.unprepared > 4 ? " and " + std::to_string(s.unprepared - 4) + " more" : "");
}

void FormationCore::ReportPhase(MonoTime now, FormationActions& out) {
  FormationReport& s = report_;
  const std::string expected = std::to_string(config_.seal.expected_nodes);
  s.countdown.clear();
  if (!held_->failure.empty()) {
    s.phase = FormationPhase::kFailed;
    s.detail = "failed: " + held_->failure;
  } else if (held_->generation == 0) {
    const bool leading = leader_ == config_.self;
    if (s.deadline_in_ms >= 0) s.countdown = ", deadline in " + FormatDuration(std::chrono::milliseconds(s.deadline_in_ms));
    const size_t alive = view_->members.size();
    if (alive >= config_.seal.expected_nodes || (leading && s.deadline_in_ms == 0)) {
      s.phase = FormationPhase::kRoster;
      s.detail = "roster: " + std::to_string(alive) + "/" + expected + " nodes, " +
                 (leading ? std::string("sealing") : "waiting for leader " + leader_ + " to seal");
    } else {
      s.phase = FormationPhase::kDiscover;
      s.detail = "discover: " + std::to_string(alive) + "/" + expected + " nodes";
    }
  } else if (s.rank < 0) {
    s.phase = FormationPhase::kStandby;
    s.detail = "standby: not in roster generation " + std::to_string(held_->generation) + " (" + std::to_string(held_->nodes.size()) + " nodes)";
  } else if (applied_gen_ < held_->generation) {
    s.phase = FormationPhase::kPrepare;
    s.detail = "prepare: generation " + std::to_string(held_->generation) + ", rank " + std::to_string(s.rank) + ": " +
               (prepare_error_.empty() ? "storage and node files"
                                       : "failed, retrying every " + FormatDuration(config_.prepare_retry) + ": " + prepare_error_);
  } else if (s.unprepared > 0) {
    s.phase = FormationPhase::kPrepare;
    s.detail = "prepare: " + std::to_string(held_->nodes.size() - s.unprepared) + "/" + std::to_string(held_->nodes.size()) +
               " nodes prepared, waiting for " + waiting_for_;
  } else {
    s.phase = FormationPhase::kReady;
    s.detail = "ready: rank " + std::to_string(s.rank) + " of " + std::to_string(held_->nodes.size()) + " nodes, generation " +
               std::to_string(held_->generation) + ", leader " + held_->leader;
    if (!s.dead.empty()) {
      s.detail += "; degraded: " + Names(s.dead, 4) + (s.dead.size() == 1 ? " is" : " are") + " dead";
      if (s.reseal_in_ms >= 0) s.countdown = ", resealing in " + FormatDuration(std::chrono::milliseconds(s.reseal_in_ms));
    }
    if (held_->leader == config_.self && config_.signal && signaled_gen_ < held_->generation) {
      signaled_gen_ = held_->generation;
      out.signal = held_;
    }
  }
}

void FormationCore::Nudge(MonoTime now, FormationActions& out) {
  // Gossip spreads metadata with high probability, not certainty: with 64 members changing theirs at once, a
  // few updates miss a few members, and anti-entropy (push-pull every 30 s) would be the only repair. So a
  // member waiting on someone's news asks that member directly, once a second: the leader while waiting for
  // its roster, an unprepared member while waiting for acks.
  if (now - last_nudge_ < config_.nudge_interval) return;
  const PeerState* p = nullptr;
  if (report_.phase == FormationPhase::kRoster && leader_ != config_.self) {
    p = view_->Find(leader_);
  } else if (report_.phase == FormationPhase::kPrepare && applied_gen_ >= held_->generation) {
    // A random member waited on that is alive: the first from a random rank on.
    const GossipView::RosterInView& in = view_->In(good_);
    const size_t n = in.member.size();
    const size_t start = n ? rng_() % n : 0;
    for (size_t k = 0; k < n && !p; ++k) {
      const size_t r = (start + k) % n;
      if (!report_.acked[r] && in.member[r] >= 0 && static_cast<int32_t>(r) != good_rank_) p = &view_->members[in.member[r]];
    }
  } else if (!unvoted_.empty()) {  // the leader waits for votes
    p = view_->Find(unvoted_[rng_() % unvoted_.size()]);
  }
  if (!p) return;
  last_nudge_ = now;
  out.nudge_addr = p->addr;
}

}  // namespace dlagent
