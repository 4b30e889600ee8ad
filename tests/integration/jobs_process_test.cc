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
//   - 45 jobs with 100 KB commands are all listed, each command shortened;
//   - a node SIGKILLed mid-job fails the job naming the node; when the coordinator's agent stops, the other
//     nodes stop their ranks; an agent stopping says so (status) while its own ranks take their grace;
//   - a non-root caller's ranks run as that user, and --user is root's only;
//   - a job call sealed with another key, or replayed, is refused and counted;
//   (the launchers, dlps, mpi and torchrun, and agentctl health: jobs_launchers_test.cc).
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

#include "agent/jobs/summary.h"
#include "agent/rpc/cluster_service.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/membership/packet_crypto.h"
#include "jobs_process.h"
#include "proto/jobs.pb.h"
#include "tests/support/local_cluster.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using namespace jobs_process;
using testing::LocalCluster;
using testing::Range;
using testing::RunCommand;
using testing::RunResult;

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

TEST_F(JobsProcessTest, ManyJobsWithLongCommandsAreStillListedInFull) {
  Form();
  // 45 jobs with a 100 KB argument each: 4.5 MB of commands, over a reply's 4 MiB (and each node's view of
  // them, twice that, over an agent-to-agent reply's 8 MiB). Lists carry each command shortened.
  const std::string arg(100'000, 'x');
  std::set<std::string> ids;
  for (int i = 0; i < 45; ++i) {
    RunResult r = Ctl(c(), i % kNodes, {"run", "--detach", "--", "true", arg});
    ASSERT_EQ(r.exit_code, 0) << r.output.substr(0, 500);
    ids.insert(r.output.substr(0, r.output.find('\n')));
  }
  RunResult list = Ctl(c(), 1, {"jobs", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.output.substr(0, 2000);
  nlohmann::json all = nlohmann::json::parse(list.output.substr(list.output.find('{')));
  std::set<std::string> listed;
  for (const auto& job : all["jobs"]) {
    if (ids.count(job["id"].get<std::string>()) == 0) continue;
    listed.insert(job["id"].get<std::string>());
    EXPECT_TRUE(job["argv_cut"].get<bool>());
    ASSERT_EQ(job["argv"].size(), 2u);
    EXPECT_EQ(job["argv"][0], "true");
    EXPECT_EQ(job["argv"][1].get<std::string>(), std::string(jobs::kListArgvBytes - 4, 'x'));
  }
  EXPECT_EQ(listed, ids);
  EXPECT_TRUE(all["unreachable"].empty()) << all["unreachable"].dump();
  RunResult table = Ctl(c(), 2, {"jobs"});
  EXPECT_EQ(table.exit_code, 0) << table.output.substr(0, 2000);
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
  // Either its own rank's push reached it before it went ("agentd on ... is stopping": it stopped every rank
  // itself), or the others found it gone ("the job's coordinator ... died or left").
  EXPECT_NE(job["failure"].get<std::string>().find(c().Id(0)), std::string::npos) << job.dump();
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

}  // namespace
}  // namespace dlagent
