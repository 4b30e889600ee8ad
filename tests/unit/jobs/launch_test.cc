// The launch profiles' variables, checked against what each framework's own launcher sets (docs/jobs.md).
#include "agent/jobs/launch.h"
#include "agent/jobs/run_request.h"

#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace dlagent::jobs {
namespace {

using Env = std::map<std::string, std::string>;

std::vector<PlanNode> Nodes(int n, std::vector<std::vector<uint16_t>> ports = {}) {
  std::vector<PlanNode> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({"i-" + std::to_string(i), "10.0.0." + std::to_string(i + 1), static_cast<uint32_t>(i + 1),
                   i < static_cast<int>(ports.size()) ? ports[i] : std::vector<uint16_t>{}});
  }
  return out;
}

// Every rank's variables, in rank order.
std::vector<Env> Flat(const std::vector<std::vector<RankPlan>>& plan) {
  std::vector<Env> out;
  for (const auto& node : plan) {
    for (const RankPlan& r : node) {
      EXPECT_EQ(r.rank, out.size());
      out.emplace_back(r.env.begin(), r.env.end());
    }
  }
  return out;
}

TEST(LaunchTest, PlainNumbersRanksNodeByNode) {
  auto plan = PlanRanks({.launcher = Launcher::kPlain, .job_id = "j-1", .per_node = 2}, Nodes(3));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const auto env = Flat(*plan);
  ASSERT_EQ(env.size(), 6u);
  EXPECT_EQ(env[3].at("DLAGENT_RANK"), "3");
  EXPECT_EQ(env[3].at("DLAGENT_LOCAL_RANK"), "1");
  EXPECT_EQ(env[3].at("DLAGENT_NODE_RANK"), "1");
  EXPECT_EQ(env[3].at("DLAGENT_NUM_RANKS"), "6");
  EXPECT_EQ(env[3].at("DLAGENT_JOB"), "j-1");
  EXPECT_EQ(env[0].count("DLPS_RANK"), 0u);
}

TEST(LaunchTest, PerNodeGpusStartsOnePerGpuAndRefusesANodeWithout) {
  auto plan = PlanRanks({.launcher = Launcher::kPlain, .per_node = 0}, Nodes(3));  // 1, 2, 3 GPUs
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ((*plan)[0].size(), 1u);
  EXPECT_EQ((*plan)[2].size(), 3u);
  auto nodes = Nodes(2);
  nodes[1].gpus = 0;
  auto refused = PlanRanks({.launcher = Launcher::kPlain, .per_node = 0}, nodes);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("i-1 has no GPUs"), std::string::npos);
}

// Found by fuzzing (tests/fuzz/jobs_fuzz.cc): a RunJob request sent without agentctl, --per-node 400000000,
// made the plan allocate until the agent died. The plan is bounded where it starts; so is a node's GPU count.
TEST(LaunchTest, ProcessesANodeAreBounded) {
  auto huge = PlanRanks({.launcher = Launcher::kDlps, .per_node = 400000000}, Nodes(2));
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("--per-node 400000000: at most 1024 processes a node"), std::string::npos) << huge.status().ToString();
  EXPECT_TRUE(PlanRanks({.launcher = Launcher::kPlain, .per_node = kMaxPerNode}, Nodes(1)).ok());
  auto nodes = Nodes(2);
  nodes[1].gpus = 4000000000u;
  auto claimed = PlanRanks({.launcher = Launcher::kPlain, .per_node = 0}, nodes);
  ASSERT_FALSE(claimed.ok());
  EXPECT_NE(claimed.status().message().find("node i-1 says it has 4000000000 GPUs"), std::string::npos) << claimed.status().ToString();
}

TEST(RunRequestTest, EachRefusalNamesWhatIsWrong) {
  const std::vector<JobNode> roster = {{"i-0a", "10.0.0.1", "10.0.0.1:7946", 8}, {"i-0b", "10.0.0.2", "10.0.0.2:7946", 8}};
  const Caller user{1000, 1000, {1000}};
  auto check = [&](const std::string& text, const Caller& caller = Caller{1000, 1000, {1000}}) {
    pb::RunJobRequest req;
    req.add_argv("train");
    if (text == "no argv") req.clear_argv();
    if (text == "launcher") req.set_launcher("horovod");
    if (text == "env") req.add_env("1BAD=x");
    if (text == "workdir") req.set_workdir("relative");
    if (text == "nodes") req.add_nodes("7");
    if (text == "user") req.set_user("root");
    if (text == "escape") req.set_name("\x1b]0;owned\x07j-000000000000 backup running");
    if (text == "long name") req.set_name(std::string(129, 'n'));
    if (text == "huge") req.add_argv(std::string(kMaxCommandBytes, 'a'));
    return CheckRunRequest(req, caller, roster, std::chrono::seconds(10));
  };
  // Names are shown to every user: printable ASCII, bounded; the command and its environment are bounded too.
  EXPECT_NE(check("escape").status().message().find("--name holds a control"), std::string::npos) << check("escape").status().ToString();
  EXPECT_NE(check("long name").status().message().find("--name is 129 bytes; at most 128"), std::string::npos);
  EXPECT_NE(check("huge").status().message().find("add up to"), std::string::npos) << check("huge").status().ToString();
  EXPECT_NE(check("no argv").status().message().find("no command"), std::string::npos);
  EXPECT_NE(check("launcher").status().message().find("unknown launcher \"horovod\""), std::string::npos);
  EXPECT_NE(check("env").status().message().find("--env \"1BAD=x\""), std::string::npos) << check("env").status().ToString();
  EXPECT_NE(check("workdir").status().message().find("not an absolute path"), std::string::npos);
  EXPECT_NE(check("nodes").status().message().find("--nodes: \"7\" is no roster node"), std::string::npos);
  EXPECT_EQ(check("user").status().code(), StatusCode::kPermissionDenied);
  auto ok = check("", user);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->nodes.size(), 2u);
  EXPECT_EQ(ok->spec.uid(), 1000u);
  EXPECT_EQ(ok->spec.grace_ms(), 10000);
  EXPECT_EQ(ok->spec.nodes_size(), 2);
  EXPECT_EQ(ok->spec.name(), "train");
  // Without --name, the program's base name, with what a terminal would act on replaced.
  pb::RunJobRequest odd;
  odd.add_argv("/opt/bin/tr\x1b[2Jain");
  auto named = CheckRunRequest(odd, user, roster, std::chrono::seconds(10));
  ASSERT_TRUE(named.ok()) << named.status().ToString();
  EXPECT_EQ(named->spec.name(), "tr?[2Jain");
}

TEST(LaunchTest, DaskRunsTheCommandBesideASchedulerAndAWorkerOnEveryNodeAsHelpers) {
  const PlanOptions o{.launcher = Launcher::kDask, .job_id = "j-3", .per_node = 0, .argv = {"python3", "client.py"}};
  EXPECT_EQ(PortsNeeded(o, 0, 1), 2u);
  EXPECT_EQ(PortsNeeded(o, 1, 1), 0u);
  auto plan = PlanRanks(o, Nodes(2, {{8786, 8787}}));  // 1 and 2 GPUs
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ((*plan)[0].size(), 3u);
  ASSERT_EQ((*plan)[1].size(), 1u);
  const RankPlan& client = (*plan)[0][0];
  EXPECT_EQ(client.rank, 0u);
  EXPECT_FALSE(client.helper) << "the job is its command";
  EXPECT_TRUE(client.argv.empty());
  const Env env(client.env.begin(), client.env.end());
  EXPECT_EQ(env.at("DASK_SCHEDULER_ADDRESS"), "tcp://10.0.0.1:8786");
  EXPECT_EQ(env.at("DLAGENT_NUM_RANKS"), "1");
  EXPECT_EQ(env.at("DLAGENT_DASK_WORKERS"), "3");  // one worker process a GPU: 1 + 2
  const RankPlan& scheduler = (*plan)[0][1];
  EXPECT_TRUE(scheduler.helper);
  EXPECT_EQ(scheduler.argv,
            (std::vector<std::string>{"dask", "scheduler", "--host", "10.0.0.1", "--port", "8786", "--dashboard-address", "10.0.0.1:8787"}));
  const RankPlan& worker = (*plan)[1][0];
  EXPECT_TRUE(worker.helper);
  EXPECT_EQ(worker.rank, 3u);
  EXPECT_EQ(worker.argv, (std::vector<std::string>{"dask", "worker", "tcp://10.0.0.1:8786", "--host", "10.0.0.2", "--nworkers", "2", "--name", "i-1",
                                                   "--no-dashboard", "--death-timeout", "60"}))
      << "one worker process a GPU of its node";
  EXPECT_EQ(ParseLauncher("dask").value(), Launcher::kDask);
}

TEST(LaunchTest, DlpsGlobalRankIsNodeRankTimesKPlusLocalRankAndTorchFindsItsPeers) {
  auto plan = PlanRanks({.launcher = Launcher::kDlps, .per_node = 2, .dlps_port = 7070}, Nodes(4, {{29500}}));
  ASSERT_TRUE(plan.ok());
  const auto env = Flat(*plan);
  ASSERT_EQ(env.size(), 8u);
  for (size_t r = 0; r < env.size(); ++r) {
    EXPECT_EQ(env[r].at("DLPS_RANK"), std::to_string(r));
    EXPECT_EQ(env[r].at("DLPS_NUM_WORKERS"), "8");
    EXPECT_EQ(env[r].at("DLPS_SERVERS"), "10.0.0.1:7070,10.0.0.2:7070,10.0.0.3:7070,10.0.0.4:7070");
    // init_process_group("gloo") for DDP through dlps.ddp: the same ranks.
    EXPECT_EQ(env[r].at("MASTER_ADDR"), "10.0.0.1");
    EXPECT_EQ(env[r].at("MASTER_PORT"), "29500");
    EXPECT_EQ(env[r].at("RANK"), std::to_string(r));
    EXPECT_EQ(env[r].at("WORLD_SIZE"), "8");
    EXPECT_EQ(env[r].at("LOCAL_RANK"), std::to_string(r % 2));
  }
  EXPECT_EQ(PortsNeeded({.launcher = Launcher::kDlps}, 0, 2), 1u);
  EXPECT_EQ(PortsNeeded({.launcher = Launcher::kDlps}, 3, 2), 0u);
}

// cluster.role = "server": node 2 runs no worker; DLPS_SERVERS names its shard only, and a helper holds the job
// there (stopped with the job's end, as dask's).
TEST(LaunchTest, DlpsUsesOnlyTheServerNodesShardsWhenThereAreAny) {
  std::vector<PlanNode> nodes = Nodes(3, {{29500}});
  nodes[2].server = true;
  const PlanOptions o{.launcher = Launcher::kDlps, .job_id = "j-9", .per_node = 2, .dlps_port = 7070};
  EXPECT_EQ(WorkersOn(o, nodes[2]).value(), 0u);
  auto plan = PlanRanks(o, nodes);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const auto env = Flat(*plan);
  ASSERT_EQ(env.size(), 5u);
  for (size_t r = 0; r < 4; ++r) {
    EXPECT_EQ(env[r].at("DLPS_SERVERS"), "10.0.0.3:7070");
    EXPECT_EQ(env[r].at("DLPS_NUM_WORKERS"), "4");
    EXPECT_EQ(env[r].at("DLPS_RANK"), std::to_string(r));
    EXPECT_EQ(env[r].at("WORLD_SIZE"), "4");
  }
  ASSERT_EQ((*plan)[2].size(), 1u);
  const RankPlan& holder = (*plan)[2][0];
  EXPECT_TRUE(holder.helper);
  EXPECT_EQ(holder.role, "server");
  EXPECT_EQ(holder.rank, 4u);
  EXPECT_EQ(holder.argv, (std::vector<std::string>{"sleep", "infinity"}));
  EXPECT_EQ(env[4].at("DLAGENT_NUM_RANKS"), "4") << "the helper is not one of the job's ranks";
  EXPECT_EQ(env[4].count("DLPS_RANK"), 0u);
}

TEST(LaunchTest, ServerNodesRunOnlyDlpsJobsAfterTheWorkerNodes) {
  const std::vector<JobNode> roster = {{"i-0", "10.0.0.1", "", 0, false}, {"i-1", "10.0.0.2", "", 0, true}, {"i-2", "10.0.0.3", "", 0, false}};
  auto ids = [](const std::vector<JobNode>& nodes) {
    std::string out;
    for (const JobNode& n : nodes) out += n.instance_id + " ";
    return out;
  };
  EXPECT_EQ(ids(PlaceRoles(Launcher::kDlps, roster, false).value()), "i-0 i-2 i-1 ");
  EXPECT_EQ(ids(PlaceRoles(Launcher::kTorchrun, roster, false).value()), "i-0 i-2 ");
  const auto named = PlaceRoles(Launcher::kPlain, roster, true);
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(named.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(named.status().message().find("--nodes: i-1 is a server node"), std::string::npos) << named.status().ToString();
  const auto only = PlaceRoles(Launcher::kDlps, {roster[1]}, true);
  ASSERT_FALSE(only.ok());
  EXPECT_NE(only.status().message().find("every node --nodes names is a server node"), std::string::npos) << only.status().ToString();
}

TEST(LaunchTest, TorchrunSetsWhatTorchDistributedRunGivesEachWorker) {
  auto plan = PlanRanks({.launcher = Launcher::kTorchrun, .job_id = "j-7", .per_node = 2}, Nodes(2, {{29411}}));
  ASSERT_TRUE(plan.ok());
  const auto env = Flat(*plan);
  ASSERT_EQ(env.size(), 4u);
  const Env& r3 = env[3];
  EXPECT_EQ(r3.at("MASTER_ADDR"), "10.0.0.1");
  EXPECT_EQ(r3.at("MASTER_PORT"), "29411");
  EXPECT_EQ(r3.at("WORLD_SIZE"), "4");
  EXPECT_EQ(r3.at("RANK"), "3");
  EXPECT_EQ(r3.at("LOCAL_RANK"), "1");
  EXPECT_EQ(r3.at("LOCAL_WORLD_SIZE"), "2");
  EXPECT_EQ(r3.at("GROUP_RANK"), "1");
  EXPECT_EQ(r3.at("GROUP_WORLD_SIZE"), "2");
  EXPECT_EQ(r3.at("ROLE_RANK"), "3");
  EXPECT_EQ(r3.at("ROLE_WORLD_SIZE"), "4");
  EXPECT_EQ(r3.at("TORCHELASTIC_RUN_ID"), "j-7");
  EXPECT_EQ(r3.at("TORCHELASTIC_RESTART_COUNT"), "0");
  EXPECT_EQ(r3.at("OMP_NUM_THREADS"), "1");
  EXPECT_EQ(PortsNeeded({.launcher = Launcher::kTorchrun}, 0, 2), 1u);
  EXPECT_EQ(PortsNeeded({.launcher = Launcher::kTorchrun}, 1, 2), 0u);
  // A node whose ports did not come back cannot be planned.
  EXPECT_FALSE(PlanRanks({.launcher = Launcher::kTorchrun}, Nodes(2)).ok());
  // A restarted job's attempt and its restarts allowed, as torchrun's elastic agent counts them.
  auto again = PlanRanks({.launcher = Launcher::kTorchrun, .job_id = "j-7", .per_node = 1, .attempt = 2, .max_restarts = 3}, Nodes(1, {{29411}}));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Flat(*again)[0].at("TORCHELASTIC_RESTART_COUNT"), "2");
  EXPECT_EQ(Flat(*again)[0].at("TORCHELASTIC_MAX_RESTARTS"), "3");
}

TEST(LaunchTest, MxnetRunsASchedulerOnTheFirstNodeAndAServerAndWorkersOnEach) {
  auto plan = PlanRanks({.launcher = Launcher::kMxnet, .per_node = 1}, Nodes(3, {{9091}}));
  ASSERT_TRUE(plan.ok());
  std::map<std::string, int> roles;
  for (size_t node = 0; node < plan->size(); ++node) {
    for (const RankPlan& r : (*plan)[node]) {
      Env env(r.env.begin(), r.env.end());
      ++roles[r.role];
      EXPECT_EQ(env.at("DMLC_ROLE"), r.role);
      EXPECT_EQ(env.at("DMLC_PS_ROOT_URI"), "10.0.0.1");
      EXPECT_EQ(env.at("DMLC_PS_ROOT_PORT"), "9091");
      EXPECT_EQ(env.at("DMLC_NUM_SERVER"), "3");
      EXPECT_EQ(env.at("DMLC_NUM_WORKER"), "3");
      EXPECT_EQ(env.at("DMLC_NODE_HOST"), "10.0.0." + std::to_string(node + 1));
      if (r.role == "scheduler") {
        EXPECT_EQ(node, 0u);
      }
    }
  }
  EXPECT_EQ(roles["scheduler"], 1);
  EXPECT_EQ(roles["server"], 3);
  EXPECT_EQ(roles["worker"], 3);
}

TEST(LaunchTest, TfGivesEveryWorkerTheClusterAndItsOwnTask) {
  auto plan = PlanRanks({.launcher = Launcher::kTf, .per_node = 2}, Nodes(2, {{5000, 5001}, {6000, 6001}}));
  ASSERT_TRUE(plan.ok());
  const auto env = Flat(*plan);
  ASSERT_EQ(env.size(), 4u);
  for (size_t r = 0; r < env.size(); ++r) {
    auto config = nlohmann::json::parse(env[r].at("TF_CONFIG"));
    EXPECT_EQ(config["cluster"]["worker"], nlohmann::json({"10.0.0.1:5000", "10.0.0.1:5001", "10.0.0.2:6000", "10.0.0.2:6001"}));
    EXPECT_FALSE(config["cluster"].contains("ps"));
    EXPECT_EQ(config["task"]["type"], "worker");
    EXPECT_EQ(config["task"]["index"], r);
  }
}

TEST(LaunchTest, TfPsHasAChiefAPsANodeAndWorkers) {
  auto plan = PlanRanks({.launcher = Launcher::kTfPs, .per_node = 1}, Nodes(2, {{5000, 5001, 5002}, {6000, 6001}}));
  ASSERT_TRUE(plan.ok());
  std::map<std::string, std::vector<int>> indices;
  nlohmann::json cluster;
  for (const auto& node : *plan) {
    for (const RankPlan& r : node) {
      Env env(r.env.begin(), r.env.end());
      auto config = nlohmann::json::parse(env.at("TF_CONFIG"));
      cluster = config["cluster"];
      EXPECT_EQ(config["task"]["type"], r.role);
      indices[r.role].push_back(config["task"]["index"]);
    }
  }
  EXPECT_EQ(cluster["chief"], nlohmann::json({"10.0.0.1:5000"}));
  EXPECT_EQ(cluster["ps"], nlohmann::json({"10.0.0.1:5001", "10.0.0.2:6000"}));
  EXPECT_EQ(cluster["worker"], nlohmann::json({"10.0.0.1:5002", "10.0.0.2:6001"}));
  EXPECT_EQ(indices["ps"], (std::vector<int>{0, 1}));
  EXPECT_EQ(indices["worker"], (std::vector<int>{0, 1}));
}

TEST(LaunchTest, MpiRunsMpirunOnTheFirstNodeWithEveryNodesSlotsAndTheAgentAsItsRemoteLauncher) {
  PlanOptions o{
      .launcher = Launcher::kMpi, .job_id = "j-9", .per_node = 0, .argv = {"python3", "x.py"}, .agentctl = "/usr/bin/agentctl", .as_root = true};
  auto plan = PlanRanks(o, Nodes(3));  // 1, 2, 3 GPUs: slots
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ((*plan)[0].size(), 1u);
  EXPECT_TRUE((*plan)[1].empty());
  EXPECT_TRUE((*plan)[2].empty());
  const RankPlan& r = (*plan)[0][0];
  EXPECT_EQ(r.argv, (std::vector<std::string>{"mpirun", "--host", "10.0.0.1:1,10.0.0.2:2,10.0.0.3:3", "-np", "6", "--bind-to", "none", "--tag-output",
                                              "python3", "x.py"}));
  Env env(r.env.begin(), r.env.end());
  EXPECT_EQ(env.at("OMPI_MCA_plm_rsh_agent"), "/usr/bin/agentctl mpi-rsh");
  EXPECT_EQ(env.at("OMPI_MCA_plm_rsh_no_tree_spawn"), "1");
  EXPECT_EQ(env.at("OMPI_ALLOW_RUN_AS_ROOT"), "1");
  EXPECT_EQ(env.at("DLAGENT_JOB"), "j-9");
  o.as_root = false;
  auto as_user = PlanRanks(o, Nodes(1));
  ASSERT_TRUE(as_user.ok());
  Env user((*as_user)[0][0].env.begin(), (*as_user)[0][0].env.end());
  EXPECT_EQ(user.count("OMPI_ALLOW_RUN_AS_ROOT"), 0u);
}

TEST(LaunchTest, UnknownLauncherNamesTheKnownOnes) {
  auto l = ParseLauncher("horovod");
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("torchrun"), std::string::npos);
  EXPECT_EQ(*ParseLauncher("tf-ps"), Launcher::kTfPs);
}

}  // namespace
}  // namespace dlagent::jobs
