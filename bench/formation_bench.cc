// Cluster formation with real agentd processes on loopback (tests/support/local_cluster.h): the time from
// the last agent's start to every node READY, for 8 and for 64 agents started together, and the SQS
// requests each node makes during formation and per minute after it (leader and non-leaders apart).
// Goals: all READY within 3 s of the last start; zero SQS requests from non-leaders after they joined.
// The baseline beside each time: how long one agent alone takes from start to serving its socket (the
// floor any formation pays), measured in the same run.
//
// Usage: formation_bench [--sizes 8,64] [--after SECONDS] [--trace] [--netns]   (default 8,64 and 30 s of quiet
// measured; --trace: every agent's phase once a second while forming; --netns: as root, a network namespace
// per node on a bridge instead of loopback addresses. Each packet then crosses two veths and a bridge, and
// on 2 cores 64 agents overflow the kernel's per-CPU input backlog: the drops are printed.)
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "tests/support/local_cluster.h"

namespace {

using namespace std::chrono;
using dlagent::testing::CpuSeconds;
using dlagent::testing::LocalCluster;
using dlagent::testing::Range;

double Seconds(steady_clock::duration d) { return duration<double>(d).count(); }

struct Requests {
  uint64_t leader = 0, others_max = 0, others_total = 0;
};

Requests Count(LocalCluster& c, int n, const std::string& leader) {
  Requests r;
  for (int i = 0; i < n; ++i) {
    auto s = c.Status(i);
    if (!s || !s->cluster) continue;
    if (s->identity.instance_id == leader) {
      r.leader = s->cluster->sqs_requests;
    } else {
      r.others_max = std::max(r.others_max, s->cluster->sqs_requests);
      r.others_total += s->cluster->sqs_requests;
    }
  }
  return r;
}

// Packets the kernel dropped because a CPU's input backlog was full (/proc/net/softnet_stat, column 2).
uint64_t BacklogDrops() {
  std::ifstream in("/proc/net/softnet_stat");
  uint64_t total = 0;
  for (std::string processed, dropped, rest; in >> processed >> dropped && std::getline(in, rest);) total += std::stoull(dropped, nullptr, 16);
  return total;
}

int Run(int n, int after_s, bool trace, bool netns) {
  // Starting 64 agents takes a while on 2 cores: a generous deadline, so that the figure is the formation's.
  LocalCluster c(n, {.expected = n, .join_deadline = "5m", .poll_wait = "20s", .storage = false, .netns = netns});
  const uint64_t drops0 = BacklogDrops();
  if (!c.error().empty()) {
    std::fprintf(stderr, "formation_bench: cannot start the emulators: %s\n", c.error().c_str());
    return 1;
  }
  // Baseline: one agent of this cluster from start to answering on its socket.
  const auto b0 = steady_clock::now();
  c.Start(0, /*master=*/true);
  while (!c.Status(0)) std::this_thread::sleep_for(milliseconds(5));
  const double serve_s = Seconds(steady_clock::now() - b0);
  for (int i = 1; i < n; ++i) c.Start(i);
  const auto last_start = steady_clock::now();
  if (trace) {
    // Where the time goes: the phases of all agents, once a second, until all are ready.
    for (;;) {
      std::map<std::string, int> phases;
      for (int i = 0; i < n; ++i) {
        auto s = c.Status(i);
        ++phases[s ? std::string(dlagent::AgentPhaseName(s->phase)) : "no answer"];
      }
      std::string line;
      for (const auto& [p, k] : phases) line += " " + p + "=" + std::to_string(k);
      auto lead = c.Status(0);
      std::fprintf(stderr, "  t=%5.1fs%s | node 0: %s\n", Seconds(steady_clock::now() - last_start), line.c_str(),
                   lead ? lead->phase_detail.c_str() : "-");
      if (phases["ready"] == n || steady_clock::now() - last_start > seconds(120)) break;
      std::this_thread::sleep_for(seconds(1));
    }
  }
  if (!c.WaitPhase(Range(n), "ready", seconds(120))) {
    std::fprintf(stderr, "formation_bench: %d agents did not all become ready:\n%s", n, c.Describe(Range(n)).c_str());
    for (int i = 0; i < n; ++i) {
      if (auto s = c.Status(i); s && s->phase == dlagent::AgentPhase::kReady) continue;
      const std::string log = c.Log(i);
      std::fprintf(stderr, "the log of node %d, the first not ready (end):\n%s", i, log.substr(log.size() > 4000 ? log.size() - 4000 : 0).c_str());
      break;
    }
    std::fprintf(stderr, "packets the kernel dropped meanwhile (input backlog full): %llu\n",
                 static_cast<unsigned long long>(BacklogDrops() - drops0));
    return 1;
  }
  const double ready_s = Seconds(steady_clock::now() - last_start);
  const uint64_t drops = BacklogDrops() - drops0;
  const std::string leader = c.Status(0)->cluster->leader;
  const Requests formed = Count(c, n, leader);
  // CPU of a formed cluster at rest, beside `sleep` over the same window (the floor of any process).
  dlagent::testing::Subprocess floor({"/bin/sleep", std::to_string(after_s + 5)}, {}, "/dev/null");
  std::vector<double> cpu0(n);
  for (int i = 0; i < n; ++i) cpu0[i] = CpuSeconds(c.Pid(i));
  const double floor0 = CpuSeconds(floor.pid());
  std::this_thread::sleep_for(seconds(after_s));
  double cpu_sum = 0, cpu_max = 0;
  for (int i = 0; i < n; ++i) {
    const double pct = (CpuSeconds(c.Pid(i)) - cpu0[i]) / after_s * 100.0;
    cpu_sum += pct;
    cpu_max = std::max(cpu_max, pct);
  }
  const double floor_pct = (CpuSeconds(floor.pid()) - floor0) / after_s * 100.0;
  const Requests later = Count(c, n, leader);
  const double per_min = 60.0 / after_s;
  std::printf(
      "%3d agents (%s): all READY %.2f s after the last start (goal <= 3 s); one agent alone serves its socket %.3f s "
      "after start (baseline); ratio %.1fx; packets dropped by the kernel meanwhile: %llu\n",
      n, c.Netns(0).empty() ? "loopback" : "network namespaces", ready_s, serve_s, ready_s / serve_s, static_cast<unsigned long long>(drops));
  std::printf("            SQS requests during formation: leader %llu, each other node at most %llu (%.1f on average)\n",
              static_cast<unsigned long long>(formed.leader), static_cast<unsigned long long>(formed.others_max),
              n > 1 ? static_cast<double>(formed.others_total) / (n - 1) : 0.0);
  std::printf("            SQS requests per minute after it (over %d s): leader %.1f, all other nodes together %.1f (goal 0)\n", after_s,
              (later.leader - formed.leader) * per_min, (later.others_total - formed.others_total) * per_min);
  std::printf(
      "            CPU per agent at rest after it: %.3f%% of a core on average, %.3f%% at most; `sleep` over the same "
      "window: %.3f%% (baseline)\n",
      cpu_sum / n, cpu_max, floor_pct);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {8, 64};
  int after_s = 30;
  bool trace = false, netns = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) {
      sizes.clear();
      std::stringstream ss(argv[++i]);
      for (std::string part; std::getline(ss, part, ',');) sizes.push_back(std::max(2, std::min(200, std::atoi(part.c_str()))));
    } else if (!std::strcmp(argv[i], "--trace")) {
      trace = true;
    } else if (!std::strcmp(argv[i], "--netns")) {
      netns = true;
    } else if (!std::strcmp(argv[i], "--after") && i + 1 < argc) {
      after_s = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: formation_bench [--sizes 8,64] [--after SECONDS] [--trace] [--netns]\n");
      return 2;
    }
  }
  for (int n : sizes) {
    if (int rc = Run(n, after_s, trace, netns); rc != 0) return rc;
  }
  return 0;
}
