// Membership at scale, in the deterministic simulator (virtual time; LAN profile: 1 s probe, 500 ms
// timeout, suspicion mult 4). Prints each figure beside the goal and memberlist's published or derived
// figure. Usage: swim_sim_bench [--quick]  (--quick: smaller N and shorter runs, for a smoke run)
//        swim_sim_bench --members N [M ...]: the scale figures (formation, bandwidth, a join, a crash) at each
//        size, beside the cost of simulating it (CPU, and memory per member held: every member holds all).
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "tests/sim/swim_sim.h"

namespace {

using namespace std::chrono;
using dlagent::Duration;
using dlagent::swim::MemberState;
using dlagent::swim::SwimConfig;
using dlagent::testing::SimConfig;
using dlagent::testing::SwimSim;

double Secs(Duration d) { return duration<double>(d).count(); }

double Pct(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

void Row(const char* what, const std::string& measured, const char* goal, const char* memberlist) {
  std::printf("%-58s %-22s %-16s %s\n", what, measured.c_str(), goal, memberlist);
}

std::string Fmt(const char* f, double a, double b = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}

bool Converged(SwimSim& sim) {
  for (int i = 0; i < sim.size(); ++i) {
    if (!sim.up(i)) continue;
    if (sim.node(i).NumActive() != static_cast<size_t>(sim.size())) return false;
  }
  return true;
}

// Per-observer detection times of crashes, one crash after another.
std::vector<double> CrashDetection(int n, int crashes, uint64_t seed) {
  SwimSim sim({.seed = seed}, SwimConfig::Lan());
  sim.AddMany(n);
  sim.RunUntil([&] { return Converged(sim); }, seconds(120));
  sim.Run(seconds(5));
  std::vector<double> times;
  for (int c = 0; c < crashes; ++c) {
    const int victim = 1 + c * (n - 1) / crashes;
    sim.Crash(victim);
    std::map<int, double> seen;
    const auto start = sim.now();
    sim.RunUntil(
        [&] {
          for (int i = 0; i < n; ++i) {
            if (i == victim || !sim.up(i) || seen.count(i)) continue;
            if (sim.View(i, victim) == MemberState::kDead) seen[i] = Secs(sim.now() - start);
          }
          return static_cast<int>(seen.size()) >= n - 1 - c;
        },
        seconds(120));
    for (auto& [i, t] : seen) times.push_back(t);
    sim.Run(seconds(5));
  }
  return times;
}

// One member paused 2 s every 10 s for `mins`: deaths declared of it, and false suspicions of the healthy
// members (each forces a refutation: the sum of their incarnations) and deaths of them.
struct PauseResult {
  int paused_deaths = 0;
  uint64_t healthy_refutations = 0;
  int healthy_deaths = 0;
};
PauseResult PausedMember(int n, int mins, bool lifeguard, uint64_t seed) {
  SwimConfig c = SwimConfig::Lan();
  if (!lifeguard) c.awareness_max = 1;
  SwimSim sim({.seed = seed}, c);
  sim.AddMany(n);
  sim.RunUntil([&] { return Converged(sim); }, seconds(60));
  uint64_t base = 0;
  for (int s = 1; s < n; ++s) base += sim.node(s).incarnation();
  PauseResult r;
  std::set<std::pair<int, int>> dead_pairs;
  for (int cycle = 0; cycle < mins * 6; ++cycle) {
    sim.Pause(0);
    sim.Run(seconds(2));
    sim.Resume(0);
    for (int step = 0; step < 8; ++step) {
      sim.Run(seconds(1));
      for (int o = 0; o < n; ++o) {
        for (int s = 0; s < n; ++s) {
          if (o == s || sim.View(o, s) != MemberState::kDead || !dead_pairs.insert({o, s}).second) continue;
          (s == 0 ? r.paused_deaths : r.healthy_deaths)++;
        }
      }
    }
  }
  for (int s = 1; s < n; ++s) r.healthy_refutations += sim.node(s).incarnation();
  r.healthy_refutations -= base;
  return r;
}

double CpuS() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

long MaxRssKb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// The scale scenarios at n members: started together, steady bandwidth, one join, one crash.
void Scale(int n) {
  const double cpu0 = CpuS();
  const long rss0 = MaxRssKb();
  SwimSim sim({.seed = 15}, SwimConfig::Lan());
  sim.AddMany(n);
  const auto formed = sim.RunUntil([&] { return Converged(sim); }, seconds(300));
  const double form_cpu = CpuS() - cpu0;
  const long rss = MaxRssKb() - rss0;
  std::printf("N=%-6d converged %-9s (goal <= 30 s)  simulating it: %.0f s CPU, +%ld MB max RSS (%.0f bytes per member held)\n", n,
              formed ? Fmt("%.1f s", Secs(*formed)).c_str() : "> 300 s", form_cpu, rss / 1024,
              static_cast<double>(rss) * 1024 / (static_cast<double>(n) * n));
  if (!formed) return;
  sim.Run(seconds(60));  // the joins' updates drain from the piggyback queues first (10 s is enough at 1,000, not at 3,000)
  const uint64_t b0 = sim.udp_bytes();
  const auto t0 = sim.now();
  sim.Run(seconds(30));
  std::printf("N=%-6d gossip bandwidth per member %.2f KB/s (goal <= 0.7 KB/s)\n", n, (sim.udp_bytes() - b0) / 1000.0 / n / Secs(sim.now() - t0));
  const int newcomer = sim.Add();
  auto j = sim.RunUntil([&] { return sim.CountViews(newcomer, MemberState::kAlive) >= 0.99 * (sim.size() - 1); }, seconds(60));
  std::printf("N=%-6d one join reaches 99%% in %s (goal <= 3 s)\n", n, j ? Fmt("%.2f s", Secs(*j)).c_str() : "> 60 s");
  const int victim = n / 2;
  sim.Crash(victim);
  std::vector<double> times;
  const auto start = sim.now();
  std::vector<bool> seen(sim.size(), false);
  sim.RunUntil(
      [&] {
        for (int i = 0; i < sim.size(); ++i) {
          if (i == victim || seen[i] || !sim.up(i) || sim.View(i, victim) != MemberState::kDead) continue;
          seen[i] = true;
          times.push_back(Secs(sim.now() - start));
        }
        return static_cast<int>(times.size()) >= sim.size() - 1;
      },
      seconds(120));
  std::printf("N=%-6d a crash detected by every member: p50 %.1f s / p99 %.1f s (%zu of %d)  total CPU %.0f s\n", n, Pct(times, 0.5),
              Pct(times, 0.99), times.size(), sim.size() - 1, CpuS() - cpu0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 && !std::strcmp(argv[1], "--members")) {
    std::printf("SWIM + Lifeguard in the simulator (LAN profile) at scale. Figures are virtual seconds.\n");
    for (int i = 2; i < argc; ++i) Scale(std::atoi(argv[i]));
    return 0;
  }
  const bool quick = argc > 1 && !std::strcmp(argv[1], "--quick");
  const int big = quick ? 300 : 1000;
  std::printf("SWIM + Lifeguard in the simulator (LAN profile). Figures are virtual seconds.\n");
  std::printf("%-58s %-22s %-16s %s\n", "scenario", "measured", "goal", "memberlist");

  std::vector<double> d100 = CrashDetection(100, quick ? 3 : 10, 11);
  Row("crash detected by every member, N=100: p50 / p99", Fmt("%.1f s / %.1f s", Pct(d100, 0.5), Pct(d100, 0.99)), "<= 11 s / 20 s",
      "derived: 1 s probe + 8..48 s suspicion");
  std::vector<double> dbig = CrashDetection(big, quick ? 2 : 5, 12);
  Row(quick ? "crash detected by every member, N=300: p50 / p99" : "crash detected by every member, N=1000: p50 / p99",
      Fmt("%.1f s / %.1f s", Pct(dbig, 0.5), Pct(dbig, 0.99)), "<= 15 s / 25 s", "derived: 1 s + 12..72 s suspicion");

  {
    SwimSim sim({.loss = 0.10, .seed = 13}, SwimConfig::Lan());
    sim.AddMany(100);
    sim.RunUntil([&] { return Converged(sim); }, seconds(60));
    int deaths = 0;
    const int minutes_run = quick ? 5 : 60;
    std::set<std::pair<int, int>> dead_pairs;
    for (int m = 0; m < minutes_run * 6; ++m) {
      sim.Run(seconds(10));
      for (int o = 0; o < sim.size(); ++o)
        for (int s = 0; s < sim.size(); ++s)
          if (o != s && sim.View(o, s) == MemberState::kDead && dead_pairs.insert({o, s}).second) ++deaths;
    }
    Row(quick ? "false deaths, N=100, 10% loss, 5 simulated min" : "false deaths, N=100, 10% loss, 1 simulated hour", Fmt("%.0f", deaths), "0", "-");
  }

  {
    const int mins = quick ? 2 : 10;
    const PauseResult on = PausedMember(50, mins, true, 14), off = PausedMember(50, mins, false, 14);
    Row("member paused 2 s every 10 s, N=50: deaths of it", Fmt("%.0f", on.paused_deaths), "0", "-");
    Row("  healthy members falsely suspected / declared dead", Fmt("%.0f / %.0f", on.healthy_refutations, on.healthy_deaths), "", "");
    Row("  same with local health off: suspected / dead (baseline)", Fmt("%.0f / %.0f", off.healthy_refutations, off.healthy_deaths), "", "");
  }

  {
    SwimSim sim({.seed = 15}, SwimConfig::Lan());
    sim.AddMany(big);
    auto t = sim.RunUntil([&] { return Converged(sim); }, seconds(300));
    Row(quick ? "300 members started together: all converged" : "1000 members started together: all converged",
        t ? Fmt("%.1f s", Secs(*t)) : std::string("> 300 s"), "<= 30 s", "measured: ~95 s for 2000");
    sim.Run(seconds(10));
    const uint64_t b0 = sim.udp_bytes();
    const auto t0 = sim.now();
    sim.Run(seconds(60));
    Row(quick ? "gossip bandwidth per member, N=300 (steady)" : "gossip bandwidth per member, N=1000 (steady)",
        Fmt("%.2f KB/s", (sim.udp_bytes() - b0) / 1000.0 / big / Secs(sim.now() - t0)), "<= 0.7 KB/s", "-");
    const int newcomer = sim.Add();
    auto j = sim.RunUntil([&] { return sim.CountViews(newcomer, MemberState::kAlive) >= 0.99 * (sim.size() - 1); }, seconds(60));
    Row(quick ? "one join reaches 99% of N=300" : "one join reaches 99% of N=1000", j ? Fmt("%.2f s", Secs(*j)) : std::string("> 60 s"), "<= 3 s",
        "-");
  }

  {
    SwimSim sim({.seed = 16}, SwimConfig::Lan());
    sim.AddMany(100);
    sim.RunUntil([&] { return Converged(sim); }, seconds(60));
    for (int k = 0; k < 10; ++k) sim.Crash(5 + 9 * k);
    size_t max_views = 0, final_views = 0;
    for (int s = 0; s < 60; ++s) {
      sim.Run(seconds(1));
      std::set<std::vector<int>> views;
      for (int o = 0; o < sim.size(); ++o) {
        if (!sim.up(o)) continue;
        std::vector<int> alive;
        for (int x = 0; x < sim.size(); ++x)
          if (sim.View(o, x) == MemberState::kAlive || x == o) alive.push_back(x);
        views.insert(alive);
      }
      max_views = std::max(max_views, views.size());
      final_views = views.size();
    }
    Row("10 simultaneous crashes, N=100: distinct views after 60 s", Fmt("%.0f (at most %.0f on the way)", final_views, max_views), "<= 2", "-");
  }

  {
    SwimSim sim({.seed = 17}, SwimConfig::Lan());
    sim.AddMany(100);
    sim.RunUntil([&] { return Converged(sim); }, seconds(60));
    for (int i = 50; i < 100; ++i) sim.SetGroup(i, 1);
    sim.Run(minutes(quick ? 2 : 5));
    sim.Heal();
    auto t = sim.RunUntil([&] { return Converged(sim); }, seconds(300));
    Row(quick ? "50/50 partition of 2 min, N=100: re-merged after healing" : "50/50 partition of 5 min, N=100: re-merged after healing",
        t ? Fmt("%.1f s", Secs(*t)) : std::string("> 300 s"), "<= 60 s", "needs serf's reconnect");
  }
  return 0;
}
