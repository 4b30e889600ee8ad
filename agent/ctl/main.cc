// agentctl: talks to the local agentd over its control socket.
#include <signal.h>

#include <atomic>
#include <iostream>

#include <CLI/CLI.hpp>

#include "agent/ctl/commands.h"
#include "agent/ctl/job_commands.h"
#include "build_info.h"

namespace {

std::atomic<int> interrupted{0};

void OnInterrupt(int) { interrupted.fetch_add(1); }

}  // namespace

int main(int argc, char** argv) {
  dlagent::CtlOptions opts;
  CLI::App app{"agentctl: query and control the dlagent agent (agentd) on this node."};
  app.set_version_flag("--client-version", std::string("agentctl ") + dlagent::kVersion);
  app.add_option("-s,--socket", opts.socket, "agentd's control socket")->envname("DLAGENT_SOCKET")->capture_default_str();
  app.add_option("--timeout", opts.timeout, "Deadline for each call to agentd, e.g. 5s, 500ms")->capture_default_str();
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 success, 1 agentd unreachable or failed, 2 bad usage or (members) no member matched;\n"
      "wait: 3 timed out, 4 the cluster failed to form (still failed at the timeout, or at once with --fail-fast),\n"
      "5 the agent forms no cluster;\n"
      "run: the job's exit code (the first failed rank's), 130 after Ctrl-C; health: 3 when a check fails.");

  auto* status = app.add_subcommand("status", "Show the agent's phase, identity, uptime, version and config");
  status->add_flag("--json", opts.json, "Print one JSON object instead of text");
  auto* page = app.add_subcommand(
      "page", "Print the status page's URL; as root, with the token that shows the jobs' output (see docs/operations.md for SSH and SSM tunnels)");
  auto* version = app.add_subcommand("version", "Show agentctl's and agentd's versions");
  version->add_flag("--json", opts.json, "Print one JSON object instead of text");

  auto* members = app.add_subcommand("members", "List the cluster's members as this agent sees them (exit 2: none match)");
  members->add_flag("--json", opts.json, "Print a JSON array instead of a table");
  members->add_option("--status", opts.status_filter, "Only members whose status matches this regular expression (alive, suspect, dead, left)");
  members->add_option("--role", opts.role_filter, "Only members with this role (master, worker, server)");

  auto* wait = app.add_subcommand("wait", "Block until the cluster is READY (roster sealed, every node prepared), showing progress");
  wait->add_option("--timeout", opts.wait_timeout, "Give up after this long (exit 3), e.g. 10m, 90s")->capture_default_str();
  wait->add_flag("-q,--quiet", opts.quiet, "No progress lines (a failed formation is still named)");
  wait->add_flag("--fail-fast", opts.fail_fast,
                 "Exit 4 at the first failed formation (below min_nodes) instead of waiting, until the timeout, for it to heal");
  wait->add_flag("--json", opts.json, "When ready, print the status as JSON");
  dlagent::RunOptions run_opts;
  auto* run = app.add_subcommand("run", "Run a command on every roster node (or --nodes), as you, with the environment of its framework");
  run->add_option("--name", run_opts.name, "A name for the job (default: the command's)");
  run->add_option("--launcher", run_opts.launcher,
                  "plain, dlps, torchrun, mpi, mxnet, tf, tf-ps or dask: the variables each rank gets (docs/jobs.md)")
      ->capture_default_str();
  run->add_option("--per-node", run_opts.per_node, "Worker processes a node: a number, or gpus for one per GPU")->capture_default_str();
  // Vector options take one value an occurrence: one that took all that follows would end at the "--" before
  // the command, and the command's own options would then be agentctl's.
  run->add_option("--nodes", run_opts.nodes, "Only these nodes: roster ranks (0,2-3), instance ids or addresses")->allow_extra_args(false);
  run->add_option("-e,--env", run_opts.env, "Add NAME=value to every rank's environment (repeatable; wins over the launcher's)")
      ->allow_extra_args(false);
  run->add_option("--workdir", run_opts.workdir, "Working directory of every rank (default: your home directory)");
  run->add_option("--grace", run_opts.grace, "Time between SIGTERM and SIGKILL when the job stops")->capture_default_str();
  run->add_option("--timeout", run_opts.timeout, "Stop the job (exit 124) after this long; 0: never")->capture_default_str();
  run->add_option("--restarts", run_opts.restarts,
                  "After a rank fails or a node is lost, stop every rank and start the job again, at most this many times")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1000u));
  run->add_option("--min-nodes", run_opts.min_nodes, "A restart may run on this few of the job's nodes (default: as many as it started on)")
      ->check(CLI::Range(1u, 100000u));
  run->add_option("--wait-ready", run_opts.wait_ready, "Wait up to this long for the cluster to be READY instead of refusing");
  run->add_option("--user", run_opts.user, "Run as this user (root only)");
  run->add_flag("-d,--detach", run_opts.detach, "Print the job id and return; follow it with agentctl logs -f");
  run->add_flag("--raw", run_opts.raw, "Print the ranks' output as it is (default: control characters shown as \\xHH)");
  run->add_option("command", run_opts.argv, "The command and its arguments, after --")->required();
  run->footer("Example: agentctl run --launcher torchrun --per-node gpus -- python3 train.py --epochs 3");

  auto* jobs = app.add_subcommand("jobs", "List the cluster's jobs: id, name, state, ranks running and exited, user, start, duration, exit");
  jobs->add_flag("--json", opts.json, "Print JSON instead of a table");

  dlagent::LogsOptions logs_opts;
  auto* logs = app.add_subcommand("logs", "Print a job's output, merged from every node and prefixed with rank and node");
  logs->add_option("job", logs_opts.job, "The job id (agentctl jobs lists them)")->required();
  logs->add_flag("-f,--follow", logs_opts.follow, "Keep printing until the job ends");
  logs->add_option("--rank", logs_opts.rank, "Only this rank");
  logs->add_option("--node", logs_opts.node, "Only this node (instance id)");
  logs->add_option("--tail", logs_opts.tail, "Only the last N lines held");
  logs->add_flag("--raw", logs_opts.raw, "Print the ranks' output as it is (default: control characters shown as \\xHH)");

  std::string kill_job, kill_signal = "TERM";
  auto* kill = app.add_subcommand("kill", "Stop a job on every node: the signal, then SIGKILL after its grace period");
  kill->add_option("job", kill_job, "The job id")->required();
  kill->add_option("--signal", kill_signal, "TERM, INT, KILL, USR1... or a number")->capture_default_str();
  std::string health_workdir;
  auto* health = app.add_subcommand("health", "Check every roster node at once: agent, gossip view, shared storage, GPUs, clock, dlps, free space");
  health->add_flag("--json", opts.json, "Print JSON instead of a table");
  health->add_option("--workdir", health_workdir, "Whose free space to check (default: your home directory)");
  std::string stuck_after = "10m";
  health->add_option("--stuck-after", stuck_after, "A running job whose ranks reported no step for this long is stuck (a failed check)")
      ->capture_default_str();
  auto* rsh = app.add_subcommand("mpi-rsh", "Open MPI's remote launcher under agentctl run --launcher mpi: HOST COMMAND... (no ssh)");
  rsh->prefix_command();  // the daemon's command line is passed through, options and all
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (*status) return dlagent::RunStatus(opts, std::cout, std::cerr);
  if (*version) return dlagent::RunVersion(opts, std::cout, std::cerr);
  if (*page) return dlagent::RunPage(opts, std::cout, std::cerr);
  if (*members) return dlagent::RunMembers(opts, std::cout, std::cerr);
  if (*wait) return dlagent::RunWait(opts, std::cout, std::cerr);
  if (*run || *logs || *rsh) {
    struct sigaction sa {};
    sa.sa_handler = OnInterrupt;  // no SA_RESTART: the poll loop sees it within one round
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
  }
  if (*run) return dlagent::RunRun(opts, run_opts, interrupted, std::cout, std::cerr);
  if (*jobs) return dlagent::RunJobs(opts, std::cout, std::cerr);
  if (*logs) return dlagent::RunLogs(opts, logs_opts, interrupted, std::cout, std::cerr);
  if (*health) return dlagent::RunHealth(opts, health_workdir, stuck_after, std::cout, std::cerr);
  if (*rsh) return dlagent::RunMpiRsh(opts, rsh->remaining(), interrupted, std::cout, std::cerr);
  if (*kill) return dlagent::RunKill(opts, kill_job, kill_signal, std::cout, std::cerr);
  return 2;
}
