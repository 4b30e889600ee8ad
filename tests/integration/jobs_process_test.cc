// Jobs on a local cluster of 4 real agents (network namespaces as root), run the way a user runs them:
// agentctl run / jobs / logs / kill against the agents' control sockets.
//   - a plain job on every node: merged output prefixed with rank and node, listed from another node,
//     logs filtered by rank and tail, each line in the node's log with the job's fields; logs -f follows a
//     running job to its end;
//   - a run before READY is refused in one line, and --wait-ready waits for it;
//   - a rank that exits 3 fails the job with 3 naming rank and node; a rank ignoring SIGTERM is killed after
//     the grace period; every rank's end is kept;
//   - --per-node gpus, stdin from /dev/null, two jobs at once, --timeout (exit 124);
//   - agentctl kill from a node that did not start the job; Ctrl-C on a foreground run;
//   - a node SIGKILLed mid-job fails the job naming the node; when the coordinator's agent stops, the other
//     nodes stop their ranks; an agent stopping says so (status) while its own ranks take their grace;
//   - a non-root caller's ranks run as that user, and --user is root's only;
//   - a job call sealed with another key, or replayed, is refused and counted;
//   - dlps: 4 nodes x 2 workers of dlps-train --verify, difference 0; a worker without the job's token is refused;
//   - agentctl health: every node ok (exit 0); a node whose agent is killed is named unreachable (exit 3);
//   - mpi: real Open MPI (mpirun, mpi4py) runs an allreduce over 4 nodes with its daemons started through the
//     agents, and an ssh and an rsh first on PATH that record their calls are never called;
//   - torchrun: real PyTorch (Debian's python3-torch, gloo) trains DistributedDataParallel on 4 nodes and every
//     rank ends with the same weights.
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "agent/rpc/cluster_service.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/membership/packet_crypto.h"
#include "proto/jobs.pb.h"
#include "tests/support/local_cluster.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using testing::LocalCluster;
using testing::Range;
using testing::RunCommand;
using testing::RunResult;

constexpr int kNodes = 4;

RunResult Ctl(LocalCluster& c, int node, std::vector<std::string> args, seconds timeout = seconds(60)) {
  args.insert(args.begin(), {DLAGENT_AGENTCTL, "-s", c.Sock(node)});
  return RunCommand(args, timeout);
}

std::string JobId(const std::string& output) {
  std::smatch m;
  return std::regex_search(output, m, std::regex("job (j-[0-9a-f]{12})")) ? m[1].str() : "";
}

// The job as `agentctl jobs --json` on `node` shows it.
nlohmann::json Job(LocalCluster& c, int node, const std::string& id) {
  RunResult r = Ctl(c, node, {"jobs", "--json"});
  if (r.exit_code != 0) return {};
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')), nullptr, false);
  if (j.is_discarded()) return {};
  for (const auto& job : j["jobs"]) {
    if (job["id"] == id) return job;
  }
  return {};
}

// Waits until the job's state is one of `states`; the job then (or as last seen).
nlohmann::json WaitState(LocalCluster& c, int node, const std::string& id, const std::set<std::string>& states, seconds limit = seconds(30)) {
  const auto until = steady_clock::now() + limit;
  nlohmann::json j;
  while (steady_clock::now() < until) {
    j = Job(c, node, id);
    if (!j.is_null() && states.count(j["state"].get<std::string>())) return j;
    std::this_thread::sleep_for(milliseconds(200));
  }
  return j;
}

// Whether one line of text holds both a and, after it, b.
bool HasLine(const std::string& text, const std::string& a, const std::string& b) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t p = line.find(a);
    if (p != std::string::npos && line.find(b, p + a.size()) != std::string::npos) return true;
  }
  return false;
}

class JobsProcessTest : public ::testing::Test {
 protected:
  void Form(testing::LocalClusterOptions o = {}) {
    o.expected = kNodes;
    cluster_ = std::make_unique<LocalCluster>(kNodes, o);
    ASSERT_EQ(cluster_->error(), "");
    for (int i : Range(kNodes)) cluster_->Start(i, i == 0);
    ASSERT_TRUE(cluster_->WaitPhase(Range(kNodes), "ready", seconds(60))) << cluster_->Describe(Range(kNodes));
  }
  LocalCluster& c() { return *cluster_; }
  std::unique_ptr<LocalCluster> cluster_;
};

TEST_F(JobsProcessTest, APlainJobRunsOnEveryNodeWithMergedOutputAndIsListedAndLogged) {
  Form();
  RunResult r = Ctl(c(), 0,
                    {"run", "--per-node", "2", "--name", "hello", "--", "sh", "-c",
                     "echo rank $DLAGENT_RANK of $DLAGENT_NUM_RANKS node $DLAGENT_NODE_RANK; echo to-stderr >&2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 2 * kNodes; ++rank) {
    const std::string line =
        "[" + std::to_string(rank) + " " + c().Id(rank / 2) + "] rank " + std::to_string(rank) + " of 8 node " + std::to_string(rank / 2);
    EXPECT_NE(r.output.find(line), std::string::npos) << line << "\n" << r.output;
  }
  const std::string id = JobId(r.output);
  ASSERT_FALSE(id.empty()) << r.output;
  // Listed from another node, with its ranks, state and exit.
  nlohmann::json job = Job(c(), 2, id);
  ASSERT_FALSE(job.is_null());
  EXPECT_EQ(job["name"], "hello");
  EXPECT_EQ(job["state"], "succeeded");
  EXPECT_EQ(job["ranks"], 8);
  EXPECT_EQ(job["exited"], 8);
  EXPECT_EQ(job["exit_code"], 0);
  // Logs from a third node: one rank, then the last lines.
  RunResult logs = Ctl(c(), 3, {"logs", id, "--rank", "5"});
  ASSERT_EQ(logs.exit_code, 0) << logs.output;
  EXPECT_NE(logs.output.find("[5 " + c().Id(2) + "] rank 5 of 8"), std::string::npos) << logs.output;
  EXPECT_NE(logs.output.find("[5 " + c().Id(2) + "] to-stderr"), std::string::npos) << logs.output;
  EXPECT_EQ(logs.output.find("[4 "), std::string::npos) << logs.output;
  // Each line reached its node's log with the job's fields (DLAGENT_JOB, DLAGENT_RANK, DLAGENT_STREAM in the journal).
  const std::string log2 = c().Log(2);
  EXPECT_TRUE(HasLine(log2, "rank 5: rank 5 of 8 node 2 ", " job=" + id + " rank=5 stream=stdout")) << log2;
  EXPECT_TRUE(HasLine(log2, "rank 5: to-stderr ", " job=" + id + " rank=5 stream=stderr")) << log2;
  RunResult tail = Ctl(c(), 1, {"logs", id, "--tail", "3"});
  EXPECT_EQ(std::count(tail.output.begin(), tail.output.end(), '\n'), 3) << tail.output;
  EXPECT_EQ(Ctl(c(), 1, {"logs", "j-000000000000"}).exit_code, 1);
}

TEST_F(JobsProcessTest, LogsFollowARunningJobOfFourNodesToItsEnd) {
  Form();
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--", "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  const auto start = steady_clock::now();
  RunResult f = Ctl(c(), 3, {"logs", "-f", id});
  EXPECT_EQ(f.exit_code, 0) << f.output;
  EXPECT_GT(steady_clock::now() - start, milliseconds(800));  // it waited for the job
  for (int i : Range(kNodes)) {
    for (int line = 1; line <= 5; ++line) {
      EXPECT_NE(f.output.find("[" + std::to_string(i) + " " + c().Id(i) + "] line " + std::to_string(line)), std::string::npos) << f.output;
    }
  }
  EXPECT_EQ(std::count(f.output.begin(), f.output.end(), '\n'), 5 * kNodes) << f.output;  // each line once
  EXPECT_EQ(Job(c(), 3, id)["state"], "succeeded");
}

TEST_F(JobsProcessTest, ARunBeforeReadyIsRefusedInOneLineOrWaitsWithWaitReady) {
  testing::LocalClusterOptions o;
  o.expected = kNodes;
  cluster_ = std::make_unique<LocalCluster>(kNodes, o);
  ASSERT_EQ(c().error(), "");
  for (int i = 0; i < kNodes - 1; ++i) c().Start(i, i == 0);
  ASSERT_TRUE(c().WaitPhase({0}, "discover", seconds(30)) || c().WaitPhase({0}, "roster", seconds(1))) << c().Describe({0});
  RunResult refused = Ctl(c(), 0, {"run", "--", "true"});
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("the cluster is not ready ("), std::string::npos) << refused.output;
  EXPECT_EQ(std::count(refused.output.begin(), refused.output.end(), '\n'), 1) << refused.output;
  testing::TempDir dir;
  testing::Subprocess waiting({DLAGENT_AGENTCTL, "-s", c().Sock(1), "run", "--wait-ready", "60s", "--", "sh", "-c", "echo ran $DLAGENT_RANK"}, {},
                              dir.Join("out"));
  std::this_thread::sleep_for(milliseconds(500));
  c().Start(kNodes - 1);
  std::optional<int> status = waiting.Wait(milliseconds(60000));
  ASSERT_TRUE(status.has_value()) << waiting.Output();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << waiting.Output();
  EXPECT_NE(waiting.Output().find("ran 3"), std::string::npos) << waiting.Output();
}

TEST_F(JobsProcessTest, ARankExitingThreeFailsTheJobAndTheOthersAreGoneWithinTheGrace) {
  Form();
  const auto start = steady_clock::now();
  RunResult r =
      Ctl(c(), 1,
          {"run", "--grace", "1s", "--", "sh", "-c", "case $DLAGENT_RANK in 2) sleep 0.5; exit 3;; 1) trap '' TERM; sleep 60;; *) sleep 60;; esac"});
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_LT(steady_clock::now() - start, seconds(8));
  EXPECT_NE(r.output.find("failed: rank 2 on " + c().Id(2) + " exited with 3"), std::string::npos) << r.output;
  nlohmann::json job = Job(c(), 0, JobId(r.output));
  ASSERT_FALSE(job.is_null());
  EXPECT_EQ(job["state"], "failed");
  EXPECT_EQ(job["running"], 0);
  EXPECT_EQ(job["exit_code"], 3);
  // Every rank's end is kept: rank 2's exit, rank 1 killed after ignoring SIGTERM, the others stopped.
  ASSERT_EQ(job["rank_exits"].size(), static_cast<size_t>(kNodes)) << job.dump();
  EXPECT_EQ(job["rank_exits"][2]["exit_code"], 3);
  EXPECT_FALSE(job["rank_exits"][2]["stopped"].get<bool>());
  EXPECT_EQ(job["rank_exits"][1]["signal"], SIGKILL);
  EXPECT_EQ(job["rank_exits"][0]["signal"], SIGTERM);
  EXPECT_TRUE(job["rank_exits"][0]["stopped"].get<bool>());
  EXPECT_EQ(job["rank_exits"][3]["node"], c().Id(3));
}

TEST_F(JobsProcessTest, TimeoutPerNodeGpusAndTwoJobsAtOnce) {
  Form();
  // --per-node gpus: the nodes have 1, 2, 3 and 4 GPUs; every rank's stdin is /dev/null.
  RunResult gpus = Ctl(c(), 0, {"run", "--per-node", "gpus", "--", "sh", "-c", "echo local $DLAGENT_LOCAL_RANK stdin $(readlink /proc/self/fd/0)"});
  ASSERT_EQ(gpus.exit_code, 0) << gpus.output;
  EXPECT_NE(gpus.output.find("10 ranks on 4 nodes"), std::string::npos) << gpus.output;
  EXPECT_NE(gpus.output.find("[9 " + c().Id(3) + "] local 3 stdin /dev/null"), std::string::npos) << gpus.output;
  // Two jobs at once, both listed as running.
  RunResult a = Ctl(c(), 0, {"run", "--detach", "--name", "first", "--", "sleep", "30"});
  RunResult b = Ctl(c(), 1, {"run", "--detach", "--name", "second", "--", "sleep", "30"});
  ASSERT_EQ(a.exit_code, 0) << a.output;
  ASSERT_EQ(b.exit_code, 0) << b.output;
  RunResult list = Ctl(c(), 2, {"jobs"});
  EXPECT_NE(list.output.find("2 jobs are running at once"), std::string::npos) << list.output;
  EXPECT_EQ(Ctl(c(), 0, {"kill", a.output.substr(0, a.output.find('\n'))}).exit_code, 0);
  EXPECT_EQ(Ctl(c(), 1, {"kill", b.output.substr(0, b.output.find('\n'))}).exit_code, 0);
  // --timeout: stopped everywhere and failed with 124.
  const auto start = steady_clock::now();
  RunResult t = Ctl(c(), 3, {"run", "--timeout", "1s", "--", "sleep", "30"});
  EXPECT_EQ(t.exit_code, 124) << t.output;
  EXPECT_NE(t.output.find("timed out after 1s"), std::string::npos) << t.output;
  EXPECT_LT(steady_clock::now() - start, seconds(10));
}

TEST_F(JobsProcessTest, KillFromAnotherNodeAndCtrlCStopTheJobEverywhere) {
  Form();
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--", "sleep", "60"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 0, id, {"running"})["running"], kNodes);
  RunResult k = Ctl(c(), 2, {"kill", id});
  ASSERT_EQ(k.exit_code, 0) << k.output;
  EXPECT_NE(k.output.find("signalled 4 ranks"), std::string::npos) << k.output;
  nlohmann::json job = WaitState(c(), 0, id, {"killed", "failed", "succeeded"});
  EXPECT_EQ(job["state"], "killed") << job.dump();
  EXPECT_EQ(job["running"], 0);

  // Ctrl-C on a foreground run.
  testing::TempDir dir;
  testing::Subprocess fg({DLAGENT_AGENTCTL, "-s", c().Sock(1), "run", "--", "sleep", "60"}, {}, dir.Join("out"));
  std::string fg_id;
  for (int i = 0; i < 100 && fg_id.empty(); ++i) {
    std::this_thread::sleep_for(milliseconds(100));
    fg_id = JobId(fg.Output());
  }
  ASSERT_FALSE(fg_id.empty()) << fg.Output();
  ASSERT_EQ(WaitState(c(), 1, fg_id, {"running"})["running"], kNodes);
  fg.Signal(SIGINT);
  std::optional<int> status = fg.Wait(milliseconds(15000));
  ASSERT_TRUE(status.has_value()) << fg.Output();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 130) << fg.Output();
  job = WaitState(c(), 3, fg_id, {"killed", "failed", "succeeded"});
  EXPECT_EQ(job["state"], "killed") << job.dump();
  EXPECT_EQ(job["running"], 0);
}

TEST_F(JobsProcessTest, ANodeKilledMidJobFailsTheJobNamingTheNode) {
  Form();
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--", "sleep", "60"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 0, id, {"running"})["running"], kNodes);
  const auto start = steady_clock::now();
  c().Kill(3, SIGKILL);
  nlohmann::json job = WaitState(c(), 0, id, {"failed", "killed", "succeeded"}, seconds(40));
  EXPECT_EQ(job["state"], "failed") << job.dump();
  EXPECT_NE(job["failure"].get<std::string>().find(c().Id(3)), std::string::npos) << job.dump();
  EXPECT_EQ(job["exit_code"], 255);
  EXPECT_LT(steady_clock::now() - start, seconds(30));
}

TEST_F(JobsProcessTest, WhenTheCoordinatorLeavesTheOtherNodesStopTheirRanks) {
  Form();
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--grace", "1s", "--", "sleep", "60"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 1, id, {"running"})["running"], kNodes);
  c().Kill(0, SIGTERM);  // agentd stops its own ranks and leaves: nobody is left to stop the job everywhere
  nlohmann::json job = WaitState(c(), 1, id, {"failed", "killed", "succeeded"}, seconds(30));
  EXPECT_EQ(job["state"], "failed") << job.dump();
  EXPECT_EQ(job["running"], 0) << job.dump();
  EXPECT_NE(job["failure"].get<std::string>().find("coordinator " + c().Id(0)), std::string::npos) << job.dump();
}

TEST_F(JobsProcessTest, AStoppingAgentSaysSoWhileItsRanksTakeTheirGrace) {
  Form();
  // The ranks ignore SIGTERM: agent 0 waits out the 3 s grace before it kills them and goes.
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--grace", "3s", "--", "sh", "-c", "trap '' TERM; sleep 60"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 0, id, {"running"})["running"], kNodes);
  const auto t0 = steady_clock::now();
  ASSERT_EQ(::kill(c().Pid(0), SIGTERM), 0);
  std::this_thread::sleep_for(milliseconds(500));
  // Its parts stop in the reverse order of the boot, and the control socket last (docs/architecture.md).
  RunResult st = Ctl(c(), 0, {"status", "--json"}, seconds(5));
  EXPECT_EQ(st.exit_code, 0) << st.output;
  EXPECT_NE(st.output.find("\"phase\": \"stopping\""), std::string::npos) << st.output;
  c().Kill(0, SIGTERM);  // waits for it to exit
  const double took = duration<double>(steady_clock::now() - t0).count();
  EXPECT_GE(took, 2.5) << "the ranks' grace was not waited for";
  EXPECT_LT(took, 10) << "agentd did not exit after its ranks' grace";
  EXPECT_FALSE(c().Status(0).has_value()) << "agentd still answers after it exited";
}

TEST_F(JobsProcessTest, ANonRootCallersRanksRunAsThatUser) {
  if (!LocalCluster::root() || !::getpwnam("nobody")) GTEST_SKIP() << "needs root and the user nobody";
  Form({.socket_group = "nogroup"});
  const std::string as_nobody[] = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", DLAGENT_AGENTCTL, "-s", c().Sock(2)};
  std::vector<std::string> argv(std::begin(as_nobody), std::end(as_nobody));
  argv.insert(argv.end(), {"run", "--", "sh", "-c", "echo uid=$(id -u) gid=$(id -g) home=$HOME user=$USER"});
  RunResult r = RunCommand(argv, seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n') - 1, kNodes) << r.output;  // and the job line
  for (int i : Range(kNodes)) {
    EXPECT_NE(r.output.find("[" + std::to_string(i) + " " + c().Id(i) + "] uid=65534 gid=65534"), std::string::npos) << r.output;
  }
  argv.resize(std::size(as_nobody));
  argv.insert(argv.end(), {"run", "--user", "root", "--", "id"});
  RunResult refused = RunCommand(argv, seconds(30));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("only root may run a job as another user"), std::string::npos) << refused.output;
  // Nobody may not read or stop root's jobs.
  RunResult roots = Ctl(c(), 0, {"run", "--detach", "--", "sleep", "30"});
  argv.resize(std::size(as_nobody));
  argv.insert(argv.end(), {"kill", roots.output.substr(0, roots.output.find('\n'))});
  RunResult kill = RunCommand(argv, seconds(30));
  EXPECT_EQ(kill.exit_code, 2) << kill.output;
  EXPECT_NE(kill.output.find("only they or root"), std::string::npos) << kill.output;
  // What nobody cannot reach answers as what does not exist: nothing of a root-only directory is told.
  char secret[] = "/tmp/jobs-secret-XXXXXX";
  ASSERT_NE(::mkdtemp(secret), nullptr);  // 0700 root
  for (const std::string& dir : {std::string(secret), std::string(secret) + "/no-such-dir-here"}) {
    argv.resize(std::size(as_nobody));
    argv.insert(argv.end(), {"health", "--workdir", dir});
    RunResult h = RunCommand(argv, seconds(30));
    EXPECT_EQ(h.exit_code, 3) << h.output;
    EXPECT_NE(h.output.find(dir + " does not exist (or uid 65534 may not enter it)"), std::string::npos) << h.output;
    EXPECT_EQ(h.output.find("MiB free"), std::string::npos) << h.output;
    argv.resize(std::size(as_nobody));
    argv.insert(argv.end(), {"run", "--workdir", dir, "--", "true"});
    RunResult run = RunCommand(argv, seconds(30));
    EXPECT_NE(run.exit_code, 0) << run.output;
    EXPECT_NE(run.output.find("working directory " + dir + " does not exist on i-"), std::string::npos) << run.output;
    EXPECT_NE(run.output.find("(or user nobody may not enter it)"), std::string::npos) << run.output;
  }
  ::rmdir(secret);
}

TEST_F(JobsProcessTest, AJobCallWithoutTheKeyOrReplayedIsRefusedAndCounted) {
  Form();
  auto client = NewGrpcClusterClient();
  const std::string addr = c().Ip(1) + ":" + std::to_string(c().gossip_port());
  std::string key;
  for (size_t i = 0; i < 64; i += 2) key.push_back(static_cast<char>(std::stoi(std::string(testing::kLocalClusterKeyHex + i, 2), nullptr, 16)));
  auto ours = swim::Keyring::Create({{static_cast<uint8_t>(Sha256(key)[0]), key}}, static_cast<uint8_t>(Sha256(key)[0]), "formation");
  const std::string other_key(32, 'k');
  auto theirs =
      swim::Keyring::Create({{static_cast<uint8_t>(Sha256(other_key)[0]), other_key}}, static_cast<uint8_t>(Sha256(other_key)[0]), "formation");
  ASSERT_TRUE(ours.ok() && theirs.ok());
  jobs::v1::NodeRequest req;
  req.set_from("i-stranger");
  req.mutable_query();
  // Without the key the connection itself is refused (cluster_service.h); with it, the call's own seal counts.
  Result<std::string> unproven = client->Job(addr, ours->Seal(req.SerializeAsString(), swim::NowUnixMs()));
  ASSERT_FALSE(unproven.ok());
  EXPECT_EQ(unproven.status().code(), StatusCode::kUnavailable) << unproven.status().ToString();
  client->SetKeyring(std::make_shared<const swim::Keyring>(*ours));
  // Another key: refused, and nothing said about why.
  Result<std::string> forged = client->Job(addr, theirs->Seal(req.SerializeAsString(), swim::NowUnixMs()));
  ASSERT_FALSE(forged.ok());
  EXPECT_EQ(forged.status().code(), StatusCode::kPermissionDenied) << forged.status().ToString();
  // The right key answers once; the same packet again is a replay.
  const std::string sealed = ours->Seal(req.SerializeAsString(), swim::NowUnixMs());
  ASSERT_TRUE(client->Job(addr, sealed).ok());
  Result<std::string> replayed = client->Job(addr, sealed);
  ASSERT_FALSE(replayed.ok());
  EXPECT_EQ(replayed.status().code(), StatusCode::kPermissionDenied);
  // Sealed too long ago: refused as well.
  ASSERT_FALSE(client->Job(addr, ours->Seal(req.SerializeAsString(), swim::NowUnixMs() - 120'000)).ok());
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_NE(c().Log(1).find("jobs: refused a call"), std::string::npos);
}

TEST_F(JobsProcessTest, DlpsLauncherTrainsFourNodesTimesTwoWorkersExactly) {
  if (!LocalCluster::root()) GTEST_SKIP() << "the agents serve dlps shards in network namespaces only (as root)";
  Form();
  const std::string train = DLAGENT_DLPS_TRAIN;
  RunResult r = Ctl(c(), 0, {"run",  "--launcher", "dlps", "--per-node", "2",  "--",       train, "--model",  "mlp",        "--samples",
                             "4000", "--features", "16",   "--hidden",   "32", "--epochs", "2",   "--verify", "--progress", "never"},
                    seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("8 workers"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("summed in rank order, as the servers sum them) is 0 "), std::string::npos) << r.output;
  // A worker started by hand, without the job's token, is refused by the agents' shards and told what to do.
  RunResult stranger = RunCommand(
      {"/usr/bin/env", "DLPS_SERVERS=" + c().Ip(0) + ":7070", "DLPS_NUM_WORKERS=1", "DLPS_RANK=0", train, "--epochs", "1", "--progress", "never"},
      seconds(60));
  EXPECT_NE(stranger.exit_code, 0) << stranger.output;
  EXPECT_NE(stranger.output.find("agentctl run --launcher dlps"), std::string::npos) << stranger.output;
}

TEST_F(JobsProcessTest, TorchrunTrainsDistributedDataParallelWithGlooOnFourNodes) {
  if (RunCommand({"/usr/bin/python3", "-c", "import torch.distributed"}, seconds(60)).exit_code != 0) {
    GTEST_SKIP() << "needs Debian's python3-torch (scripts/deps.sh installs it)";
  }
  if (!LocalCluster::root()) GTEST_SKIP() << "needs a network namespace per node (root)";
  Form();
  RunResult r = Ctl(c(), 0,
                    {"run", "--launcher", "torchrun", "--env", "GLOO_SOCKET_IFNAME=eth0", "--", "/usr/bin/python3",
                     std::string(DLAGENT_SOURCE_DIR) + "/examples/torch_ddp.py"},
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
