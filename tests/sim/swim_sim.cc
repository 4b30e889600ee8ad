#include "tests/sim/swim_sim.h"

namespace dlagent::testing {

SwimSim::SwimSim(SimConfig sim, swim::SwimConfig swim) : sim_(sim), swim_(swim), rng_(sim.seed) {}

std::unique_ptr<swim::Swim> SwimSim::NewSwim(int i) {
  return std::make_unique<swim::Swim>(swim_, name(i), "a" + std::to_string(i), "", rng_(), now_);
}

int SwimSim::IndexOf(const std::string& addr) const {
  if (addr.size() < 2 || addr[0] != 'a') return -1;
  int i = std::atoi(addr.c_str() + 1);
  return i >= 0 && i < size() ? i : -1;
}

void SwimSim::Join(int i, int via) {
  if (via < 0 || via == i || !up(via) || nodes_[via].group != nodes_[i].group) return;
  ++push_pulls_;
  nodes_[via].swim->MergeState(nodes_[i].swim->LocalState(), now_);
  nodes_[i].swim->MergeState(nodes_[via].swim->LocalState(), now_);
}

int SwimSim::Add() {
  const int i = size();
  nodes_.push_back(Node{NewSwim(i)});
  std::vector<int> candidates;
  for (int j = 0; j < i; ++j)
    if (up(j)) candidates.push_back(j);
  if (!candidates.empty()) Join(i, candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng_)]);
  return i;
}

void SwimSim::AddMany(int n) {
  const int first = size();
  for (int k = 0; k < n; ++k) nodes_.push_back(Node{NewSwim(first + k)});
  for (int k = 0; k < n; ++k)
    if (first + k != 0) Join(first + k, 0);
}

void SwimSim::Flush(int i) {
  Node& n = nodes_[i];
  for (swim::OutPacket& p : n.swim->TakeOutbox()) {
    ++udp_packets_;
    udp_bytes_ += p.bytes.size() + 29 + 28;  // encryption overhead plus IP and UDP headers
    const int to = IndexOf(p.to_addr);
    if (to < 0 || nodes_[to].group != n.group) continue;
    if (std::uniform_real_distribution<double>(0, 1)(rng_) < sim_.loss) continue;
    const Duration d = sim_.delay + Duration(std::uniform_int_distribution<Duration::rep>(0, sim_.jitter.count())(rng_));
    queue_.push(Delivery{now_ + d, order_++, to, std::move(p.bytes)});
  }
  for (const std::string& addr : n.swim->TakePushPullRequests()) Join(i, IndexOf(addr));
}

void SwimSim::Run(Duration d) {
  RunUntil([] { return false; }, d);
}

std::optional<Duration> SwimSim::RunUntil(const std::function<bool()>& pred, Duration limit) {
  const MonoTime start = now_, end = now_ + limit;
  while (now_ < end) {
    const MonoTime next = now_ + sim_.tick;
    while (!queue_.empty() && queue_.top().at <= next) {
      Delivery d = queue_.top();
      queue_.pop();
      now_ = std::max(now_, d.at);
      Node& n = nodes_[d.to];
      if (!n.up) continue;
      if (n.paused) {
        if (n.held.size() < 1000) n.held.push_back(std::move(d.bytes));
        continue;
      }
      (void)n.swim->OnPacket(d.bytes, now_);
      Flush(d.to);
    }
    now_ = next;
    for (int i = 0; i < size(); ++i) {
      if (!up(i)) continue;
      nodes_[i].swim->Tick(now_);
      Flush(i);
    }
    if (pred()) return now_ - start;
  }
  return std::nullopt;
}

void SwimSim::Crash(int i) { nodes_[i].up = false; }
void SwimSim::Pause(int i) { nodes_[i].paused = true; }

void SwimSim::Resume(int i) {
  Node& n = nodes_[i];
  n.paused = false;
  // A process waking from a stall finds its timers expired before it reads its socket: timers first.
  n.swim->Tick(now_);
  for (const std::string& b : n.held) (void)n.swim->OnPacket(b, now_);
  n.held.clear();
  Flush(i);
}

void SwimSim::Restart(int i) {
  nodes_[i].swim = NewSwim(i);
  nodes_[i].up = true;
  nodes_[i].paused = false;
  nodes_[i].held.clear();
  for (int j = 0; j < size(); ++j) {
    if (j != i && up(j) && nodes_[j].group == nodes_[i].group) {
      Join(i, j);
      break;
    }
  }
}

void SwimSim::SetGroup(int i, int group) { nodes_[i].group = group; }
void SwimSim::Heal() {
  for (Node& n : nodes_) n.group = 0;
}

swim::MemberState SwimSim::View(int observer, int subject) const {
  const swim::MemberInfo* m = nodes_[observer].swim->Find(name(subject));
  return m ? m->state : swim::MemberState::kDead;
}

int SwimSim::CountViews(int subject, swim::MemberState s) const {
  int c = 0;
  for (int i = 0; i < size(); ++i) {
    if (i != subject && up(i) && View(i, subject) == s) ++c;
  }
  return c;
}

}  // namespace dlagent::testing
