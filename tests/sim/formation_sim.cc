#include "tests/sim/formation_sim.h"

namespace dlagent::testing {

FormationSim::FormationSim(FormationConfig base, Duration tick, Duration prepare_time)
    : base_(std::move(base)), tick_(tick), prepare_time_(prepare_time) {}

int FormationSim::Boot(bool master) {
  const int n = static_cast<int>(nodes_.size());
  Node node;
  node.peer.node = {"i-" + std::to_string(1000 + n), "10.0." + std::to_string(n / 250) + "." + std::to_string(n % 250 + 1), 8, master};
  node.peer.addr = node.peer.node.ip + ":7946";
  nodes_.push_back(std::move(node));
  Restart(n);
  return n;
}

void FormationSim::Crash(int i) {
  nodes_[i].up = false;
  nodes_[i].preparing.reset();
}

void FormationSim::Restart(int i) {
  Node& n = nodes_[i];
  FormationConfig c = base_;
  c.self = n.peer.node.instance_id;
  n.core = std::make_unique<FormationCore>(c, now_, static_cast<uint64_t>(i) + 1);
  n.peer.roster_gen = 0;
  n.peer.roster_leader.clear();
  n.peer.applied_gen = 0;
  n.preparing.reset();
  n.up = true;
}

void FormationSim::Step() {
  now_ += tick_;
  std::vector<PeerState> view;
  for (const Node& n : nodes_) {
    if (n.up) view.push_back(n.peer);
  }
  for (Node& n : nodes_) {
    if (!n.up) continue;
    if (n.preparing && n.preparing->first <= now_) {
      n.core->OnPrepared(n.preparing->second, Status::Ok(), now_);
      n.preparing.reset();
    }
    FormationActions a = n.core->Tick(now_, view);
    if (!a.fetch_from.empty()) {
      Result<Roster> r = Status::Unavailable("sim", a.fetch_from + " is down");
      for (const Node& other : nodes_) {
        if (other.up && other.peer.node.instance_id == a.fetch_from) r = other.core->held();
      }
      n.core->OnRosterFetched(a.fetch_from, r, now_);
    }
    if (a.prepare) n.preparing = {now_ + prepare_time_, *a.prepare};
    if (a.signal) signals_.push_back(*a.signal);
    n.peer.roster_gen = n.core->held().generation;
    n.peer.roster_leader = n.core->held().leader;
    n.peer.applied_gen = n.core->applied_gen();
    (void)n.core->TakeEvents();
  }
}

void FormationSim::Run(Duration d) {
  const MonoTime until = now_ + d;
  while (now_ < until) Step();
}

std::optional<Duration> FormationSim::RunUntil(const std::vector<int>& nodes, FormationPhase phase, Duration limit, uint64_t generation) {
  const MonoTime start = now_;
  for (;;) {
    bool all = true;
    for (int i : nodes) {
      const FormationReport& r = report(i);
      all = all && nodes_[i].up && r.phase == phase && (generation == 0 || r.generation == generation);
    }
    if (all) return now_ - start;
    if (now_ - start >= limit) return std::nullopt;
    Step();
  }
}

std::vector<std::string> FormationSim::ranks(int i) const {
  std::vector<std::string> out;
  for (const auto& m : report(i).roster) out.push_back(m.instance_id);
  return out;
}

}  // namespace dlagent::testing
