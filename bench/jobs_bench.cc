// Jobs on real agents (tests/support/local_cluster.h, a network namespace per node as root):
//   - launch: the time from starting `agentctl run` to every rank running, on 4 and 16 nodes, beside the time
//     to start one local process measured the same way in the same run (goal: within 100 ms of it at 16
//     nodes). Each rank, and the local process, prints the wall clock when it runs; the figure is the latest
//     of them minus the moment agentctl (or the local process) was started. Median of 5 runs.
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
  return 0;
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
