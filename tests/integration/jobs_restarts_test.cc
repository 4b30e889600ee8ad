// Jobs that restart (agentctl run --restarts), on a local cluster of 4 real agents:
//   - real PyTorch DDP over gloo: a node powered off mid-training (its agent and its ranks SIGKILLed), the
//     job starts again on the other 3 from its checkpoint on shared storage and ends with the loss a run
//     without a fault reaches;
//   - the coordinator's node powered off: the first live node of the job takes it over and restarts it;
//   - a spot notice on one node: its agent leaves and stops its ranks, and the job restarts without that node;
//   - a rank that fails every time ends the job with its exit code after its restarts, and says so.
#include <signal.h>

#include <filesystem>
#include <regex>
#include <set>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "jobs_process.h"
#include "tests/support/local_cluster.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using namespace jobs_process;
using testing::LocalCluster;
using testing::RunCommand;
using testing::RunResult;

// The loss examples/torch_ddp.py reaches after 30 steps without a fault is 0.006; a restart that lost the
// model or resumed wrong would stay far above this.
constexpr double kLossAfter30Steps = 0.02;

TEST_F(JobsProcessTest, ATorchJobRestartsOnTheOtherNodesFromItsCheckpointWhenANodeLosesPower) {
  if (RunCommand({"/usr/bin/python3", "-c", "import torch.distributed"}, seconds(60)).exit_code != 0) {
    GTEST_SKIP() << "needs Debian's python3-torch (scripts/deps.sh installs it)";
  }
  if (!LocalCluster::root()) GTEST_SKIP() << "needs a network namespace per node (root) to power one off";
  Form();
  RunResult d = Ctl(c(), 0,
                    {"run", "--detach", "--launcher", "torchrun", "--restarts", "2", "--min-nodes", "3", "--grace", "2s", "--", "/usr/bin/python3",
                     std::string(DLAGENT_SOURCE_DIR) + "/examples/torch_ddp.py", "--steps", "30", "--pause", "0.3"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  // Mid-training: once rank 0 has saved a checkpoint on the shared storage.
  const std::string checkpoint = c().Shared() + "/dlagent-jobs/" + id + "/torch_ddp.pt";
  const auto until = steady_clock::now() + seconds(90);
  while (!std::filesystem::exists(checkpoint) && steady_clock::now() < until) std::this_thread::sleep_for(milliseconds(100));
  ASSERT_TRUE(std::filesystem::exists(checkpoint)) << Job(c(), 0, id).dump();
  c().PowerOff(3);

  nlohmann::json job = WaitState(c(), 0, id, {"failed", "killed", "succeeded"}, seconds(150));
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["attempt"], 1) << job.dump();
  ASSERT_EQ(job["restarts"].size(), 1u) << job.dump();
  // The reason is the first failure seen: node 3 lost, or a rank whose gloo peer on it vanished.
  EXPECT_NE(job["restarts"][0]["reason"].get<std::string>(), "") << job.dump();
  EXPECT_EQ(job["restarts"][0]["nodes"], 3) << job.dump();
  std::set<std::string> ran;
  for (const auto& e : job["rank_exits"]) ran.insert(e["node"].get<std::string>());
  EXPECT_EQ(ran, (std::set<std::string>{c().Id(0), c().Id(1), c().Id(2)})) << job.dump();
  RunResult logs = Ctl(c(), 1, {"logs", id});
  std::smatch m;
  ASSERT_TRUE(std::regex_search(logs.output, m, std::regex("attempt 1: resumed at step ([0-9]+) on 3 ranks"))) << logs.output;
  EXPECT_GT(std::stoi(m[1].str()), 0) << logs.output;
  ASSERT_TRUE(std::regex_search(logs.output, m, std::regex("world 3 step 30 loss ([0-9.]+)"))) << logs.output;
  EXPECT_LT(std::stod(m[1].str()), kLossAfter30Steps) << logs.output;
}

TEST_F(JobsProcessTest, ASpotNoticeStopsThatNodesRanksAndTheJobRestartsWithoutIt) {
  Form();
  // Attempt 0 runs until stopped; attempt 1 ends well.
  const std::string script =
      "trap 'echo SIGTERM on attempt $DLAGENT_RESTART_COUNT; exit 143' TERM; [ $DLAGENT_RESTART_COUNT = 1 ] && exit 0; sleep 60 & wait";
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--restarts", "1", "--min-nodes", "3", "--grace", "2s", "--", "sh", "-c", script});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 0, id, {"running"})["running"], kNodes);
  c().Imds(2).TriggerSpotNotice("terminate", "2026-11-22T10:00:00Z");
  nlohmann::json job = WaitState(c(), 0, id, {"failed", "killed", "succeeded"}, seconds(60));
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  ASSERT_EQ(job["restarts"].size(), 1u) << job.dump();
  EXPECT_NE(job["restarts"][0]["reason"].get<std::string>().find(c().Id(2)), std::string::npos) << job.dump();
  std::set<std::string> ran;
  for (const auto& e : job["rank_exits"]) ran.insert(e["node"].get<std::string>());
  EXPECT_EQ(ran, (std::set<std::string>{c().Id(0), c().Id(1), c().Id(3)})) << job.dump();
  RunResult logs = Ctl(c(), 0, {"logs", id});
  EXPECT_TRUE(HasLine(logs.output, c().Id(0), "SIGTERM on attempt 0")) << logs.output;  // the others were stopped, then started again
}

TEST_F(JobsProcessTest, WhenTheCoordinatorsNodeLosesPowerAnotherAgentTakesTheJobOverAndItFinishes) {
  if (!LocalCluster::root()) GTEST_SKIP() << "needs a network namespace per node (root) to power one off";
  Form();
  RunResult d = Ctl(c(), 0,
                    {"run", "--detach", "--restarts", "1", "--min-nodes", "3", "--grace", "1s", "--", "sh", "-c",
                     "[ $DLAGENT_RESTART_COUNT = 1 ] && { echo done on $DLAGENT_NODE_RANK; exit 0; }; exec sleep 60"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 2, id, {"running"})["running"], kNodes);
  c().PowerOff(0);  // the coordinator's node, with its agent and its rank
  nlohmann::json job = WaitState(c(), 2, id, {"failed", "killed", "succeeded"}, seconds(60));
  ASSERT_EQ(job["state"], "succeeded") << job.dump();
  EXPECT_EQ(job["coordinator"], c().Id(1)) << "the first live node of the job took it over";
  ASSERT_EQ(job["restarts"].size(), 1u) << job.dump();
  EXPECT_EQ(job["restarts"][0]["reason"], "the job's coordinator " + c().Id(0) + " died or left the cluster") << job.dump();
  RunResult logs = Ctl(c(), 3, {"logs", id});
  for (int node = 0; node < 3; ++node) EXPECT_NE(logs.output.find("done on " + std::to_string(node)), std::string::npos) << logs.output;
}

TEST_F(JobsProcessTest, ARankFailingEveryTimeEndsTheJobWithItsCodeOnceItsRestartsAreUsed) {
  Form();
  RunResult r = Ctl(c(), 1, {"run", "--restarts", "2", "--grace", "1s", "--", "sh", "-c", "[ $DLAGENT_RANK = 2 ] && exit 3; exec sleep 60"});
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("attempt 0 failed: rank 2 on " + c().Id(2) + " exited with 3; restarting (1 of 2)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("attempt 1 failed: rank 2 on " + c().Id(2) + " exited with 3; restarting (2 of 2)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("it failed 3 times, with every restart used (--restarts 2)"), std::string::npos) << r.output;
  RunResult jobs = Ctl(c(), 0, {"jobs"});
  EXPECT_NE(jobs.output.find("failed r2/2"), std::string::npos) << jobs.output;
  // Nonsense is refused before anything starts.
  RunResult bad = Ctl(c(), 0, {"run", "--min-nodes", "9", "--restarts", "1", "--", "true"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--min-nodes 9 is more than the job's 4 nodes"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace dlagent
