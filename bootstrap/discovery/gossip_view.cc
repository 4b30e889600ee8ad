// GossipView: what every FormationCore derives alike from one view, derived once (formation_core.h).
#include <algorithm>

#include "bootstrap/discovery/formation_core.h"

namespace dlagent {

GossipView MakeGossipView(std::vector<PeerState> members, uint64_t version) {
  GossipView v;
  v.version = version;
  v.members = std::move(members);
  std::vector<Candidate> candidates;
  candidates.reserve(v.members.size());
  for (size_t i = 0; i < v.members.size(); ++i) {
    v.index.emplace(v.members[i].node.instance_id, i);
    candidates.push_back(v.members[i].node);
  }
  v.leader = ChooseLeader(candidates);
  v.pollers_forming = ChoosePollers(candidates, 2);
  v.pollers_formed = ChoosePollers(candidates, 0);
  // The two highest roster holders, the first of each in order: one pass, string compares only on ties.
  const size_t none = v.members.size();
  size_t& b0 = v.best_roster[0];
  size_t& b1 = v.best_roster[1];
  b0 = b1 = none;
  auto higher = [&](size_t a, size_t b) {
    const PeerState& x = v.members[a];
    const PeerState& y = v.members[b];
    return x.roster_gen != y.roster_gen ? x.roster_gen > y.roster_gen : x.roster_leader > y.roster_leader;
  };
  for (size_t i = 0; i < none; ++i) {
    if (b0 == none || higher(i, b0)) {
      b1 = b0;
      b0 = i;
    } else if (b1 == none || higher(i, b1)) {
      b1 = i;
    }
  }
  return v;
}

const GossipView::RosterInView& GossipView::In(const RosterRef& roster) const {
  for (const RosterInView& r : rosters_) {
    if (r.roster == roster) return r;
  }
  if (rosters_.size() >= 4) rosters_.pop_front();
  RosterInView& r = rosters_.emplace_back();
  r.roster = roster;
  const size_t n = roster->nodes.size();
  r.member.assign(n, -1);
  r.applied.assign(n, 0);
  for (size_t k = 0; k < n; ++k) {
    auto it = index.find(roster->nodes[k].instance_id);
    if (it == index.end()) {
      r.dead.push_back(roster->nodes[k].instance_id);
      continue;
    }
    r.member[k] = static_cast<int32_t>(it->second);
    r.applied[k] = members[it->second].applied_gen;
    r.max_applied = std::max(r.max_applied, r.applied[k]);
  }
  return r;
}

}  // namespace dlagent
