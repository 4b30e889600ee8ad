#include "bootstrap/common/fake_env.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

using namespace std::chrono;

TEST(FakeEnvTest, SleepAdvancesVirtualClocksInstantly) {
  FakeEnv env;
  const MonoTime m = env.NowMono();
  const WallTime w = env.NowWall();
  const auto real_start = steady_clock::now();
  env.SleepFor(hours(2));
  EXPECT_EQ(env.NowMono() - m, hours(2));
  EXPECT_EQ(env.NowWall() - w, hours(2));
  EXPECT_LT(steady_clock::now() - real_start, seconds(1));
}

TEST(FakeEnvTest, FilesLiveInMemory) {
  FakeEnv env;
  auto f = env.NewWritableFile("/a", 0600);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("hello").ok());
  ASSERT_TRUE((*f)->Close().ok());
  EXPECT_EQ(*env.ReadFile("/a", 100), "hello");
  EXPECT_EQ(env.ReadFile("/a", 2).status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(env.RenameFile("/a", "/b").ok());
  EXPECT_FALSE(env.FileExists("/a"));
  EXPECT_EQ(env.GetFile("/b"), "hello");
  EXPECT_EQ(env.RemoveFile("/a").code(), StatusCode::kNotFound);
}

TEST(FakeEnvTest, ExecAndMountGoThroughHandlersAndFaults) {
  FakeEnv env;
  EXPECT_EQ(env.Exec({{"mount"}}).status().code(), StatusCode::kFailedPrecondition);
  env.SetExecHandler([](const ExecRequest& r) -> Result<ExecResult> {
    ExecResult res;
    res.exit_code = r.argv.size() == 2 ? 0 : 1;
    return res;
  });
  EXPECT_EQ(env.Exec({{"true", "x"}})->exit_code, 0);
  ASSERT_TRUE(env.Mount({"/src", "/mnt/efs", "bind", ""}).ok());
  ASSERT_EQ(env.mounts().size(), 1u);
  env.SetFaultHook([](std::string_view op, const std::string&) { return op == "mount" ? Status::DeadlineExceeded("mount", "hung") : Status(); });
  EXPECT_EQ(env.Mount({"/src", "/mnt/other", "bind", ""}).code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(env.Unmount("/mnt/efs").ok());
  EXPECT_EQ(env.Unmount("/mnt/efs").code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace dlagent
