#include "bootstrap/discovery/roster_sealer.h"

#include <algorithm>
#include <string_view>

#include "bootstrap/common/duration.h"

namespace dlagent {

std::string ChooseLeader(const std::vector<Candidate>& alive) {
  std::string leader;
  for (const Candidate& c : alive) {
    if (c.master) return c.instance_id;
    if (leader.empty() || c.instance_id < leader) leader = c.instance_id;
  }
  return leader;
}

std::vector<std::string> ChoosePollers(const std::vector<Candidate>& alive, size_t helpers) {
  const std::string leader = ChooseLeader(alive);
  if (leader.empty()) return {};
  std::vector<std::string> others;
  for (const Candidate& c : alive) {
    if (c.instance_id != leader) others.push_back(c.instance_id);
  }
  const size_t keep = std::min(others.size(), helpers);
  std::partial_sort(others.begin(), others.begin() + static_cast<std::ptrdiff_t>(keep), others.end());
  others.resize(keep);
  others.insert(others.begin(), leader);
  return others;
}

SealDecision DecideSeal(const SealPolicy& policy, const std::string& cluster, uint64_t generation, const std::string& leader,
                        const std::vector<Candidate>& alive, const std::set<std::string>& seen, MonoTime started, MonoTime now) {
  SealDecision d;
  d.have = alive.size();
  d.expected = policy.expected_nodes;
  d.missing = d.have >= d.expected ? 0 : d.expected - d.have;
  if (!seen.empty()) {  // O(N log N): the leader of 10,000 nodes decides every tick
    std::vector<std::string_view> ids;
    ids.reserve(alive.size());
    for (const Candidate& c : alive) ids.push_back(c.instance_id);
    std::sort(ids.begin(), ids.end());
    for (const std::string& id : seen) {
      if (!std::binary_search(ids.begin(), ids.end(), std::string_view(id))) d.gone.push_back(id);
    }
  }
  const MonoTime deadline = started + policy.join_deadline;
  auto seal = [&](std::string reason) {
    d.kind = SealDecision::kSealed;
    d.roster.cluster = cluster;
    d.roster.generation = generation;
    d.roster.leader = leader;
    for (const Candidate& c : alive) d.roster.nodes.push_back({c.instance_id, c.ip, c.gpus, c.master, c.server});
    Status ordered = OrderRoster(d.roster.nodes);
    if (!ordered.ok()) {
      d.kind = SealDecision::kFailed;
      d.reason = "cannot seal: " + ordered.ToString();
      return d;
    }
    d.reason = std::move(reason);
    return d;
  };
  if (d.have >= d.expected) return seal("all " + std::to_string(d.expected) + " nodes joined");
  if (now < deadline) {
    d.kind = SealDecision::kWaiting;
    d.deadline_in = deadline - now;
    d.reason = std::to_string(d.have) + "/" + std::to_string(d.expected) + " nodes, deadline in " + FormatDuration(d.deadline_in);
    return d;
  }
  std::string gone;
  for (size_t i = 0; i < d.gone.size() && i < 10; ++i) gone += (i ? ", " : "") + d.gone[i];
  if (d.gone.size() > 10) gone += " and " + std::to_string(d.gone.size() - 10) + " more";
  const std::string which = gone.empty() ? "" : " (seen, then lost: " + gone + ")";
  if (d.have >= policy.min_nodes) {
    return seal("deadline passed: sealed with " + std::to_string(d.have) + " of " + std::to_string(d.expected) + " nodes, " +
                std::to_string(d.missing) + " missing" + which);
  }
  d.kind = SealDecision::kFailed;
  d.reason = "deadline passed with " + std::to_string(d.have) + " of " + std::to_string(d.expected) + " nodes, below min_nodes " +
             std::to_string(policy.min_nodes) + ": " + std::to_string(d.missing) + " missing" + which;
  return d;
}

}  // namespace dlagent
