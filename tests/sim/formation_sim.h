#pragma once
// A deterministic harness for FormationCore: N nodes in one process on a virtual clock. Gossip is perfect
// and instant (every node that is up sees every other node's published metadata at once), roster fetches
// answer at once from the node asked, and preparing a generation takes `prepare_time`. Nodes crash (silent),
// restart with the same instance id (a fresh core, as a restarted agent), or are replaced by new instances.
// The SWIM simulator (swim_sim.h) covers what imperfect gossip does; this one checks the decisions.
//
// Thread safety: none.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bootstrap/discovery/formation_core.h"

namespace dlagent::testing {

class FormationSim {
 public:
  // `base` is every node's config (self is set per node); ticks every `tick` of virtual time.
  explicit FormationSim(FormationConfig base, Duration tick = std::chrono::milliseconds(100), Duration prepare_time = Duration(0));

  // Boots a node now: "i-<n>" at 10.0.<n / 250>.<n % 250 + 1>, n counting from 0. Returns its index.
  int Boot(bool master = false);
  void Crash(int i);
  void Restart(int i);  // the same instance, a fresh agent

  void Run(Duration d);
  // Runs until every listed up node's phase is `phase` (and, when set, its generation is `generation`), or
  // `limit` passes; returns the virtual time it took.
  std::optional<Duration> RunUntil(const std::vector<int>& nodes, FormationPhase phase, Duration limit, uint64_t generation = 0);

  const FormationReport& report(int i) const { return nodes_[i].core->report(); }
  const Roster& held(int i) const { return nodes_[i].core->held(); }
  std::string id(int i) const { return nodes_[i].peer.node.instance_id; }
  // The instance ids of node i's roster, in rank order.
  std::vector<std::string> ranks(int i) const;
  const std::vector<Roster>& signals() const { return signals_; }
  MonoTime now() const { return now_; }

 private:
  struct Node {
    PeerState peer;
    std::unique_ptr<FormationCore> core;
    bool up = false;
    std::optional<std::pair<MonoTime, Roster>> preparing;  // done at that time
  };
  void Step();

  const FormationConfig base_;
  const Duration tick_, prepare_time_;
  MonoTime now_{std::chrono::hours(1)};
  std::vector<Node> nodes_;
  std::vector<Roster> signals_;
};

}  // namespace dlagent::testing
