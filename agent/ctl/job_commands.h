#pragma once
// agentctl's job commands: run, jobs, logs, kill (docs/jobs.md). Each returns the exit code and writes
// results to out, errors to err. run and logs -f poll the agent for new output every 200 ms. Text that a user
// chose (names, output lines, failures) is printed through ForTerminal, so that it cannot drive the terminal;
// --raw prints output lines as they are.

#include <atomic>
#include <ostream>
#include <string>
#include <vector>

#include "agent/ctl/commands.h"
#include "bootstrap/common/env.h"
#include "proto/jobs.pb.h"

namespace dlagent {

struct RunOptions {
  std::string name;
  std::string launcher = "plain";
  std::string per_node = "1";  // a number, or "gpus"
  std::vector<std::string> nodes;
  std::vector<std::string> env;
  std::string workdir;
  std::string grace = "10s";
  std::string timeout = "0s";  // 0: none
  std::string wait_ready;      // "": refuse unless READY
  std::string user;            // root only
  uint32_t restarts = 0;       // start every rank again after a failure, at most this many times
  uint32_t min_nodes = 0;      // the fewest nodes a restart may run on (0: as many as at first)
  bool detach = false;
  bool raw = false;  // the ranks' output as it is, control characters included
  std::vector<std::string> argv;
};

struct LogsOptions {
  std::string job;
  bool follow = false;
  int rank = -1;
  std::string node;
  uint32_t tail = 0;
  bool raw = false;  // as in RunOptions
};

// Foreground: the job's merged output, then its exit code (0 when every rank exited 0, else the first
// failure's), 130 after Ctrl-C (which stops the job everywhere), 1 when agentd cannot be reached, 2 for bad
// usage or a job that could not start. interrupted: set by the SIGINT / SIGTERM handler.
int RunRun(const CtlOptions& ctl, const RunOptions& o, const std::atomic<int>& interrupted, std::ostream& out, std::ostream& err);
int RunJobs(const CtlOptions& ctl, std::ostream& out, std::ostream& err);
int RunLogs(const CtlOptions& ctl, const LogsOptions& o, const std::atomic<int>& interrupted, std::ostream& out, std::ostream& err);
int RunKill(const CtlOptions& ctl, const std::string& job, const std::string& signal, std::ostream& out, std::ostream& err);

// Open MPI's remote launcher (plm_rsh_agent): `agentctl mpi-rsh HOST CMD...` under a job's mpirun starts CMD on
// HOST in the same job through the agents, then relays its output and exits with its status, as ssh would.
int RunMpiRsh(const CtlOptions& ctl, const std::vector<std::string>& args, const std::atomic<int>& interrupted, std::ostream& out, std::ostream& err);

// Every roster node's health, a line each with what fails named, then every running job whose ranks report
// steps (DLAGENT_METRICS_SOCKET) but have reported none for longer than stuck_after: a stuck trainer. Exit 0
// when every check passes, 3 when one fails (a stuck trainer too), 1 when agentd cannot be reached, 2 for a bad
// --stuck-after.
int RunHealth(const CtlOptions& ctl, const std::string& workdir, const std::string& stuck_after, std::ostream& out, std::ostream& err);

// The running jobs of `list` whose last reported step is older than `stuck_after` at now_unix_ms (jobs that
// never reported a step are not judged).
std::vector<jobs::v1::JobSummary> StuckJobs(const jobs::v1::JobList& list, int64_t now_unix_ms, Duration stuck_after);

// "TERM", "SIGTERM", "15" -> 15; InvalidArgument otherwise.
Result<int> ParseSignal(const std::string& s);

}  // namespace dlagent
