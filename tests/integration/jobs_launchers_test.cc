// Jobs on a local cluster of 4 real agents (network namespaces as root), by launcher and the health check
// (jobs_process_test.cc has the rest):
//   - dlps: 4 nodes x 2 workers of dlps-train --verify, difference 0; a worker without the job's token is refused;
//   - agentctl health: every node ok (exit 0); a node whose agent is killed is named unreachable (exit 3);
//   - mpi: real Open MPI (mpirun, mpi4py) runs an allreduce over 4 nodes with its daemons started through the
//     agents, and an ssh and an rsh first on PATH that record their calls are never called;
//   - torchrun: real PyTorch (Debian's python3-torch, gloo) trains DistributedDataParallel on 4 nodes and every
//     rank ends with the same weights;
//   - server nodes: with node 3 a server (cluster.role = "server"), dlps-train's 3 x 2 workers use its shard only
//     (--verify difference 0), DDP through dlps.ddp ends where gloo does, and other jobs run on nodes 0-2 only;
//   - dlps.ddp: 4 nodes x 2 ranks train DDP with its gradients averaged by the agents' shards (and then with SGD
//     on the shards) and end with the weights DDP's own gloo all-reduce gives from the same seed.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "jobs_process.h"
#include "tests/support/local_cluster.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using namespace jobs_process;
using testing::LocalCluster;
using testing::Range;
using testing::RunResult;

// dlps-train --verify through the dlps launcher from node 0, 2 workers a worker node.
RunResult TrainExactly(LocalCluster& c, const std::string& samples, const std::string& epochs) {
  return Ctl(c, 0,
             {"run", "--launcher", "dlps", "--per-node", "2",    "--",       DLAGENT_DLPS_TRAIN, "--model", "mlp", "--samples", samples, "--features",
              "16",  "--hidden",   "32",   "--epochs",   epochs, "--verify", "--progress",       "never"},
             seconds(120));
}

// A sample's value in /metrics text; 0 when it is not there.
uint64_t MetricValue(const std::string& text, const std::string& sample) {
  const size_t at = text.find("\n" + sample + " ");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + sample.size() + 2));
}

// Node i's /metrics.
std::string Metrics(LocalCluster& c, int i) { return RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", c.MetricsUrl(i)}, seconds(10)).output; }

TEST_F(JobsProcessTest, DlpsLauncherTrainsFourNodesTimesTwoWorkersExactly) {
  if (!LocalCluster::root()) GTEST_SKIP() << "the agents serve dlps shards in network namespaces only (as root)";
  Form();
  const std::string train = DLAGENT_DLPS_TRAIN;
  RunResult r = TrainExactly(c(), "4000", "2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("8 workers"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("summed in rank order, as the servers sum them) is 0 "), std::string::npos) << r.output;
  // Rank 0 reported its steps (at most 10 a second, and each epoch's last): the last is epoch 2's end.
  RunResult list = Ctl(c(), 1, {"jobs", "--json"});
  const auto jobs = nlohmann::json::parse(list.output.substr(list.output.find('{')), nullptr, false);
  ASSERT_FALSE(jobs.is_discarded()) << list.output;
  ASSERT_EQ(jobs["jobs"].size(), 1u) << list.output;
  EXPECT_EQ(jobs["jobs"][0]["training"]["values"]["epoch"], 2.0) << list.output;
  EXPECT_GT(jobs["jobs"][0]["training"]["step"].get<int>(), 0) << list.output;
  // A worker started by hand, without the job's token, is refused by the agents' shards and told what to do.
  RunResult stranger = RunCommand(
      {"/usr/bin/env", "DLPS_SERVERS=" + c().Ip(0) + ":7070", "DLPS_NUM_WORKERS=1", "DLPS_RANK=0", train, "--epochs", "1", "--progress", "never"},
      seconds(60));
  EXPECT_NE(stranger.exit_code, 0) << stranger.output;
  EXPECT_NE(stranger.output.find("agentctl run --launcher dlps"), std::string::npos) << stranger.output;
  // Each worker connected to every node's shard (a retried connect counts again); the shards that hold slices
  // served rounds (the model is small: not every shard holds one); node 0's counted the stranger, refused at its
  // hello (/metrics).
  uint64_t rounds = 0, bytes_in = 0;
  const auto value = MetricValue;
  for (int i : Range(kNodes)) {
    const RunResult m = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", c().MetricsUrl(i)}, seconds(10));
    ASSERT_EQ(m.exit_code, 0) << m.output;
    EXPECT_GE(value(m.output, "dlagent_dlps_connections_total"), 8u) << "node " << i << "\n" << m.output;
    rounds += value(m.output, "dlagent_dlps_rounds_total");
    bytes_in += value(m.output, "dlagent_dlps_bytes_total{direction=\"in\"}");
    if (value(m.output, "dlagent_dlps_rounds_total") > 0) {
      EXPECT_EQ(value(m.output, "dlagent_dlps_round_duration_seconds_count"), value(m.output, "dlagent_dlps_rounds_total")) << m.output;
      EXPECT_GT(value(m.output, "dlagent_dlps_bytes_total{direction=\"out\"}"), 0u) << m.output;
    }
    if (i == 0) {
      EXPECT_GE(value(m.output, "dlagent_dlps_refused_total{reason=\"hello\"}"), 1u) << m.output;
    }
  }
  EXPECT_GT(rounds, 0u);
  EXPECT_GT(bytes_in, 0u);
}

TEST_F(JobsProcessTest, TorchrunTrainsDistributedDataParallelWithGlooOnFourNodes) {
  if (RunCommand({"/usr/bin/python3", "-c", "import torch.distributed"}, seconds(60)).exit_code != 0) {
    GTEST_SKIP() << "needs Debian's python3-torch (scripts/deps.sh installs it)";
  }
  if (!LocalCluster::root()) GTEST_SKIP() << "needs a network namespace per node (root)";
  Form();
  RunResult r = Ctl(c(), 0, {"run", "--launcher", "torchrun", "--", "/usr/bin/python3", std::string(DLAGENT_SOURCE_DIR) + "/examples/torch_ddp.py"},
                    seconds(180));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::set<std::string> weights;
  int ranks = 0;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);) {
    const size_t p = line.find("] world 4 weights ");
    if (p == std::string::npos) continue;
    ++ranks;
    weights.insert(line.substr(p + 18));
  }
  EXPECT_EQ(ranks, kNodes) << r.output;
  EXPECT_EQ(weights.size(), 1u) << r.output;  // every rank holds the same weights
  // Rank 0 reported each of its 5 steps and the loss to its agent (DLAGENT_METRICS_SOCKET).
  RunResult list = Ctl(c(), 2, {"jobs", "--json"});
  const auto jobs = nlohmann::json::parse(list.output.substr(list.output.find('{')), nullptr, false);
  ASSERT_FALSE(jobs.is_discarded()) << list.output;
  ASSERT_EQ(jobs["jobs"].size(), 1u) << list.output;
  EXPECT_EQ(jobs["jobs"][0]["training"]["step"], 5) << list.output;
  EXPECT_GT(jobs["jobs"][0]["training"]["values"]["samples_per_second"].get<double>(), 0) << list.output;
}

// agentctl run's --env for a Python rank that loads libdlps from the build tree. A sanitized build's library needs
// the sanitizer runtimes loaded first (Debian's python3 is not built with them), as dlps_clients_test.sh does.
std::vector<std::string> PythonWithLibdlps() {
  std::vector<std::string> args = {"--env", std::string("PYTHONPATH=") + DLAGENT_PYTHON_DIR};
#if defined(__SANITIZE_ADDRESS__)
  const RunResult ldd = RunCommand({"/usr/bin/ldd", std::string(DLAGENT_PYTHON_DIR) + "/dlps/libdlps.so.0"}, seconds(30));
  std::string preload;
  std::istringstream lines(ldd.output);
  for (std::string line; std::getline(lines, line);) {
    const size_t arrow = line.find("=> ");
    if (arrow == std::string::npos || (line.find("libasan") == std::string::npos && line.find("libubsan") == std::string::npos)) continue;
    const std::string path = line.substr(arrow + 3, line.find(' ', arrow + 3) - arrow - 3);
    preload += (preload.empty() ? "" : " ") + path;
  }
  args.insert(args.end(), {"--env", "LD_PRELOAD=" + preload, "--env", "ASAN_OPTIONS=detect_leaks=0"});
#endif
  return args;
}

TEST_F(JobsProcessTest, DlpsDdpHookTrainsPyTorchOnFourNodesAsGlooAllReduceDoes) {
  if (RunCommand({"/usr/bin/python3", "-c", "import torch.distributed"}, seconds(60)).exit_code != 0) {
    GTEST_SKIP() << "needs Debian's python3-torch (scripts/deps.sh installs it)";
  }
  if (!LocalCluster::root()) GTEST_SKIP() << "the agents serve dlps shards in network namespaces only (as root)";
  Form();
  uint64_t rounds_before = 0;
  for (const std::string optimizer : {"sum", "sgd"}) {
    SCOPED_TRACE(optimizer);
    std::vector<std::string> args = {"run", "--launcher", "dlps", "--per-node", "2"};
    for (std::string& a : PythonWithLibdlps()) args.push_back(std::move(a));
    args.insert(args.end(), {"--", "/usr/bin/python3", std::string(DLAGENT_SOURCE_DIR) + "/examples/dlps_ddp.py", "--optimizer", optimizer, "--steps",
                             "8", "--compare"});
    RunResult r = Ctl(c(), 0, args, seconds(240));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    // Every rank exchanged several buckets a step through dlps (3 once DDP rebuilt them) and ended where gloo did.
    int same = 0, trained = 0;
    std::istringstream lines(r.output);
    const std::string steps = " of 8: 8 steps through dlps (" + optimizer + "), ";
    for (std::string line; std::getline(lines, line);) {
      if (line.find("] rank 0") != std::string::npos) std::cout << line << "\n";  // its step times, dlps's and gloo's
      if (const size_t p = line.find(steps); p != std::string::npos && std::stoi(line.substr(p + steps.size())) > 8) ++trained;
      const size_t p = line.find("max |dlps - gloo| = ");
      if (p == std::string::npos) continue;
      EXPECT_LE(std::stod(line.substr(p + 20)), 1e-6) << line;
      if (line.find("): same") != std::string::npos) ++same;
    }
    EXPECT_EQ(trained, 8) << r.output;
    EXPECT_EQ(same, 8) << r.output;
    // The shards served the rounds: the hook did not fall back to all-reduce.
    uint64_t rounds = 0;
    for (int i : Range(kNodes)) rounds += MetricValue(Metrics(c(), i), "dlagent_dlps_rounds_total");
    EXPECT_GE(rounds - rounds_before, 8u * 6) << "8 steps of 6 parameters";
    rounds_before = rounds;
  }
}

TEST_F(JobsProcessTest, ServerNodesServeTheDlpsShardsAndRunNoRanks) {
  if (RunCommand({"/usr/bin/python3", "-c", "import torch.distributed"}, seconds(60)).exit_code != 0) {
    GTEST_SKIP() << "needs Debian's python3-torch (scripts/deps.sh installs it)";
  }
  if (!LocalCluster::root()) GTEST_SKIP() << "the agents serve dlps shards in network namespaces only (as root)";
  Form({.servers = {3}});
  const std::string shard = c().Ip(3) + ":7070";
  // The roster and the node files know the role: node 3 is no worker, its shard is the only one.
  const RunResult status = Ctl(c(), 1, {"status"});
  EXPECT_TRUE(HasLine(status.output, c().Id(3), " server ")) << status.output;
  EXPECT_TRUE(HasLine(Ctl(c(), 1, {"members"}).output, c().Id(3), "server"));
  const std::string env = c().ReadFile(1, "/etc/dlagent/cluster.env");
  EXPECT_NE(env.find("DLPS_SERVERS=\"" + shard + "\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DLPS_NUM_WORKERS=\"3\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DEEPLEARNING_WORKERS_COUNT=\"3\"\n"), std::string::npos) << env;
  EXPECT_EQ(c().ReadFile(3, "/etc/dlagent/cluster.env").find("DLPS_RANK="), std::string::npos);
  EXPECT_EQ(c().ReadFile(0, "/opt/deeplearning/workers").find("deeplearning-worker4"), std::string::npos);

  // A plain job runs on the 3 worker nodes; naming the server node is refused with the reason.
  RunResult plain = Ctl(c(), 0, {"run", "--", "/bin/sh", "-c", "echo on $DLAGENT_NODE_RANK of $DLAGENT_NUM_NODES"}, seconds(60));
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_NE(plain.output.find("on 2 of 3"), std::string::npos) << plain.output;
  EXPECT_EQ(plain.output.find("on 3 of"), std::string::npos) << plain.output;
  RunResult named = Ctl(c(), 0, {"run", "--nodes", "3", "--", "/bin/true"}, seconds(30));
  EXPECT_NE(named.exit_code, 0);
  EXPECT_NE(named.output.find(c().Id(3) + " is a server node (cluster.role = \"server\"): it runs no ranks"), std::string::npos) << named.output;

  // dlps-train: 6 workers on nodes 0-2, every round on node 3's shard, the result exact.
  RunResult r = TrainExactly(c(), "2000", "1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("6 workers"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("summed in rank order, as the servers sum them) is 0 "), std::string::npos) << r.output;
  const auto rounds = [&](int i) { return MetricValue(Metrics(c(), i), "dlagent_dlps_rounds_total"); };
  EXPECT_GT(rounds(3), 0u);
  for (int i : {0, 1, 2}) EXPECT_EQ(rounds(i), 0u) << "node " << i << "'s shard is not in DLPS_SERVERS";
  // The job's ranks ran on the worker nodes; node 3 held it only while it ran (its helper, stopped at the end).
  RunResult list = Ctl(c(), 1, {"jobs", "--json"});
  const auto jobs = nlohmann::json::parse(list.output.substr(list.output.find('{')), nullptr, false);
  ASSERT_FALSE(jobs.is_discarded()) << list.output;
  bool found = false;
  for (const auto& j : jobs["jobs"]) {
    if (j["launcher"] != "dlps") continue;
    found = true;
    EXPECT_EQ(j["state"], "succeeded") << j.dump();
    EXPECT_EQ(j["ranks"], 6) << j.dump();
  }
  EXPECT_TRUE(found) << list.output;

  // DDP through dlps.ddp with the shard on the server node ends where gloo all-reduce does.
  std::vector<std::string> args = {"run", "--launcher", "dlps", "--per-node", "2"};
  for (std::string& a : PythonWithLibdlps()) args.push_back(std::move(a));
  args.insert(args.end(), {"--", "/usr/bin/python3", std::string(DLAGENT_SOURCE_DIR) + "/examples/dlps_ddp.py", "--steps", "5", "--compare"});
  RunResult ddp = Ctl(c(), 0, args, seconds(240));
  ASSERT_EQ(ddp.exit_code, 0) << ddp.output;
  int same = 0;
  std::istringstream lines(ddp.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("] rank 0") != std::string::npos) std::cout << line << "\n";
    same += line.find("): same") != std::string::npos;
  }
  EXPECT_EQ(same, 6) << ddp.output;
}

TEST_F(JobsProcessTest, DaskRunsTheClientsTasksOnEveryNodesWorkersAndStopsThemWithIt) {
  if (RunCommand({"/usr/bin/python3", "-c", "import distributed"}, seconds(60)).exit_code != 0) {
    GTEST_SKIP() << "needs Debian's python3-distributed (scripts/deps.sh installs it)";
  }
  Form();
  RunResult r = Ctl(c(), 1,
                    {"run", "--launcher", "dask", "--per-node", "2", "--grace", "2s", "--", "/usr/bin/python3",
                     std::string(DLAGENT_SOURCE_DIR) + "/examples/dask_cluster.py"},
                    seconds(180));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("8 workers on 4 nodes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tasks ran on nodes 0 1 2 3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("sum of squares 140"), std::string::npos) << r.output;  // 0^2 + ... + 7^2
  const std::string id = JobId(r.output);
  nlohmann::json job = Job(c(), 1, id);
  EXPECT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["ranks"], 1) << "the job is its command";
  EXPECT_EQ(job["running"], 0) << job.dump();
  // The scheduler and the 4 workers were stopped with it, everywhere.
  int stopped = 0;
  for (const auto& e : job["rank_exits"]) stopped += e["rank"] > 0 && !e["running"].get<bool>() && e["stopped"].get<bool>();
  EXPECT_EQ(stopped, 5) << job.dump();
}

TEST_F(JobsProcessTest, HealthChecksEveryNodeAndNamesTheOneThatFails) {
  Form();
  RunResult ok = Ctl(c(), 1, {"health", "--json"});
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  auto report = nlohmann::json::parse(ok.output, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << ok.output;
  ASSERT_EQ(report["nodes"].size(), static_cast<size_t>(kNodes));
  for (int i : Range(kNodes)) {
    const auto& n = report["nodes"][i];
    EXPECT_EQ(n["node"], c().Id(i));
    EXPECT_TRUE(n["ok"].get<bool>()) << n.dump();
    EXPECT_EQ(n["gpus"], c().gpus(i));
    EXPECT_EQ(n["alive"], kNodes);
    EXPECT_LT(std::abs(n["clock_offset_ms"].get<int64_t>()), 1000);
    if (LocalCluster::root()) {
      EXPECT_TRUE(n["storage_mounted"].get<bool>()) << n.dump();
      EXPECT_TRUE(n["dlps_serving"].get<bool>()) << n.dump();
    }
  }
  c().Kill(2, SIGKILL);
  RunResult bad = Ctl(c(), 1, {"health"});
  EXPECT_EQ(bad.exit_code, 3) << bad.output;
  std::istringstream lines(bad.output);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("RANK", 0) == 0) continue;
    ++rows;
    if (line.find(c().Id(2)) != std::string::npos) {
      EXPECT_NE(line.find("agent unreachable"), std::string::npos) << line;
    } else if (line.find("gossip view differs") == std::string::npos) {
      EXPECT_NE(line.find(" ok"), std::string::npos) << line;
    }
  }
  EXPECT_EQ(rows, kNodes) << bad.output;
}

TEST_F(JobsProcessTest, MpiLauncherRunsAnAllreduceOnFourNodesWithoutSsh) {
  if (RunCommand({"/usr/bin/python3", "-c", "import mpi4py.MPI"}, seconds(60)).exit_code != 0 || ::access("/usr/bin/mpirun", X_OK) != 0) {
    GTEST_SKIP() << "needs Debian's openmpi-bin and python3-mpi4py (scripts/deps.sh installs them)";
  }
  if (!LocalCluster::root()) GTEST_SKIP() << "needs a network namespace per node (root)";
  Form();
  testing::TempDir dir;
  ::chmod(dir.Join("").c_str(), 0755);
  // An ssh and an rsh that record their call and fail, first on the ranks' PATH.
  for (const char* name : {"ssh", "rsh"}) {
    std::ofstream(dir.Join(name)) << "#!/bin/sh\necho \"$0 $*\" >> " << dir.Join("called") << "\nexit 1\n";
    ::chmod(dir.Join(name).c_str(), 0755);
  }
  // The nodes share this machine's host name, so Open MPI would take them for one host and use shared memory
  // between namespaces: TCP only, as between real hosts.
  RunResult r = Ctl(c(), 1,
                    {"run", "--launcher", "mpi", "--env", "PATH=" + dir.Join("") + ":/usr/bin:/bin", "--env", "OMPI_MCA_btl=tcp,self", "--",
                     "/usr/bin/python3", std::string(DLAGENT_SOURCE_DIR) + "/examples/mpi_allreduce.py"},
                    seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < kNodes; ++rank) {
    EXPECT_NE(r.output.find("rank " + std::to_string(rank) + " of 4 on"), std::string::npos) << r.output;
  }
  int ranks = 0;  // mpirun's own warnings (a setpgid race in its rsh launcher) may come too
  for (size_t p = r.output.find("<stdout>:rank "); p != std::string::npos; p = r.output.find("<stdout>:rank ", p + 1)) ++ranks;
  EXPECT_EQ(ranks, kNodes) << r.output;
  EXPECT_NE(r.output.find("allreduce 6"), std::string::npos) << r.output;
  EXPECT_FALSE(std::ifstream(dir.Join("called")).good()) << "ssh or rsh was run";
  // mpirun's daemons ran on the other three nodes, in the job, through their agents.
  for (int i = 1; i < kNodes; ++i) {
    EXPECT_NE(c().Log(i).find("started 1 rank on this node"), std::string::npos) << c().Log(i);
  }
}

}  // namespace
}  // namespace dlagent
