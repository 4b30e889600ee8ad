#include "tests/sim/formation_sim.h"

#include <time.h>

namespace dlagent::testing {
namespace {

double ThreadCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

constexpr size_t kMaxMessagesPerReceive = 10;  // SQS's MaxNumberOfMessages
constexpr Duration kThrottleBackoff = std::chrono::seconds(1);

}  // namespace

FormationSim::FormationSim(FormationConfig base, FormationSimOptions options) : base_(std::move(base)), o_(options), rng_(options.seed) {}

FormationSim::FormationSim(FormationConfig base, Duration tick, Duration prepare_time)
    : FormationSim(std::move(base), FormationSimOptions{.tick = tick, .prepare_time = prepare_time}) {}

int FormationSim::Boot(bool master) {
  const int n = static_cast<int>(nodes_.size());
  Node node;
  node.peer.node = {"i-" + std::to_string(1000 + n),
                    "10." + std::to_string(n / 62500) + "." + std::to_string(n / 250 % 250) + "." + std::to_string(n % 250 + 1), 8, master};
  node.peer.addr = node.peer.node.ip + ":7946";
  by_id_.emplace(node.peer.node.instance_id, n);
  nodes_.push_back(std::move(node));
  Restart(n);
  return n;
}

void FormationSim::Crash(int i) {
  Node& n = nodes_[i];
  ++version_;
  n.up = false;
  n.gone_from_view = now_ + o_.detect;
  n.preparing.reset();
  n.polling = false;
}

void FormationSim::Restart(int i) {
  Node& n = nodes_[i];
  ++version_;
  FormationConfig c = base_;
  c.self = n.peer.node.instance_id;
  // A restarted agent finds its old roster file and joins those members directly, and its vote file.
  n.member = n.core && n.core->held().generation > 0;
  Vote vote = n.core ? n.core->vote() : Vote{};
  n.core = std::make_unique<FormationCore>(c, now_, static_cast<uint64_t>(i) + o_.seed, vote);
  n.peer.vote = vote;
  n.peer.roster_gen = 0;
  n.peer.roster_leader.clear();
  n.peer.applied_gen = 0;
  n.preparing.reset();
  n.polling = false;
  n.next_hello = now_;
  n.sqs_ready = now_;
  n.up = true;
}

void FormationSim::Partition(const std::vector<int>& side) {
  for (int i : side) nodes_[i].side = 1;
  ++version_;
}

void FormationSim::Heal() {
  for (Node& n : nodes_) n.side = 0;
  ++version_;
}

bool FormationSim::InView(const Node& n, int side) const {
  return n.side == side && (o_.discovery ? n.member && (n.up || now_ < n.gone_from_view) : n.up);
}

const GossipView& FormationSim::View(int side) {
  GossipView& view = view_[side];
  size_t visible = 0;  // a crashed member leaving the view changes it too
  for (const Node& n : nodes_) visible += InView(n, side);
  if (visible != view.members.size()) ++version_;
  if (view_version_[side] == version_) return view;
  std::vector<PeerState> members;
  for (const Node& n : nodes_) {
    if (InView(n, side)) members.push_back(n.peer);
  }
  view = MakeGossipView(std::move(members), version_);
  view_version_[side] = version_;
  return view;
}

bool FormationSim::Request(Node& n) {
  ++counters_.sqs_requests;
  if (o_.throttle > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < o_.throttle) {
    ++counters_.throttled;
    n.sqs_ready = now_ + kThrottleBackoff;
    return false;
  }
  n.sqs_ready = now_ + o_.sqs_latency;
  return true;
}

void FormationSim::Discover(int i, const FormationActions& a) {
  Node& n = nodes_[i];
  if (now_ < n.sqs_ready) return;  // one request in flight at a time
  if (a.hello && now_ >= n.next_hello) {
    if (Request(n)) {
      queue_.push_back({i, now_ + o_.sqs_latency + o_.consistency});
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(o_.hello_interval).count();
      n.next_hello = now_ + std::chrono::milliseconds(ms / 2 + std::uniform_int_distribution<int64_t>(0, ms / 2)(rng_));
    }
    return;
  }
  if (!a.poll) {
    n.polling = false;
    return;
  }
  if (!n.polling) {
    if (Request(n)) {
      n.polling = true;
      n.poll_ends = now_ + o_.poll_wait;
    }
    return;
  }
  // A long poll in flight returns as soon as messages are visible, or empty at its end.
  std::vector<Message> got;
  while (got.size() < kMaxMessagesPerReceive && !queue_.empty() && queue_.front().visible_at <= now_) {
    got.push_back(queue_.front());
    queue_.pop_front();
  }
  if (got.empty() && now_ < n.poll_ends) return;
  n.polling = false;
  for (const Message& m : got) {
    if (o_.duplicate > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < o_.duplicate) {
      redelivered_.push_back({m.from, now_ + o_.visibility_timeout});  // delivered again
    }
    ++counters_.sqs_requests;  // DeleteMessage
    Node& sender = nodes_[m.from];
    if (m.from == i || !sender.up || (n.member && sender.member)) continue;  // own, dead, or already in the view
    n.member = true;                                                         // a push-pull with the sender: both are in one cluster now
    sender.member = true;
    ++version_;
  }
}

void FormationSim::Step() {
  now_ += o_.tick;
  while (!meta_changes_.empty() && meta_changes_.front().at <= now_) {
    const MetaChange& c = meta_changes_.front();
    PeerState& p = nodes_[c.node].peer;
    p.roster_gen = c.roster_gen;
    p.roster_leader = c.roster_leader;
    p.applied_gen = c.applied_gen;
    p.vote = c.vote;
    meta_changes_.pop_front();
    ++version_;
  }
  while (!redelivered_.empty() && redelivered_.front().visible_at <= now_) {
    queue_.push_back(redelivered_.front());
    redelivered_.pop_front();
  }
  const GossipView* sides[2] = {&View(0), &View(1)};
  size_t pollers = 0;
  const size_t count = nodes_.size();
  const size_t first = count ? static_cast<size_t>(now_.time_since_epoch().count() / o_.tick.count()) % count : 0;
  for (size_t k = 0; k < count; ++k) {  // a different node first at each step: pollers compete fairly
    const int i = static_cast<int>((first + k) % count);
    Node& n = nodes_[i];
    if (!n.up) continue;
    if (n.preparing && n.preparing->first <= now_) {
      n.core->OnPrepared(*n.preparing->second, Status::Ok(), now_);
      n.preparing.reset();
    }
    GossipView alone;
    const GossipView* view = sides[n.side];
    if (o_.discovery && !n.member) {
      alone = MakeGossipView({n.peer});
      view = &alone;
    }
    // The CPU of the tick in which a leader seals the first generation (read only where one may: a clock
    // read costs more than most ticks).
    const bool may_seal = n.core->held().generation == 0 && view->leader == n.peer.node.instance_id;
    const double cpu0 = may_seal ? ThreadCpuMs() : 0;
    FormationActions a = n.core->Tick(now_, *view);
    if (may_seal && n.core->held().generation == 1) counters_.seal_cpu_ms = ThreadCpuMs() - cpu0;
    if (!a.fetch_from.empty()) {
      Result<RosterRef> r = Status::Unavailable("sim", a.fetch_from + " is down");
      if (auto it = by_id_.find(a.fetch_from); it != by_id_.end()) {
        const Node& other = nodes_[it->second];
        if (other.up && other.side == n.side) r = other.core->held_ref();
      }
      n.core->OnRosterFetched(a.fetch_from, r, now_);
    }
    if (a.vote) n.core->OnVoteKept(*a.vote, Status::Ok(), now_);  // kept at once
    if (a.prepare) n.preparing = {now_ + o_.prepare_time, a.prepare};
    if (a.signal) signals_.push_back(*a.signal);
    const Roster& held = n.core->held();
    if (!o_.discovery) {
      if (a.publish) ++version_;
      n.peer.roster_gen = held.generation;
      n.peer.roster_leader = held.leader;
      n.peer.applied_gen = n.core->applied_gen();
      n.peer.vote = n.core->vote();
    } else if (a.publish) {
      meta_changes_.push_back({now_ + o_.gossip_delay, i, held.generation, n.core->applied_gen(), held.leader, n.core->vote()});
    }
    if (o_.discovery) {
      Discover(i, a);
      pollers += a.poll;
    }
    for (const FormationEvent& e : n.core->TakeEvents()) {
      if (e.text.rfind("sealed roster generation ", 0) == 0 || e.text.rfind("formation failed: ", 0) == 0) sealed_.push_back(n.core->held());
    }
  }
  counters_.pollers_now = pollers;
  counters_.max_pollers = std::max(counters_.max_pollers, pollers);
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
      if (!all) break;
    }
    if (all) return now_ - start;
    if (now_ - start >= limit) return std::nullopt;
    Step();
  }
}

std::vector<std::string> FormationSim::ranks(int i) const {
  std::vector<std::string> out;
  for (const RosterNode& m : report(i).roster->nodes) out.push_back(m.instance_id);
  return out;
}

}  // namespace dlagent::testing
