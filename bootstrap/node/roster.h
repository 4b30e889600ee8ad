#pragma once
// The roster: the sealed list of a cluster's nodes in rank order, and its JSON form, which is both the file
// /etc/dlagent/roster.json and what agents fetch from each other. One type, one codec, for every module.
//
// Thread safety: values and functions only.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bootstrap/common/status.h"

namespace dlagent {

struct RosterNode {
  std::string instance_id;
  std::string ip;  // IPv4
  uint32_t gpus = 0;
  bool master = false;
  bool server = false;  // cluster.role = "server": serves a dlps shard and runs no job's ranks (never the master)
};

// "master", "worker" or "server".
std::string RoleName(const RosterNode& n);

struct Roster {
  std::string cluster;
  uint64_t generation = 0;
  std::string leader;             // instance id of the member that sealed it
  std::vector<RosterNode> nodes;  // rank order: OrderRoster's for a first seal; later generations keep ranks
  std::string failure;            // set when the cluster failed to form: why (nodes then lists who arrived)
};

// InvalidArgument for an address that is not IPv4, a repeated address or instance id, or two masters.
Status CheckRosterNodes(const std::vector<RosterNode>& nodes);
// A first seal's rank order: the master first (rank 0), then by numeric IPv4 (10.0.0.9 before 10.0.0.10).
// Later generations keep every surviving member's rank (FormationCore). CheckRosterNodes's errors.
Status OrderRoster(std::vector<RosterNode>& nodes);

// Rank k's host name in the node files: deeplearning-worker<k+1>.
std::string WorkerName(size_t rank);

std::string RenderRosterJson(const Roster& r);
// The inverse of RenderRosterJson (also how rosters travel between agents). InvalidArgument names what is
// wrong (CheckRosterNodes's checks apply; the order is the ranks, as sealed).
Result<Roster> ParseRosterJson(std::string_view text);

}  // namespace dlagent
