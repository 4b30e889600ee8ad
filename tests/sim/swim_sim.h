#pragma once
// A deterministic simulator for the Swim state machine: N members in one process on a virtual clock, with
// packet loss, delay and jitter, partitions, crashed members (silent) and paused members (their packets
// wait, as in a stopped process's socket buffer). Push-pull is modelled as an instant exchange of full
// states when both ends are up and can reach each other. Same seed, same run.
//
// Thread safety: none.

#include <functional>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "bootstrap/membership/swim.h"

namespace dlagent::testing {

struct SimConfig {
  double loss = 0.0;                               // probability a packet is dropped
  Duration delay = std::chrono::milliseconds(1);   // one-way latency
  Duration jitter = std::chrono::milliseconds(2);  // plus uniform [0, jitter)
  Duration tick = std::chrono::milliseconds(20);   // how often each member's Tick runs
  uint64_t seed = 1;
};

class SwimSim {
 public:
  SwimSim(SimConfig sim, swim::SwimConfig swim);

  // Adds a member named "n<i>" and joins it by push-pull with a random member that is up (none for the
  // first). Returns i.
  int Add();
  // Adds n members started together, each joining through member 0.
  void AddMany(int n);
  void Run(Duration d);
  // Runs until pred() is true (checked every tick) or `limit` passes; returns the time it took, or nullopt.
  std::optional<Duration> RunUntil(const std::function<bool()>& pred, Duration limit);

  void Crash(int i);
  void Pause(int i);
  void Resume(int i);
  // A new process with the same name and address (incarnation starts again at 0), joining through a member.
  void Restart(int i);
  // Members in different groups cannot reach each other. Heal() puts everyone in group 0.
  void SetGroup(int i, int group);
  void Heal();
  void SetLoss(double loss) { sim_.loss = loss; }

  int size() const { return static_cast<int>(nodes_.size()); }
  bool up(int i) const { return nodes_[i].up && !nodes_[i].paused; }
  swim::Swim& node(int i) { return *nodes_[i].swim; }
  std::string name(int i) const { return "n" + std::to_string(i); }
  MonoTime now() const { return now_; }
  // The state member `observer` holds for member `subject` (kDead when unknown).
  swim::MemberState View(int observer, int subject) const;
  // How many up members see `subject` in state s.
  int CountViews(int subject, swim::MemberState s) const;

  uint64_t udp_bytes() const { return udp_bytes_; }
  uint64_t udp_packets() const { return udp_packets_; }
  uint64_t push_pulls() const { return push_pulls_; }

 private:
  struct Node {
    std::unique_ptr<swim::Swim> swim;
    bool up = true;
    bool paused = false;
    int group = 0;
    std::vector<std::string> held;  // packets that arrived while paused
  };
  struct Delivery {
    MonoTime at;
    uint64_t order;
    int to;
    std::string bytes;
    bool operator>(const Delivery& o) const { return at != o.at ? at > o.at : order > o.order; }
  };
  std::unique_ptr<swim::Swim> NewSwim(int i);
  void Join(int i, int via);
  void Flush(int i);
  int IndexOf(const std::string& addr) const;

  SimConfig sim_;
  swim::SwimConfig swim_;
  std::mt19937_64 rng_;
  MonoTime now_{std::chrono::hours(1)};
  std::vector<Node> nodes_;
  std::priority_queue<Delivery, std::vector<Delivery>, std::greater<Delivery>> queue_;
  uint64_t order_ = 0;
  uint64_t udp_bytes_ = 0, udp_packets_ = 0, push_pulls_ = 0;
};

}  // namespace dlagent::testing
