// chaos: faults at random into a cluster of real agents that forms and trains, with invariants checked all
// along; the faults, the invariants and the figures are in docs/reliability.md. As root (a network namespace
// per node: tests/support/local_cluster.h).
//
// N agents form a cluster; a job loop runs `agentctl run --launcher dlps -- dlps-train` on a node that is up;
// a checker reads every agent's status and node files every 500 ms; the driver injects one fault at a time,
// at random, held 2-8 s (SIGKILL, SIGSTOP, a node or half the cluster cut off, loss, delay, a slow link, a full
// disk, hung storage: chaos_parts.h has those that need more than a command; the agent coordinating the
// running job killed; a job that floods its agents with output). When the duration is over every fault is
// undone, the cluster must be READY again within --recover, and no rank of any job may be left running.
//
// Usage: chaos [--nodes N] [--duration 2m] [--recover 90s] [--seed S] [--faults all|none|KIND,...] [--verbose]
//   --faults storage-hang,slow-link: only those (sigkill, sigstop, partition-node, partition-half, loss,
//   delay, slow-link, disk-full, storage-hang, coordinator-kill, output-flood).
//   --faults none: the soak (a job in a loop coordinated by agent 0, nothing injected; RSS and fds printed every
//   minute; agent 0's RSS must stay within 1 MB of its reading after job 80).
// Exit 0: every invariant held; 1: one did not (each violation is printed); 77: not root.
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/ctl/control_client.h"
#include "bench/chaos_parts.h"
#include "bootstrap/common/duration.h"
#include "tests/support/local_cluster.h"

namespace {

using namespace std::chrono;
using namespace dlagent::chaos;
using dlagent::ControlClient;
using dlagent::testing::LocalCluster;
using dlagent::testing::Range;
using dlagent::testing::RunCommand;
using dlagent::testing::RunResult;

enum class NodeState { kUp, kStopped, kKilled };

class Chaos {
 public:
  Chaos(int n, std::vector<std::string> kinds, uint64_t seed, milliseconds duration, milliseconds recover)
      : n_(n),
        faults_(!kinds.empty()),
        kinds_(std::move(kinds)),
        seed_(seed),
        rng_(seed),
        duration_(duration),
        recover_(recover),
        state_(n),
        restarted_at_(n),
        c_(n, {.expected = n, .min = n / 2 + 1, .join_deadline = "60s", .reseal_settle = "3s", .reseal = "on-failure"}) {
    for (auto& s : state_) s = NodeState::kUp;
  }

  int Run() {
    if (!c_.error().empty()) {
      std::fprintf(stderr, "chaos: %s\n", c_.error().c_str());
      return 1;
    }
    disk_node_ = n_ - 1;  // its files root is a small tmpfs, filled up by the disk fault
    std::filesystem::create_directories(c_.Root(disk_node_));
    if (!Sh("mount -t tmpfs -o size=1m,mode=0755 dlagent-chaos " + c_.Root(disk_node_))) {
      std::fprintf(stderr, "chaos: cannot mount a tmpfs at %s\n", c_.Root(disk_node_).c_str());
      return 1;
    }
    for (int i : Range(n_)) c_.Start(i, i == 0);
    const auto t0 = steady_clock::now();
    if (!c_.WaitPhase(Range(n_), "ready", seconds(120))) {
      std::fprintf(stderr, "chaos: %d agents did not form:\n%s", n_, c_.Describe(Range(n_)).c_str());
      return Finish(1);
    }
    std::printf("chaos: %d agents READY in %lld ms; %s for %lld s (seed %llu)\n", n_,
                static_cast<long long>(duration_cast<milliseconds>(steady_clock::now() - t0).count()),
                faults_ ? "injecting faults" : "soak, no faults", static_cast<long long>(duration_.count() / 1000),
                static_cast<unsigned long long>(seed_));
    std::fflush(stdout);
    std::thread checker([this] { Checker(); });
    std::thread jobs([this] { JobLoop(); });
    // The figures every later one is compared with, once a job has run: the first opens the agents'
    // connections to each other, which stay open.
    for (int waited = 0; waited < 600 && JobsRun() == 0; ++waited) Pause(milliseconds(100));
    Pause(seconds(2));
    for (int i : Range(n_)) baseline_.push_back({RssKb(c_.Pid(i)), OpenFds(c_.Pid(i))});
    const auto end = steady_clock::now() + duration_;
    auto next_report = steady_clock::now() + minutes(1);
    while (steady_clock::now() < end) {
      if (faults_) {
        Inject();
        Pause(milliseconds(1000 + rng_() % 2000));
      } else {
        Pause(seconds(1));
      }
      if (steady_clock::now() >= next_report) {
        Report();
        next_report += minutes(1);
      }
    }
    // Every fault is undone (each was, at the end of its hold); the cluster must be READY again.
    const auto healed_from = steady_clock::now();
    const bool healed = c_.WaitPhase(Range(n_), "ready", recover_);
    const auto healed_in = duration_cast<milliseconds>(steady_clock::now() - healed_from);
    stop_ = true;
    jobs.join();
    checker.join();
    if (healed) {  // one roster everywhere
      std::set<std::string> seen;
      for (int i : Range(n_)) {
        auto st = c_.Status(i);
        std::string r = st && st->cluster ? std::to_string(st->cluster->generation) + " by " + st->cluster->sealed_by + ":" : "none";
        if (st && st->cluster)
          for (const auto& m : st->cluster->roster) r += " " + m.instance_id;
        seen.insert(r);
      }
      if (seen.size() != 1) {
        std::string all;
        for (const auto& r : seen) all += "\n  " + r;
        counters_.Violation("one roster once healed", "the agents show " + std::to_string(seen.size()) + " rosters:" + all);
      }
    }
    // No rank outlives its job: a coordinator killed mid-job leaves none running on the other nodes (they stop
    // once gossip says it is gone), a flood's ranks end, and nothing of a killed agent's ranks stays. A job whose
    // agentctl call got no answer (its coordinator stopped for a while) runs on until its --timeout (60 s) and
    // grace (2 s): that long, and 8 s more, is what every job's ranks have to end in.
    std::string left = RanksLeft();
    for (int waited = 0; waited < 700 && !left.empty(); ++waited) {
      Pause(milliseconds(100));
      left = RanksLeft();
    }
    if (!left.empty()) counters_.Violation("no rank left running", "70 s after the last job (its --timeout 60s, --grace 2s):\n" + left);
    if (!healed) counters_.Violation("ready again", "not READY within " + std::to_string(recover_.count()) + " ms:\n" + c_.Describe(Range(n_)));
    std::printf("chaos: READY again %lld ms after the faults stopped (bound %lld ms)\n", static_cast<long long>(healed_in.count()),
                static_cast<long long>(recover_.count()));
    // Agents that ran from start to end: fds and RSS where they started (after a job's worth of warm-up). Open
    // fds may grow once by a gRPC channel to each peer (push-pull picks peers at random every 30 s, so with 16
    // agents the last channel opens some 20 minutes in), then no more.
    for (int i : Range(n_)) {
      if (restarted_.count(i)) continue;
      const long rss = RssKb(c_.Pid(i));
      const int fds = OpenFds(c_.Pid(i));
      std::printf("chaos: agent %d: RSS %ld -> %ld KB, open fds %d -> %d\n", i, baseline_[i].first, rss, baseline_[i].second, fds);
      if (fds > baseline_[i].second + 16 + n_)
        counters_.Violation("fd growth", "agent " + std::to_string(i) + ": " + std::to_string(baseline_[i].second) + " -> " + std::to_string(fds));
      // Each flood leaves a rank's bound of output (4 MiB) with its finished job, up to the node's 256 MiB.
      const long held_kb = std::min<long>(256 * 1024, 4 * 1024 * FloodsStarted());
      if (rss > baseline_[i].first + 32 * 1024 + held_kb)
        counters_.Violation("rss growth",
                            "agent " + std::to_string(i) + ": " + std::to_string(baseline_[i].first) + " -> " + std::to_string(rss) + " KB");
    }
    // The soak's coordinator once it keeps its 64 jobs (docs/reliability.md, Soak): flat within 1 MB to the end.
    if (const long rss = RssKb(c_.Pid(0)); soak_rss_from_.first > 0 && rss > soak_rss_from_.second + 1024)
      counters_.Violation("coordinator rss flat", "agent 0: " + std::to_string(soak_rss_from_.second) + " KB after job " +
                                                      std::to_string(soak_rss_from_.first) + ", " + std::to_string(rss) + " KB at the end");
    return Finish(0);
  }

 private:
  void Pause(milliseconds d) { std::this_thread::sleep_for(d); }

  long FloodsStarted() {
    std::lock_guard<std::mutex> lock(counters_.mu);
    auto it = counters_.floods.find("started");
    return it == counters_.floods.end() ? 0 : it->second;
  }

  int JobsRun() {
    std::lock_guard<std::mutex> lock(counters_.mu);
    int n = 0;
    for (const auto& [outcome, count] : counters_.jobs) n += count;
    return n;
  }

  std::string Ns(int i) { return c_.Netns(i); }

  // One fault, held 2-8 s, then undone.
  void Inject() {
    const std::string kind = kinds_[rng_() % kinds_.size()];
    const int node = static_cast<int>(rng_() % n_);
    const milliseconds hold(2000 + rng_() % 6000);
    {
      std::lock_guard<std::mutex> lock(counters_.mu);
      ++counters_.faults[kind];
    }
    if (kind == "sigkill") {
      KillAndRestart(node, hold);
    } else if (kind == "coordinator kill") {
      // The agent coordinating the job in flight (the one agentctl run asked), mid-job: the job must end naming
      // why, and its ranks on every other node must stop (checked at the end: no rank is left running).
      const int coordinator = job_node_.load();
      if (coordinator >= 0 && state_[coordinator] == NodeState::kUp) {
        KillAndRestart(coordinator, hold);
      } else {
        Pause(hold);
      }
    } else if (kind == "output flood") {
      // Every rank writes 16 MB without a newline: each agent holds at most its bound of a rank's output (4 MiB)
      // and goes on answering (status within 1 s); RSS is checked at the end.
      const int at = UpFrom(node);
      RunResult r = RunCommand({DLAGENT_AGENTCTL, "-s", c_.Sock(at), "run", "--detach", "--name", "flood", "--timeout", "60s", "--", "sh", "-c",
                                "head -c 16000000 /dev/zero | tr '\\0' x"},
                               seconds(30));
      {
        std::lock_guard<std::mutex> lock(counters_.mu);
        ++counters_.floods[r.exit_code == 0 ? "started" : "refused"];
      }
      Pause(hold);
    } else if (kind == "sigstop") {
      state_[node] = NodeState::kStopped;
      ::kill(c_.Pid(node), SIGSTOP);
      Pause(hold);
      ::kill(c_.Pid(node), SIGCONT);
      state_[node] = NodeState::kUp;
    } else if (kind == "partition node") {
      Sh("ip -n " + Ns(node) + " link set eth0 down");
      Pause(hold);
      Sh("ip -n " + Ns(node) + " link set eth0 up");
    } else if (kind == "partition half") {
      auto routes = [&](const char* verb) {
        for (int a : Range(n_)) {
          for (int b : Range(n_)) {
            if ((a < n_ / 2) != (b < n_ / 2)) Sh("ip -n " + Ns(a) + " route " + verb + " blackhole " + c_.Ip(b) + "/32");
          }
        }
      };
      routes("add");
      Pause(hold);
      routes("del");
    } else if (kind == "loss 30%") {
      const std::string nft = "ip netns exec " + Ns(node) + " nft ";
      Sh(nft + "add table inet chaos");
      Sh(nft + "'add chain inet chaos out { type filter hook output priority 0; }'");
      Sh(nft + "'add chain inet chaos in { type filter hook input priority 0; }'");
      Sh(nft + "add rule inet chaos out oifname eth0 numgen random mod 100 '<' 30 drop");
      Sh(nft + "add rule inet chaos in iifname eth0 numgen random mod 100 '<' 30 drop");
      Pause(hold);
      Sh(nft + "delete table inet chaos");
    } else if (kind == "delay") {
      // 50-250 ms each way, for the whole hold (a link to a far zone, or a congested switch).
      const milliseconds delay(50 + rng_() % 201);
      const std::string svc = c_.ServicesNetns(), port = "p" + std::to_string(node), relay = "d" + std::to_string(node);
      const std::string ip = "ip -n " + svc + " link ";
      Sh(ip + "set " + port + " nomaster");
      Sh(ip + "add " + relay + " type veth peer name e" + std::to_string(node));
      Sh(ip + "set e" + std::to_string(node) + " master br0 up");
      Sh(ip + "set " + relay + " up");
      {
        DelayedLink link(svc, port, relay, delay);
        const auto t0 = steady_clock::now();
        MeasureDelay(node, delay);  // the harness checks its own fault: a round trip to the node takes 2 x delay
        const auto took = duration_cast<milliseconds>(steady_clock::now() - t0);
        if (took < hold) Pause(hold - took);
        if (!link.ok()) std::fprintf(stderr, "chaos: cannot relay %s through %s in %s\n", port.c_str(), relay.c_str(), svc.c_str());
      }
      Sh(ip + "del " + relay);
      Sh(ip + "set " + port + " master br0");
    } else if (kind == "slow link") {
      const std::string tc = "tc -n " + Ns(node) + " ";
      Sh(tc + "qdisc add dev eth0 root handle 1: htb default 1");
      Sh(tc + "class add dev eth0 parent 1: classid 1:1 htb rate 64kbit ceil 64kbit");
      Pause(hold);
      Sh(tc + "qdisc del dev eth0 root");
    } else if (kind == "storage hang") {
      HangStorage(node, hold);
    } else {  // disk full under the disk node's files
      Sh("dd if=/dev/zero of=" + c_.Root(disk_node_) + "/filler bs=64k count=64");
      Pause(hold);
      std::filesystem::remove(c_.Root(disk_node_) + "/filler");
    }
  }

  void KillAndRestart(int node, milliseconds hold) {
    state_[node] = NodeState::kKilled;
    c_.Kill(node, SIGKILL);
    restarted_.insert(node);
    Pause(hold);
    c_.Start(node, node == 0);
    restarted_at_[node] = duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
    state_[node] = NodeState::kUp;
  }

  // The ranks of any job still running on the cluster (dlps-train, the floods' head and tr).
  std::string RanksLeft() {
    const RunResult r = RunCommand({"pgrep", "-a", "-f", std::string("^") + DLAGENT_DLPS_TRAIN + "|^head -c 16000000|^tr .0 x"}, seconds(10));
    return r.exit_code == 0 ? r.output : "";
  }

  int UpFrom(int node) const {  // the first node from `node` on (wrapping) whose agent is up, else `node`
    for (int k = 0; k < n_ && state_[node] != NodeState::kUp; ++k) node = (node + 1) % n_;
    return node;
  }

  // An agent that has run for 10 s since its last start (every agent that was never killed).
  bool Settled(int node) const { return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count() - restarted_at_[node] > 10000; }

  // `agentctl health` asked of the next agent up while `node` is delayed or its storage hangs (chaos_parts.h).
  void MeasureDelay(int node, milliseconds delay) {
    CheckDelay(
        c_, node, UpFrom((node + 1) % n_), delay, [&] { return Settled(node); }, counters_);
  }
  void HangStorage(int node, milliseconds hold) {
    CheckHungStorage(
        c_, node, UpFrom((node + 1) % n_), hold, [&] { return Settled(node); }, counters_);
  }

  void Checker() {
    // A roster is known by its generation and the leader that sealed it: agents adopt the highest (generation,
    // leader). (generation, leader) -> its members, as the first agent to show it said.
    std::map<std::pair<uint64_t, std::string>, std::string> rosters;
    std::set<std::pair<uint64_t, std::string>> conflicts;  // seen with two member lists (each counted once)
    while (!stop_) {
      for (int i : Range(n_)) {
        if (state_[i] != NodeState::kUp) continue;
        const auto t0 = steady_clock::now();
        auto client = ControlClient::Connect(c_.Sock(i), seconds(1));
        auto status = client.ok() ? (*client)->GetStatus() : dlagent::Result<dlagent::StatusSnapshot>(client.status());
        const auto took = duration_cast<milliseconds>(steady_clock::now() - t0);
        if (state_[i] != NodeState::kUp) continue;  // a fault began meanwhile
        {
          std::lock_guard<std::mutex> lock(counters_.mu);
          ++counters_.status_checks;
        }
        const int64_t since_start = duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count() - restarted_at_[i];
        if ((!status.ok() || took > seconds(1)) && since_start < 5000) continue;  // started a moment ago: its socket may not be there yet
        if (!status.ok() || took > seconds(1)) {
          counters_.Violation("status within 1 s", "agent " + std::to_string(i) + " (" + std::to_string(took.count()) +
                                                       " ms): " + (status.ok() ? "slow" : status.status().ToString()));
          continue;
        }
        if (status->cluster && status->cluster->generation > 0 && status->cluster->failure.empty()) {
          std::string members;
          for (const auto& m : status->cluster->roster) members += " " + m.instance_id;
          const auto key = std::make_pair(status->cluster->generation, status->cluster->sealed_by);
          std::lock_guard<std::mutex> lock(counters_.mu);
          ++counters_.roster_checks;
          auto [it, fresh] = rosters.emplace(key, members);
          if (!fresh && it->second != members && conflicts.insert(key).second) {
            ++counters_.violations["one roster per seal"];
            counters_.examples.push_back("one roster per seal: generation " + std::to_string(key.first) + " sealed by " + key.second + ": [" +
                                         it->second + " ] and, at agent " + std::to_string(i) + ", [" + members + " ]");
          }
          if (fresh) {
            auto& leaders = leaders_of_[key.first];
            leaders.insert(key.second);
            if (leaders.size() == 2) {
              counters_.twice_sealed = true;
              ++counters_.violations["one sealer per generation"];
              counters_.examples.push_back("one sealer per generation: generation " + std::to_string(key.first) + " sealed by " + *leaders.begin() +
                                           " and by " + *leaders.rbegin());
            }
          }
        }
        const std::string workers = c_.ReadFile(i, "/opt/deeplearning/workers");
        const std::string roster = c_.ReadFile(i, "/etc/dlagent/roster.json");
        {
          std::lock_guard<std::mutex> lock(counters_.mu);
          ++counters_.file_checks;
        }
        if (workers != "<error>" && !WorkersWhole(workers))
          counters_.Violation("node files whole", "agent " + std::to_string(i) + " workers: " + workers);
        if (roster != "<error>" && !nlohmann::json::accept(roster))
          counters_.Violation("node files whole", "agent " + std::to_string(i) + " roster.json does not parse");
      }
      std::this_thread::sleep_for(milliseconds(500));
    }
  }

  void JobLoop() {
    const std::string train = DLAGENT_DLPS_TRAIN;
    int round = 0;
    while (!stop_) {
      // Chaos spreads the jobs over every node's coordinator; the soak keeps one coordinator, so that each
      // agent's retained jobs (the 64 latest it coordinated, the 64 latest it ran) reach their bound early and
      // what grows after that is a leak.
      const int node = UpFrom(faults_ ? (round++) % n_ : 0);
      job_node_ = node;
      const auto t0 = steady_clock::now();
      RunResult r =
          RunCommand({DLAGENT_AGENTCTL, "-s",      c_.Sock(node), "run",  "--launcher", "dlps", "--timeout", "60s", "--grace",    "2s",   "--", train,
                      "--model",        "softmax", "--samples",   "2000", "--features", "16",   "--epochs",  "2",   "--progress", "never"},
                     seconds(90));
      job_node_ = -1;
      const auto took = steady_clock::now() - t0;
      std::string outcome;
      if (r.exit_code == 0) {
        outcome = "succeeded";
      } else if (r.exit_code == -1 || took > seconds(80)) {
        outcome = "hung";
        counters_.Violation("no job hangs", "agentctl run on agent " + std::to_string(node) + " ran " +
                                                std::to_string(duration_cast<seconds>(took).count()) + " s:\n" + r.output.substr(0, 2000));
      } else if (r.output.find("not ready") != std::string::npos || r.output.find("is not READY") != std::string::npos ||
                 r.output.find("no cluster") != std::string::npos) {
        outcome = "refused (not ready)";
      } else if (r.output.find("agentd is not running") != std::string::npos || r.output.find("agentd did not answer") != std::string::npos ||
                 r.output.find("agentd closed the connection") != std::string::npos) {
        outcome = "its agent unreachable (stopped or killed)";
      } else if (std::regex_search(r.output, std::regex("i-[0-9a-f]{6,}|rank [0-9]+|node [0-9]"))) {
        outcome = "failed, naming why";
      } else {
        outcome = "failed without a reason";
        counters_.Violation("a failed job names why", "exit " + std::to_string(r.exit_code) + ":\n" + r.output.substr(0, 2000));
      }
      {
        std::lock_guard<std::mutex> lock(counters_.mu);
        ++counters_.jobs[outcome];
      }
      if (r.exit_code != 0) std::this_thread::sleep_for(seconds(1));
      if (!faults_) std::this_thread::sleep_for(seconds(5));  // the soak: a job every few seconds, for as long as it lasts
    }
  }

  void Report() {
    std::printf("chaos: %s", faults_ ? "" : "soak: ");
    if (state_[0] == NodeState::kUp) {  // the coordinator of the soak: its heap in use beside its RSS
      auto client = ControlClient::Connect(c_.Sock(0), seconds(1));
      auto status = client.ok() ? (*client)->GetStatus() : dlagent::Result<dlagent::StatusSnapshot>(client.status());
      if (status.ok()) std::printf("agent 0 heap in use %llu KB; ", static_cast<unsigned long long>(status->heap_in_use_bytes >> 10));
    }
    for (int i : Range(n_)) std::printf("agent %d RSS %ld KB fds %d; ", i, RssKb(c_.Pid(i)), OpenFds(c_.Pid(i)));
    std::lock_guard<std::mutex> lock(counters_.mu);
    int jobs = 0;
    for (auto& [k, v] : counters_.jobs) jobs += v;
    std::printf("%d jobs so far\n", jobs);
    if (!faults_ && jobs >= 80 && soak_rss_from_.first == 0 && state_[0] == NodeState::kUp) soak_rss_from_ = {jobs, RssKb(c_.Pid(0))};
    std::fflush(stdout);
  }

  int Finish(int rc) {
    stop_ = true;
    for (int i : Range(n_)) {  // nothing left stopped
      if (state_[i] == NodeState::kStopped) ::kill(c_.Pid(i), SIGCONT);
    }
    ::umount2(c_.Root(disk_node_).c_str(), MNT_DETACH);
    std::lock_guard<std::mutex> lock(counters_.mu);
    counters_.Print();
    if (counters_.twice_sealed && verbose_) {  // what each agent said about rosters, to see how
      for (int i : Range(n_)) PrintRosterLines(i, c_.Log(i));
    }
    const bool ok = rc == 0 && counters_.violations.empty();
    std::printf("chaos: %s\n", ok ? "every invariant held" : "FAILED");
    return ok ? 0 : 1;
  }

  const int n_;
  const bool faults_;
  const std::vector<std::string> kinds_;  // the faults drawn from
  const uint64_t seed_;

 public:
  bool verbose_ = false;  // --verbose: the agents' roster lines when a generation was sealed twice
 private:
  std::mt19937_64 rng_;
  const milliseconds duration_, recover_;
  std::vector<std::atomic<NodeState>> state_;
  std::vector<std::atomic<int64_t>> restarted_at_;  // steady clock, ms: when each agent was last started again
  LocalCluster c_;
  int disk_node_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> job_node_{-1};  // the agent coordinating the job in flight, -1 between jobs
  std::set<int> restarted_;
  std::map<uint64_t, std::set<std::string>> leaders_of_;  // generation -> leaders that sealed it (the checker's)
  std::vector<std::pair<long, int>> baseline_;
  std::pair<int, long> soak_rss_from_{0, 0};  // (jobs, agent 0's RSS in KB) at the soak's first report after job 80
  Counters counters_;
};

}  // namespace

int main(int argc, char** argv) {
  ChaosArgs args;
  if (std::optional<int> rc = ParseChaosArgs(argc, argv, args)) return *rc;
  if (!LocalCluster::root()) {
    std::printf("[  SKIPPED ] chaos: needs root (a network namespace per node)\n");
    return 77;
  }
  if (std::system("command -v nft >/dev/null") != 0) {
    std::printf("[  SKIPPED ] chaos: needs nftables (apt-get install nftables) for packet loss\n");
    return 77;
  }
  Chaos chaos(args.nodes, args.faults, args.seed, args.duration, args.recover);
  chaos.verbose_ = args.verbose;
  std::printf("chaos: seed %llu\n", static_cast<unsigned long long>(args.seed));
  return chaos.Run();
}
