#include "bootstrap/node/node_files.h"

#include <sys/stat.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "bootstrap/common/fake_env.h"
#include "bootstrap/node/gpu_count.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

Roster FourNodes() {
  Roster r;
  r.cluster = "demo";
  r.generation = 3;
  r.leader = "i-master";
  r.nodes = {{"i-b", "10.0.0.10", 8, false}, {"i-c", "10.0.0.9", 8, false}, {"i-master", "10.0.1.5", 8, true}, {"i-d", "9.255.0.1", 4, false}};
  EXPECT_TRUE(OrderRoster(r.nodes).ok());
  return r;
}

TEST(RosterTest, MasterFirstThenNumericIpOrder) {
  Roster r = FourNodes();
  std::vector<std::string> order;
  for (const auto& n : r.nodes) order.push_back(n.instance_id);
  EXPECT_EQ(order, (std::vector<std::string>{"i-master", "i-d", "i-c", "i-b"}));  // 9.255.0.1 < 10.0.0.9 < 10.0.0.10
}

TEST(RosterTest, RejectsBadRosters) {
  struct Case {
    std::vector<RosterNode> nodes;
    const char* want;
  } cases[] = {
      {{{"i-a", "10.0.0.256", 0, false}}, "not an IPv4 address"},
      {{{"i-a", "10.0.0.1", 0, false}, {"i-a", "10.0.0.2", 0, false}}, "appears twice"},
      {{{"i-a", "10.0.0.1", 0, false}, {"i-b", "10.0.0.1", 0, false}}, "address 10.0.0.1 appears twice"},
      {{{"i-a", "10.0.0.1", 0, true}, {"i-b", "10.0.0.2", 0, true}}, "2 nodes claim the master role"},
  };
  for (auto& c : cases) {
    Status st = OrderRoster(c.nodes);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.ToString().find(c.want), std::string::npos) << st.ToString();
  }
}

TEST(RosterTest, JsonRoundTripsAndBadJsonIsRefused) {
  Roster r = FourNodes();
  Result<Roster> back = ParseRosterJson(RenderRosterJson(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(RenderRosterJson(*back), RenderRosterJson(r));
  EXPECT_EQ(back->nodes[0].instance_id, "i-master");
  EXPECT_TRUE(back->nodes[0].master);
  EXPECT_EQ(back->nodes[3].gpus, 8u);
  r.failure = "deadline passed with 4 of 10 nodes";
  back = ParseRosterJson(RenderRosterJson(r));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->failure, r.failure);

  // Later generations keep ranks, so any order parses; a repeated address does not.
  std::string twice = RenderRosterJson(FourNodes());
  twice.replace(twice.find("9.255.0.1"), 9, "10.0.0.9");
  struct Case {
    std::string json;
    const char* want;
  } cases[] = {
      {"[]", "not a JSON object"},
      {"{\"cluster\": \"c\"}", "malformed roster"},
      {R"({"cluster":"c","generation":1,"leader":"i-a","nodes":[{"instance_id":"i-a","ip":"10.0.0.1","gpus":1,"role":"boss"}]})", "role"},
      {R"({"cluster":"c","generation":-1,"leader":"i-a","nodes":[]})", "malformed roster"},
      {R"({"cluster":"c","generation":1,"leader":"i-a","nodes":[{"instance_id":"i-a","ip":"10.0.0.300","gpus":1,"role":"worker"}]})", "IPv4"},
      {twice, "address 10.0.0.9 appears twice"},
  };
  for (const Case& c : cases) {
    Result<Roster> parsed = ParseRosterJson(c.json);
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().ToString().find(c.want), std::string::npos) << parsed.status().ToString();
  }
}

TEST(NodeFilesTest, RenderedAsTrainingScriptsExpect) {
  Roster r = FourNodes();
  NodeFilesOptions o;
  EXPECT_EQ(RenderWorkers(r), "deeplearning-worker1\ndeeplearning-worker2\ndeeplearning-worker3\ndeeplearning-worker4\n");
  const std::string block = RenderHostsBlock(r);
  EXPECT_NE(block.find("10.0.1.5 deeplearning-master\n"), std::string::npos) << block;
  EXPECT_NE(
      block.find("10.0.1.5 deeplearning-worker1\n9.255.0.1 deeplearning-worker2\n10.0.0.9 deeplearning-worker3\n10.0.0.10 deeplearning-worker4\n"),
      std::string::npos)
      << block;
  const std::string profile = RenderProfile(r, o, 8);
  EXPECT_NE(profile.find("export DEEPLEARNING_WORKERS_PATH='/opt/deeplearning/workers'\n"), std::string::npos) << profile;
  EXPECT_NE(profile.find("export DEEPLEARNING_WORKERS_COUNT='4'\n"), std::string::npos);
  EXPECT_NE(profile.find("export DEEPLEARNING_WORKER_GPU_COUNT='8'\n"), std::string::npos);
  EXPECT_NE(profile.find("export EFS_MOUNT='/mnt/efs'\n"), std::string::npos);
  EXPECT_NE(RenderEnvFile(r, o, 8).find("DEEPLEARNING_WORKERS_COUNT=\"4\"\n"), std::string::npos);
  EXPECT_EQ(RenderHostfile(r),
            "deeplearning-worker1 slots=8\ndeeplearning-worker2 slots=4\ndeeplearning-worker3 slots=8\ndeeplearning-worker4 slots=8\n");
  EXPECT_NE(RenderRosterJson(r).find("\"instance_id\": \"i-master\""), std::string::npos);
  o.efs_mount = "/mnt/it's";
  EXPECT_NE(RenderProfile(r, o, 8).find("export EFS_MOUNT='/mnt/it'\\''s'"), std::string::npos) << "quoted for sh";
  EXPECT_EQ(profile.find("DLPS_"), std::string::npos) << "no shard port, no DLPS variables";
}

TEST(NodeFilesTest, OneDlpsWorkerPerNodeGetsItsEnvironment) {
  Roster r = FourNodes();
  NodeFilesOptions o;
  o.dlps_port = 7070;
  o.self_instance_id = r.nodes[2].instance_id;
  const std::string env = RenderEnvFile(r, o, 8);
  EXPECT_NE(env.find("DLPS_SERVERS=\"10.0.1.5:7070,9.255.0.1:7070,10.0.0.9:7070,10.0.0.10:7070\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DLPS_NUM_WORKERS=\"4\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DLPS_RANK=\"2\"\n"), std::string::npos) << env;
  EXPECT_NE(RenderProfile(r, o, 8).find("export DLPS_RANK='2'\n"), std::string::npos);
}

// cluster.role = "server": the shard is on the server nodes only, and they are no workers (rank 1 here).
TEST(NodeFilesTest, ServerNodesHoldTheShardsAndAreNoWorkers) {
  Roster r = FourNodes();  // i-master 10.0.1.5, i-d 9.255.0.1, i-c 10.0.0.9, i-b 10.0.0.10
  r.nodes[1].server = true;
  NodeFilesOptions o;
  o.dlps_port = 7070;
  o.self_instance_id = "i-c";
  const std::string env = RenderEnvFile(r, o, 8);
  EXPECT_NE(env.find("DLPS_SERVERS=\"9.255.0.1:7070\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DLPS_NUM_WORKERS=\"3\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DLPS_RANK=\"1\"\n"), std::string::npos) << env;
  EXPECT_NE(env.find("DEEPLEARNING_WORKERS_COUNT=\"3\"\n"), std::string::npos) << env;
  o.self_instance_id = "i-d";
  EXPECT_EQ(RenderEnvFile(r, o, 8).find("DLPS_RANK"), std::string::npos) << "a server node runs no worker";
  EXPECT_EQ(RenderWorkers(r), "deeplearning-worker1\ndeeplearning-worker3\ndeeplearning-worker4\n");
  EXPECT_EQ(RenderHostfile(r), "deeplearning-worker1 slots=8\ndeeplearning-worker3 slots=8\ndeeplearning-worker4 slots=8\n");
  EXPECT_NE(RenderHostsBlock(r).find("9.255.0.1 deeplearning-worker2\n"), std::string::npos) << "its name still resolves";
  // The role travels in roster.json; a node cannot be master and server at once.
  Result<Roster> back = ParseRosterJson(RenderRosterJson(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->nodes[1].server);
  EXPECT_FALSE(back->nodes[2].server);
  EXPECT_EQ(RoleName(back->nodes[1]), "server");
  r.nodes[0].server = true;
  const Status both = CheckRosterNodes(r.nodes);
  EXPECT_NE(both.message().find("i-master claims both the master and the server role"), std::string::npos) << both.ToString();
}

TEST(NodeFilesTest, HostsBlockIsReplacedNeverDuplicated) {
  Roster r = FourNodes();
  const std::string original = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n10.9.9.9 build-cache  # kept";
  std::string once = MergeHostsFile(original, RenderHostsBlock(r));
  EXPECT_EQ(once.rfind(original, 0), 0u) << "existing lines kept as they were";
  EXPECT_EQ(MergeHostsFile(once, RenderHostsBlock(r)), once) << "idempotent";
  r.generation = 4;
  r.nodes.pop_back();
  std::string changed = MergeHostsFile(once + "10.8.8.8 added-later\n", RenderHostsBlock(r));
  EXPECT_EQ(changed.find("deeplearning-worker4"), std::string::npos) << changed;
  EXPECT_NE(changed.find("generation 4"), std::string::npos);
  EXPECT_NE(changed.find("10.8.8.8 added-later\n"), std::string::npos) << "lines after the block are kept";
  size_t blocks = 0;
  for (size_t at = changed.find("# BEGIN dlagent"); at != std::string::npos; at = changed.find("# BEGIN dlagent", at + 1)) ++blocks;
  EXPECT_EQ(blocks, 1u);
}

TEST(NodeFilesTest, WritesEveryFileUnderTheRootAndRewritesIdentically) {
  testing::TempDir dir;
  std::unique_ptr<Env> env = NewPosixEnv();
  NodeFilesOptions o;
  o.root = dir.path();
  std::filesystem::create_directories(dir.Join("etc"));
  dir.Write("etc/hosts", "127.0.0.1 localhost\n");
  Roster r = FourNodes();
  ASSERT_TRUE(WriteNodeFiles(*env, o, r, 8).ok());
  for (const char* p : {"opt/deeplearning/workers", "etc/hosts", "etc/profile.d/deeplearning.sh", "etc/dlagent/cluster.env", "etc/dlagent/hostfile",
                        "etc/dlagent/roster.json"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.Join(p))) << p;
  }
  const std::string hosts = dir.Read("etc/hosts");
  EXPECT_EQ(hosts.rfind("127.0.0.1 localhost\n# BEGIN dlagent", 0), 0u) << hosts;
  ASSERT_TRUE(WriteNodeFiles(*env, o, r, 8).ok());  // an agent restart writes the same again
  EXPECT_EQ(dir.Read("etc/hosts"), hosts);
  EXPECT_EQ(dir.Read("opt/deeplearning/workers"), RenderWorkers(r));
}

TEST(NodeFilesTest, AFailedWriteLeavesTheOldFile) {
  FakeEnv env;
  env.PutFile("/etc/hosts", "127.0.0.1 localhost\n");
  env.SetFaultHook([](std::string_view op, const std::string& path) {
    return op == "sync" && path.find("/etc/hosts") == 0 ? Status::IoError("env", "fsync: No space left on device") : Status();
  });
  Status st = WriteNodeFiles(env, {}, FourNodes(), 8);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.ToString().find("/etc/hosts"), std::string::npos) << st.ToString();
  EXPECT_EQ(env.GetFile("/etc/hosts"), "127.0.0.1 localhost\n");
}

TEST(GpuCountTest, DeviceNodesThenProcThenNone) {
  testing::TempDir dir;
  std::filesystem::create_directories(dir.Join("dev"));
  std::filesystem::create_directories(dir.Join("proc"));
  GpuCountOptions o{false, dir.Join("dev"), dir.Join("proc")};
  EXPECT_EQ(CountGpus(o).count, 0u);
  EXPECT_EQ(CountGpus(o).source, "none");
  for (const char* f : {"proc/0000:10:1c.0", "proc/0000:10:1d.0"}) std::filesystem::create_directories(dir.Join(f));
  EXPECT_EQ(CountGpus(o).count, 2u);
  EXPECT_EQ(CountGpus(o).source, "/proc");
  for (const char* f : {"nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps", "nvme0"})
    dir.Write("dev/" + std::string(f), "");
  EXPECT_EQ(CountGpus(o).count, 3u);
  EXPECT_EQ(CountGpus(o).source, "/dev");
}

}  // namespace
}  // namespace dlagent
