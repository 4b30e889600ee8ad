#pragma once
// RosterSealer: the leader's decision, as a pure function of time and membership. The leader is the alive
// member with role master, else the one with the lowest instance id (so a new leader takes over when the
// old one dies before sealing). It seals when expected_nodes are alive, or at join_deadline with at least
// min_nodes ("shrink to what launched"); below min_nodes at the deadline the cluster fails, naming how
// many members are missing and which were seen but are gone.
//
// Thread safety: pure.

#include <set>
#include <string>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/node/node_files.h"

namespace dlagent {

struct SealPolicy {
  size_t expected_nodes = 1;                          // REQUIRED: the cluster's intended size
  size_t min_nodes = 1;                               // Default: 1. Fewer at the deadline: failure
  Duration join_deadline = std::chrono::minutes(10);  // Default: 10 min after the leader started waiting
};

struct Candidate {
  std::string instance_id;
  std::string ip;
  uint32_t gpus = 0;
  bool master = false;
  bool server = false;  // cluster.role = "server"
};

// The leader among alive candidates: the master, else the lowest instance id. "" when there are none.
std::string ChooseLeader(const std::vector<Candidate>& alive);

// Who polls the discovery queue: the leader and at most `helpers` more (the lowest other instance ids), so
// that SQS requests do not grow with the cluster. Every member computes the same list from the same view,
// and a poller that dies is replaced as soon as gossip declares it dead.
std::vector<std::string> ChoosePollers(const std::vector<Candidate>& alive, size_t helpers = 2);

struct SealDecision {
  enum Kind { kWaiting, kSealed, kFailed } kind = kWaiting;
  size_t have = 0, expected = 0;
  Duration deadline_in{0};        // kWaiting: time left
  Roster roster;                  // kSealed: ordered, generation set
  size_t missing = 0;             // kFailed (and kSealed short of expected): how many
  std::vector<std::string> gone;  // seen at some point, not alive now
  std::string reason;             // in words, for the journal, agentctl and CloudFormation
};

// alive: members alive now; seen: every instance id ever seen in this formation. started: when waiting began.
SealDecision DecideSeal(const SealPolicy& policy, const std::string& cluster, uint64_t generation, const std::string& leader,
                        const std::vector<Candidate>& alive, const std::set<std::string>& seen, MonoTime started, MonoTime now);

}  // namespace dlagent
