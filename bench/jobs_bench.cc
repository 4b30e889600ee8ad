// Jobs on real agents (tests/support/local_cluster.h, a network namespace per node as root):
//   - launch: the time from starting `agentctl run` to every rank running, on 4 and 16 nodes, beside the time
//     to start one local process measured the same way in the same run (goal: within 100 ms of it at 16
//     nodes). Each rank, and the local process, prints the wall clock when it runs; the figure is the latest
//     of them minus the moment agentctl (or the local process) was started. Median of 5 runs.
//   - restart (agentctl run --restarts 1), on the same clusters: the time from a rank's failure to every rank
//     of the next attempt running, and from a node losing power (every process of its namespace SIGKILLed) to
//     every rank on the other nodes running again (goal: under 5 s at 4 and 16 nodes), beside the fresh start
//     above. The node's loss is known once gossip finds it dead (the local cluster's gossip timings).
//   - output: lines a second that one rank's output moves through its agent (read, split into lines, kept in
//     the buffer, logged), beside the same program's output piped to /dev/null, in the same run.
//
// Usage: jobs_bench [--sizes 4,16] [--lines 1000000]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/local_cluster.h"

namespace {

using namespace std::chrono;
using dlagent::testing::LocalCluster;
using dlagent::testing::Range;
using dlagent::testing::RunCommand;

int64_t NowNs() { return duration_cast<nanoseconds>(system_clock::now().time_since_epoch()).count(); }

// The latest "T <ns>" line of the output (a rank's clock when it ran).
int64_t LatestStamp(const std::string& out, int* count) {
  int64_t latest = 0;
  *count = 0;
  for (size_t p = out.find("T "); p != std::string::npos; p = out.find("T ", p + 2)) {
    const int64_t t = std::strtoll(out.c_str() + p + 2, nullptr, 10);
    if (t > 1'000'000'000'000'000'000) latest = std::max(latest, t), ++*count;
  }
  return latest;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

const char* kStamp = "echo T $(date +%s%N)";

// The job as `agentctl jobs --json` shows it (null when absent).
nlohmann::json JobOf(LocalCluster& c, int node, const std::string& id) {
  auto j = nlohmann::json::parse(RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(node), "jobs", "--json"}, seconds(10)).output, nullptr, false);
  if (j.is_discarded()) return {};
  for (const auto& job : j["jobs"]) {
    if (job["id"] == id) return job;
  }
  return {};
}

int Restart(LocalCluster& c, int n, double fresh_ms) {
  // A rank's failure: rank 0 of attempt 0 stamps its end and exits 1; every rank of attempt 1 stamps its start.
  const std::string fail =
      "if [ $DLAGENT_RESTART_COUNT = 0 ]; then [ $DLAGENT_RANK = 0 ] && { echo F $(date +%s%N); exit 1; }; exec sleep 60; fi; " + std::string(kStamp);
  auto r = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(0), "run", "--restarts", "1", "--grace", "1s", "--", "sh", "-c", fail}, seconds(120));
  const size_t f = r.output.find("F ");
  int count = 0;
  const int64_t again = LatestStamp(r.output, &count);
  if (r.exit_code != 0 || f == std::string::npos || count != n) {
    std::fprintf(stderr, "jobs_bench: the restarted job failed (exit %d, %d of %d ranks):\n%s", r.exit_code, count, n, r.output.c_str());
    return 1;
  }
  const double rank_ms = (again - std::strtoll(r.output.c_str() + f + 2, nullptr, 10)) / 1e6;

  if (n < 2) {
    std::printf("restart, %2d node: a rank's failure to every rank running again %.0f ms; a fresh start %.0f ms\n", n, rank_ms, fresh_ms);
    return 0;
  }
  // A node losing power: the last one (not the coordinator's).
  const std::string wait = "if [ $DLAGENT_RESTART_COUNT = 0 ]; then exec sleep 60; fi; " + std::string(kStamp);
  auto d = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(0), "run", "--detach", "--restarts", "1", "--min-nodes", std::to_string(n - 1), "--grace", "1s",
                       "--", "sh", "-c", wait},
                      seconds(60));
  if (d.exit_code != 0) return std::fprintf(stderr, "jobs_bench: the job did not start:\n%s", d.output.c_str()), 1;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  nlohmann::json job;
  for (int i = 0; i < 600 && (job.is_null() || job["running"] != n); ++i) {
    job = JobOf(c, 0, id);
    std::this_thread::sleep_for(milliseconds(50));
  }
  const int64_t t0 = NowNs();
  c.PowerOff(n - 1);
  for (int i = 0; i < 1200; ++i) {
    job = JobOf(c, 0, id);
    if (!job.is_null() && (job["state"] == "succeeded" || job["state"] == "failed" || job["state"] == "killed")) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  auto logs = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(0), "logs", id}, seconds(30));
  const int64_t back = LatestStamp(logs.output, &count);
  if (job.is_null() || job["state"] != "succeeded" || count != n - 1) {
    std::fprintf(stderr, "jobs_bench: the job did not restart without the lost node (%d of %d ranks): %s\n%s", count, n - 1, job.dump().c_str(),
                 logs.output.c_str());
    return 1;
  }
  std::printf(
      "restart, %2d nodes: a rank's failure to every rank running again %.0f ms; a node powered off to the other %d "
      "nodes' ranks running again %.0f ms (goal under 5 s); a fresh start %.0f ms\n",
      n, rank_ms, n - 1, (back - t0) / 1e6, fresh_ms);
  std::fflush(stdout);
  return 0;
}

int Launch(int n) {
  LocalCluster c(n, {.expected = n});
  if (!c.error().empty()) {
    std::fprintf(stderr, "jobs_bench: %s\n", c.error().c_str());
    return 1;
  }
  for (int i : Range(n)) c.Start(i, i == 0);
  if (!c.WaitPhase(Range(n), "ready", seconds(120))) {
    std::fprintf(stderr, "jobs_bench: %d nodes did not form:\n%s", n, c.Describe(Range(n)).c_str());
    return 1;
  }
  std::vector<double> agent_ms, local_ms;
  for (int round = 0; round < 5; ++round) {
    int count = 0;
    int64_t t0 = NowNs();
    auto r = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(round % n), "run", "--", "sh", "-c", kStamp}, seconds(60));
    const int64_t latest = LatestStamp(r.output, &count);
    if (r.exit_code != 0 || count != n) {
      std::fprintf(stderr, "jobs_bench: the job failed (exit %d, %d of %d ranks):\n%s", r.exit_code, count, n, r.output.c_str());
      return 1;
    }
    agent_ms.push_back((latest - t0) / 1e6);
    t0 = NowNs();
    auto local = RunCommand({"sh", "-c", kStamp}, seconds(10));
    local_ms.push_back((LatestStamp(local.output, &count) - t0) / 1e6);
  }
  const double a = Median(agent_ms), l = Median(local_ms);
  std::printf(
      "launch, %2d nodes: every rank running %.1f ms after agentctl run started; one local process %.1f ms "
      "(+%.1f ms, goal within 100 ms at 16 nodes)\n",
      n, a, l, a - l);
  std::fflush(stdout);
  return Restart(c, n, a);
}

int Output(long lines) {
  LocalCluster c(1, {.expected = 1});
  if (!c.error().empty()) return std::fprintf(stderr, "jobs_bench: %s\n", c.error().c_str()), 1;
  c.Start(0, true);
  if (!c.WaitPhase({0}, "ready", seconds(60))) return std::fprintf(stderr, "jobs_bench: the node did not form\n"), 1;
  const std::string n = std::to_string(lines);
  // Baseline: the same program into a pipe that discards.
  auto t0 = steady_clock::now();
  RunCommand({"sh", "-c", "seq 1 " + n + " | cat > /dev/null"}, seconds(120));
  const double pipe_s = duration<double>(steady_clock::now() - t0).count();
  auto d = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(0), "run", "--detach", "--", "seq", "1", n}, seconds(30));
  if (d.exit_code != 0) return std::fprintf(stderr, "jobs_bench: %s", d.output.c_str()), 1;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  // The job's own start and end times (the rank ends once its output is read, but for one pipe buffer).
  for (int i = 0; i < 1200; ++i) {
    auto j = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(0), "jobs", "--json"}, seconds(10));
    auto list = nlohmann::json::parse(j.output, nullptr, false);
    if (!list.is_discarded()) {
      for (const auto& job : list["jobs"]) {
        if (job["id"] == id && job["state"] == "succeeded") {
          const double agent_s = (job["ended_unix_ms"].get<int64_t>() - job["started_unix_ms"].get<int64_t>()) / 1e3;
          std::printf(
              "output: %.0f lines/s through the agent (%ld lines in %.2f s) against %.0f lines/s into a pipe to /dev/null "
              "(%.1fx slower)\n",
              lines / agent_s, lines, agent_s, lines / pipe_s, agent_s / pipe_s);
          return 0;
        }
      }
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  std::fprintf(stderr, "jobs_bench: the output job did not finish\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> sizes = {4, 16};
  long lines = 1'000'000;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--sizes") && i + 1 < argc) {
      sizes.clear();
      std::stringstream s(argv[++i]);
      for (std::string n; std::getline(s, n, ',');) sizes.push_back(std::stoi(n));
    } else if (!std::strcmp(argv[i], "--lines") && i + 1 < argc) {
      lines = std::stol(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: jobs_bench [--sizes 4,16] [--lines 1000000]\n");
      return 2;
    }
  }
  for (int n : sizes) {
    if (int rc = Launch(n)) return rc;
  }
  return Output(lines);
}
