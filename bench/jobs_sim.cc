// A job's coordinator at scale, in a discrete-event simulation on a virtual clock: the real JobCore
// (agent/jobs/job_core.h) decides, and a small driver does what Coordinator does (pushes in, a tick with the
// gossip view every 200 ms, a slow round every 5 s, signals, restarts) against N simulated nodes with one rank
// each. Messages are counted as calls (a request and its reply are one).
//
// Scenario, for each N: the job starts on N nodes (--restarts 3, --min-nodes N-1) and runs; at 20 s a node
// crashes (gossip knows it 2.05 s later, between two ticks); at 40 s a replacement joins the roster; at 60 s a rank fails; at 80 s
// every rank ends well. The same run is made twice: as the agent does it now (pushes, the slow round every
// 5 s) and, as the baseline, as it did before (no pushes, every node asked every 200 ms).
//
// Printed: the time from the loss being known to the restart decided (goal: under 1 s) and to every rank
// running again; the messages a second of a job while nothing changes; all messages; the core's CPU a call, a
// pushed part and a round.
// Exits 1 when the job did not succeed, the replacement was not taken at the next restart, or a restart was
// decided later than 1 s after the loss was known. Usage: jobs_sim [N ...]   (default: 100 1000)
#include <signal.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "agent/jobs/job_core.h"
#include "agent/jobs/restart.h"

namespace {

using namespace std::chrono;
using namespace dlagent;
using namespace dlagent::jobs;

constexpr auto kLatency = microseconds(500);  // one way, between two agents
constexpr auto kDetect = milliseconds(2050);  // a crash to gossip calling the node dead (between two ticks)
constexpr auto kTick = milliseconds(200);

double NowCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

struct Options {
  size_t n = 100;
  bool push = true;
  Duration round = seconds(5);
};

struct Outcome {
  bool succeeded = false;
  bool replacement_taken = false;
  double decided_ms = -1;   // loss known -> the restart decided
  double running_ms = -1;   // loss known -> every rank of the next attempt running
  double steady_per_s = 0;  // messages a second while nothing changes (2.5 s to 17.5 s)
  uint64_t messages = 0;
  double core_ns_per_call = 0, core_ns_max = 0;
  uint64_t core_calls = 0;
  double ns_per_push = 0, ns_per_round = 0;  // the core's CPU for one pushed part, for one round's answers
};

class Sim {
 public:
  explicit Sim(Options o) : o_(o), rng_(42) {}

  Outcome Run() {
    for (size_t i = 0; i < o_.n; ++i) AddNode();
    pb::JobSpec spec;
    spec.set_id("j-sim");
    spec.set_name("sim");
    spec.set_coordinator("i-0");
    spec.set_max_restarts(3);
    spec.set_min_nodes(static_cast<uint32_t>(o_.n - 1));
    spec.set_every_node(true);
    spec.set_grace_ms(10'000);
    Launch(spec, Roster(), [&](pb::JobSpec s, std::map<std::string, pb::NodeJob> parts) {
      core_.emplace(JobCoreOptions{"i-0", "i-0:7947", seconds(10), minutes(5), seconds(1)}, std::move(s), std::move(parts), now_, 0);
    });
    Every(kTick, [this] { Tick(); });
    Every(o_.round, [this] { Round(); });
    // Nothing changes from the start to the crash: 15 s from 2.5 s hold three slow rounds exactly.
    At(milliseconds(2500), [this] { steady_from_ = messages_; });
    At(milliseconds(17500), [this] { steady_to_ = messages_; });
    At(seconds(20), [this] { Crash(7); });
    At(seconds(20) + kDetect, [this] { known_ = now_; });
    At(seconds(40), [this] { AddNode(); });
    At(seconds(60), [this] { EndRank(3, 1); });
    At(seconds(80), [this] {
      for (size_t i = 0; i < nodes_.size(); ++i) EndRank(i, 0);
    });
    while (!events_.empty() && now_ < MonoTime() + seconds(200)) {
      Event e = events_.top();
      events_.pop();
      now_ = e.at;
      e.fn();
      if (core_ && Terminal(core_->summary())) break;
    }
    Outcome r;
    r.succeeded = core_ && core_->summary().state() == pb::JOB_STATE_SUCCEEDED;
    r.replacement_taken = core_ && core_->summary().nodes() == o_.n && core_->summary().attempt() == 2;
    r.decided_ms = decided_ == MonoTime() ? -1 : duration<double, std::milli>(decided_ - known_).count();
    r.running_ms = running_ == MonoTime() ? -1 : duration<double, std::milli>(running_ - known_).count();
    r.steady_per_s = static_cast<double>(steady_to_ - steady_from_) / 15.0;
    r.messages = messages_;
    r.core_calls = core_calls_;
    r.core_ns_per_call = core_calls_ ? core_ns_ / static_cast<double>(core_calls_) : 0;
    r.core_ns_max = core_ns_max_;
    r.ns_per_push = pushes_ ? push_ns_ / static_cast<double>(pushes_) : 0;
    r.ns_per_round = rounds_ ? round_ns_ / static_cast<double>(rounds_) : 0;
    return r;
  }

 private:
  struct Node {
    std::string id;
    bool up = true;
    MonoTime crashed{};
    pb::NodeJob part;  // its part of the attempt it runs
    bool has_part = false;
  };
  struct Event {
    MonoTime at;
    uint64_t seq;
    std::function<void()> fn;
    bool operator<(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  void At(Duration after, std::function<void()> fn) { events_.push({MonoTime() + after, ++seq_, std::move(fn)}); }
  void After(Duration d, std::function<void()> fn) { events_.push({now_ + d, ++seq_, std::move(fn)}); }
  void Every(Duration d, const std::function<void()>& fn) {
    After(d, [this, d, fn] {
      fn();
      Every(d, fn);
    });
  }

  void AddNode() {
    Node n;
    n.id = "i-" + std::to_string(nodes_.size());
    nodes_.push_back(std::move(n));
  }
  std::vector<JobNode> Roster() const {
    std::vector<JobNode> out;
    for (const Node& n : nodes_) out.push_back({n.id, "10.0.0.1", n.id + ":7947", 0, false});
    return out;
  }
  Node& ByName(const std::string& id) { return nodes_[std::stoul(id.substr(2))]; }
  bool GoneKnown(const Node& n) const { return !n.up && now_ - n.crashed >= kDetect; }

  // The core is called; its CPU is counted, and what it asks for is done.
  enum Kind { kOther, kPush, kRound };
  template <typename F>
  void Core(F call, Kind kind = kOther) {
    const double t0 = NowCpuNs();
    JobActions a = call(*core_);
    const double ns = NowCpuNs() - t0;
    if (kind == kPush) push_ns_ += ns, ++pushes_;
    if (kind == kRound) round_ns_ += ns, ++rounds_;
    core_ns_ += ns;
    core_ns_max_ = std::max(core_ns_max_, ns);
    ++core_calls_;
    Act(a);
  }

  void Act(const JobActions& a) {
    if (core_->restarting() && decided_ == MonoTime() && known_ != MonoTime()) decided_ = now_;
    if (a.signal) {
      const pb::JobSpec spec = core_->spec();
      for (const std::string& id : spec.nodes()) {
        if (std::find(a.skip.begin(), a.skip.end(), id) != a.skip.end()) continue;
        ++messages_;
        Node& n = ByName(id);
        if (!n.up || !n.has_part) continue;
        After(kLatency, [this, id, why = a.signal->failure] { Signalled(id, why); });
      }
    }
    if (a.pick_nodes) Restart();
  }

  // The node's rank gets SIGTERM and ends a little later (as ranks do), then its output is read.
  void Signalled(const std::string& id, const std::string& why) {
    Node& n = ByName(id);
    if (!n.up || !n.has_part) return;
    if (n.part.failure().empty() && !why.empty()) n.part.set_failure(why);
    const uint32_t attempt = n.part.spec().attempt();
    After(milliseconds(std::uniform_int_distribution<int>(10, 300)(rng_)), [this, id, attempt] {
      Node& m = ByName(id);
      if (!m.up || m.part.spec().attempt() != attempt || !m.part.ranks(0).running()) return;
      pb::RankState* r = m.part.mutable_ranks(0);
      r->set_running(false);
      r->set_signal(SIGTERM);
      r->set_stopped(true);
      m.part.set_ended(true);
      Changed(m);
    });
  }

  void EndRank(size_t i, int code) {
    Node& n = nodes_[i];
    if (!n.up || !n.has_part || !n.part.ranks(0).running()) return;
    pb::RankState* r = n.part.mutable_ranks(0);
    r->set_running(false);
    r->set_exit_code(code);
    if (code != 0) n.part.set_failure("rank " + std::to_string(r->rank()) + " on " + n.id + " exited with " + std::to_string(code));
    n.part.set_ended(true);
    Changed(n);
  }

  void Crash(size_t i) {
    nodes_[i].up = false;
    nodes_[i].crashed = now_;
  }

  // The node's part changed: with pushes, it goes to the coordinator.
  void Changed(Node& n) {
    n.part.set_version(n.part.version() + 1);
    if (!o_.push) return;
    ++messages_;
    After(kLatency, [this, id = n.id, part = n.part] { Core([&](JobCore& c) { return c.OnPart(now_, id, part); }, kPush); });
  }

  void Tick() {
    if (!core_ || Terminal(core_->summary())) return;
    std::vector<std::string> gone;
    for (size_t i : core_->ToAsk()) {
      const std::string& id = core_->spec().nodes(static_cast<int>(i));
      if (GoneKnown(ByName(id))) gone.push_back(id);
    }
    Core([&](JobCore& c) { return c.OnTick(now_, gone); });
  }

  void Round() {
    if (!core_ || Terminal(core_->summary())) return;
    std::vector<NodeAnswer> answers(static_cast<size_t>(core_->spec().nodes_size()));
    for (size_t i : core_->ToAsk()) {
      ++messages_;
      const Node& n = ByName(core_->spec().nodes(static_cast<int>(i)));
      if (n.up && n.has_part) {
        answers[i].part = n.part;
      } else {
        answers[i].part = Status::Unavailable("sim", "no answer");
        answers[i].gone = GoneKnown(n);
      }
    }
    Core([&](JobCore& c) { return c.OnAnswers(now_, answers); }, kRound);
  }

  void Restart() {
    const RestartNodes pick = PickRestartNodes(core_->spec(), core_->first_nodes(), Roster(),
                                               [&](const std::string& id) { return core_->unusable().count(id) > 0 || GoneKnown(ByName(id)); });
    if (pick.nodes.empty()) {
      Core([&](JobCore& c) { return c.OnNoNodes(now_, pick.wait_why); });
      return;
    }
    Launch(core_->NextAttempt(), pick.nodes, [&](pb::JobSpec next, std::map<std::string, pb::NodeJob> parts) {
      Core([&](JobCore& c) { return c.OnLaunched(now_, std::move(next), std::move(parts)); });
      if (running_ == MonoTime() && known_ != MonoTime()) running_ = now_;
    });
  }

  // Prepare and start on every node (two calls each, in parallel: two round trips), then `done`.
  void Launch(pb::JobSpec spec, const std::vector<JobNode>& on, const std::function<void(pb::JobSpec, std::map<std::string, pb::NodeJob>)>& done) {
    spec.clear_nodes();
    for (const JobNode& n : on) spec.add_nodes(n.instance_id);
    spec.set_num_ranks(static_cast<uint32_t>(on.size()));
    messages_ += 2 * on.size();  // the two round trips (a few ms) are not added to the clock
    std::map<std::string, pb::NodeJob> parts;
    for (size_t i = 0; i < on.size(); ++i) {
      Node& n = ByName(on[i].instance_id);
      n.part = pb::NodeJob();
      *n.part.mutable_spec() = spec;
      n.part.set_node(n.id);
      pb::RankState* r = n.part.add_ranks();
      r->set_rank(static_cast<uint32_t>(i));
      r->set_running(true);
      r->set_attempt(spec.attempt());
      n.part.set_version(1);
      n.has_part = true;
      parts[n.id] = n.part;
    }
    done(std::move(spec), std::move(parts));
  }

  const Options o_;
  std::mt19937 rng_;
  MonoTime now_{};
  uint64_t seq_ = 0;
  std::priority_queue<Event> events_;
  std::vector<Node> nodes_;
  std::optional<JobCore> core_;
  uint64_t messages_ = 0, steady_from_ = 0, steady_to_ = 0;
  MonoTime known_{}, decided_{}, running_{};
  double core_ns_ = 0, core_ns_max_ = 0, push_ns_ = 0, round_ns_ = 0;
  uint64_t core_calls_ = 0, pushes_ = 0, rounds_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::strtoul(argv[i], nullptr, 10));
  if (sizes.empty()) sizes = {100, 1000};
  bool ok = true;
  std::printf("%6s  %-26s %12s %12s %14s %10s %12s %10s %10s %8s\n", "nodes", "mode", "decided(ms)", "running(ms)", "steady msg/s", "messages",
              "core us/call", "us/push", "us/round", "result");
  for (size_t n : sizes) {
    if (n < 8) {
      std::fprintf(stderr, "jobs_sim: %zu nodes: give at least 8 (node 7 is the one that crashes)\n", n);
      return 2;
    }
    for (bool push : {true, false}) {
      Options o;
      o.n = n;
      o.push = push;
      o.round = push ? Duration(seconds(5)) : Duration(milliseconds(200));
      const Outcome r = Sim(o).Run();
      const bool good = r.succeeded && r.replacement_taken && r.decided_ms >= 0 && r.decided_ms <= 1000;
      ok = ok && good;
      std::printf("%6zu  %-26s %12.0f %12.0f %14.1f %10llu %12.1f %10.1f %10.1f %8s\n", n,
                  push ? "push, round every 5 s" : "baseline: poll every 200 ms", r.decided_ms, r.running_ms, r.steady_per_s,
                  static_cast<unsigned long long>(r.messages), r.core_ns_per_call / 1e3, r.ns_per_push / 1e3, r.ns_per_round / 1e3,
                  good ? "ok"
                       : (!r.succeeded           ? "FAILED"
                          : !r.replacement_taken ? "NO-JOIN"
                                                 : "SLOW"));
    }
  }
  std::printf("steady msg/s: calls a second while nothing changes; ratio of the baseline to push at each size is the poll traffic saved\n");
  return ok ? 0 : 1;
}
