// What a rank starts with (rank_env.h): the checkpoint directory made safely for the job's user, and the
// interface of the cluster's address told to frameworks.
#include "agent/jobs/rank_env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace dlagent::jobs {
namespace {

v1::JobSpec Spec(const std::string& id) {
  v1::JobSpec s;
  s.set_id(id);
  s.add_argv("true");
  return s;
}

TEST(CheckpointDirTest, MadeForTheJobsUserThroughNoLinkAndNoDirectoryOthersControl) {
  testing::TempDir efs;
  v1::JobSpec spec = Spec("j-1");
  EXPECT_EQ(CheckpointDir({"EFS_MOUNT=" + efs.path()}, spec), efs.path() + "/dlagent-jobs/j-1");
  EXPECT_EQ(CheckpointDir({"PATH=/bin"}, spec), "");
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the directory is made root's, then the user's)";
  const std::string dir = CheckpointDir({"EFS_MOUNT=" + efs.path()}, spec);
  EXPECT_EQ(MakeCheckpointDir(efs.Join("absent/dlagent-jobs/j-1"), 65534, 65534).value(), false) << "no storage there: no directory";
  ASSERT_EQ(MakeCheckpointDir(dir, 65534, 65534).value(), true);
  struct stat st;
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::stat(efs.Join("dlagent-jobs").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_TRUE(MakeCheckpointDir(dir, 65534, 65534).ok()) << "another node's ranks: the same directory";
  Status stranger = MakeCheckpointDir(dir, 1, 1).status();
  EXPECT_EQ(stranger.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(stranger.message().find("belongs to another user, not the job's"), std::string::npos) << stranger.ToString();

  // A parent another user could write to, or a link in its place, is refused.
  testing::TempDir open_efs;
  ASSERT_EQ(::mkdir(open_efs.Join("dlagent-jobs").c_str(), 0777), 0);
  ASSERT_EQ(::chmod(open_efs.Join("dlagent-jobs").c_str(), 0777), 0);
  Status open = MakeCheckpointDir(open_efs.Join("dlagent-jobs/j-1"), 65534, 65534).status();
  EXPECT_EQ(open.code(), StatusCode::kPermissionDenied) << open.ToString();
  testing::TempDir linked_efs;
  ASSERT_EQ(::symlink(efs.Join("dlagent-jobs").c_str(), linked_efs.Join("dlagent-jobs").c_str()), 0);
  Status linked = MakeCheckpointDir(linked_efs.Join("dlagent-jobs/j-1"), 65534, 65534).status();
  EXPECT_FALSE(linked.ok());
  EXPECT_NE(linked.message().find("not a link"), std::string::npos) << linked.ToString();
}

TEST(RankEnvTest, FrameworksAreToldTheInterfaceOfTheClusterAddress) {
  EXPECT_EQ(InterfaceHolding("127.0.0.1"), "lo");
  EXPECT_EQ(InterfaceHolding("192.0.2.77"), "") << "an address no interface holds";
  EXPECT_EQ(InterfaceHolding("not an address"), "");
  const auto vars = NetworkVariables("eth0");
  std::map<std::string, std::string> m(vars.begin(), vars.end());
  EXPECT_EQ(m.at("GLOO_SOCKET_IFNAME"), "eth0");
  EXPECT_EQ(m.at("NCCL_SOCKET_IFNAME"), "eth0");
  EXPECT_EQ(m.at("TP_SOCKET_IFNAME"), "eth0");
  EXPECT_EQ(m.at("OMPI_MCA_btl_tcp_if_include"), "eth0");
  EXPECT_EQ(m.at("OMPI_MCA_oob_tcp_if_include"), "eth0");
  EXPECT_TRUE(NetworkVariables("").empty());
  // --env wins over the node's.
  v1::JobSpec spec = Spec("j-1");
  spec.add_env("GLOO_SOCKET_IFNAME=ib0");
  v1::RankSpec rank;
  const std::vector<std::string> env = RankEnv({"GLOO_SOCKET_IFNAME=eth0"}, spec, rank, "/");
  EXPECT_EQ(EnvValue(env, "GLOO_SOCKET_IFNAME"), "ib0");
  EXPECT_EQ(EnvValue(env, "DLAGENT_RESTART_COUNT"), "0");
}

}  // namespace
}  // namespace dlagent::jobs
