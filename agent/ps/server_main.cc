// dlps-server: one parameter-server shard as a process of its own (tests,
// benches, CPU-only server nodes). agentd serves the same shard in-process.
#include <signal.h>

#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "agent/ps/optimizer.h"
#include "agent/ps/server.h"

int main(int argc, char** argv) {
  CLI::App app{
      "dlps-server: serve one parameter-server shard (its workers' "
      "connections on one port) until SIGTERM or SIGINT.\n"
      "It trusts its network: it holds no cluster key, and anyone who reaches its port can join a job, take a "
      "worker's rank or fail every round by leaving. Serve it only where only the job's workers reach it "
      "(a private subnet, a security group, 127.0.0.1); an agent's shard (agentctl run --launcher dlps) "
      "serves only the jobs the agents started (docs/ps.md)."};
  dlagent::ps::ServerOptions o;
  std::string mode = "sync";
  app.add_option("--listen", o.listen, "host:port to serve on (port 0: any free port, printed)")->capture_default_str();
  app.add_option("--workers", o.shard.num_workers,
                 "Workers in the job (a sync round waits for all of them); 0: each job's size from its workers, one job after another")
      ->capture_default_str()
      ->check(CLI::Range(0u, dlagent::ps::kMaxJobWorkers));
  app.add_option("--mode", mode,
                 "sync (a round completes when every worker pushed) or async "
                 "(each push applied at once)")
      ->check(CLI::IsMember({"sync", "async"}))
      ->capture_default_str();
  app.add_option("--apply-threads", o.shard.apply_threads,
                 "Threads a round's update of a large slice (2 x 256 Ki floats or more) is spread over: more on a machine "
                 "that runs no workers")
      ->capture_default_str()
      ->check(CLI::Range(1u, dlagent::ps::kMaxApplyThreads));
  app.add_option("--checkpoint-dir", o.checkpoint_dir,
                 "Directory for checkpoints (shared storage: the same path on "
                 "every server's node)");
  CLI11_PARSE(app, argc, argv);
  o.shard.mode = mode == "sync" ? dlagent::ps::Mode::kSync : dlagent::ps::Mode::kAsync;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before the server starts its threads: they inherit the mask

  auto server = dlagent::ps::PsServer::Start(o);
  if (!server.ok()) {
    std::cerr << "dlps-server: " << server.status().ToString() << "\n";
    return 1;
  }
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  std::printf("listening on %s:%d (%s, %u workers)\n", host.c_str(), (*server)->port(), mode.c_str(), o.shard.num_workers);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  return 0;
}
