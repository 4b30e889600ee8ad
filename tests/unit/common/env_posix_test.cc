#include <sys/stat.h>

#include <gtest/gtest.h>

#include "bootstrap/common/env.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

class PosixEnvTest : public ::testing::Test {
 protected:
  std::unique_ptr<Env> env_ = NewPosixEnv();
};

TEST_F(PosixEnvTest, ExecCapturesOutputAndExitCode) {
  Result<ExecResult> r = env_->Exec({{"sh", "-c", "echo out; echo err >&2; exit 3"}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_FALSE(r->timed_out);
  EXPECT_NE(r->output.find("out"), std::string::npos);
  EXPECT_NE(r->output.find("err"), std::string::npos);
}

TEST_F(PosixEnvTest, ExecPassesExtraEnvironment) {
  ExecRequest req{{"sh", "-c", "echo $DLAGENT_X"}};
  req.extra_env = {"DLAGENT_X=hello"};
  Result<ExecResult> r = env_->Exec(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output, "hello\n");
}

// A command that hangs, and a grandchild that holds its output open, are both killed at the deadline.
TEST_F(PosixEnvTest, ExecTimeoutKillsTheWholeProcessGroup) {
  ExecRequest req{{"sh", "-c", "sleep 30 & sleep 30"}};
  req.timeout = milliseconds(300);
  const auto start = steady_clock::now();
  Result<ExecResult> r = env_->Exec(req);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
  EXPECT_FALSE(r->succeeded());
  EXPECT_LT(steady_clock::now() - start, seconds(5));
}

TEST_F(PosixEnvTest, ExecCapsOutput) {
  ExecRequest req{{"sh", "-c", "head -c 100000 /dev/zero"}};
  req.max_output_bytes = 1000;
  Result<ExecResult> r = env_->Exec(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->output.size(), 1000u);
  EXPECT_EQ(r->exit_code, 0);
}

TEST_F(PosixEnvTest, ExecOfMissingProgramIsAnError) {
  Result<ExecResult> r = env_->Exec({{"/nonexistent/dlagent-program"}});
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("/nonexistent/dlagent-program"), std::string::npos);
  EXPECT_FALSE(env_->Exec({}).ok());
}

TEST_F(PosixEnvTest, ReadFileBoundsSizeAndReportsMissing) {
  testing::TempDir dir;
  dir.Write("f", std::string(5000, 'x'));
  EXPECT_EQ(env_->ReadFile(dir.Join("f"), 5000)->size(), 5000u);
  EXPECT_EQ(env_->ReadFile(dir.Join("f"), 4999).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(env_->ReadFile(dir.Join("missing"), 10).status().code(), StatusCode::kNotFound);
  // Only regular files, refused at once: a FIFO without a writer would block, /dev/zero never ends.
  ASSERT_EQ(::mkfifo(dir.Join("fifo").c_str(), 0600), 0);
  EXPECT_EQ(env_->ReadFile(dir.Join("fifo"), 10).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(env_->ReadFile("/dev/zero", 10).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(env_->ReadFile(dir.path(), 10).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(PosixEnvTest, CreateDirsMakesParentsAndIsIdempotent) {
  testing::TempDir dir;
  const std::string deep = dir.Join("a/b/c");
  ASSERT_TRUE(env_->CreateDirs(deep, 0755).ok());
  EXPECT_TRUE(env_->FileExists(deep));
  EXPECT_TRUE(env_->CreateDirs(deep, 0755).ok());
  dir.Write("file", "x");
  EXPECT_EQ(env_->CreateDirs(dir.Join("file"), 0755).code(), StatusCode::kAlreadyExists);
}

TEST_F(PosixEnvTest, ClockMovesAndSleeps) {
  const MonoTime a = env_->NowMono();
  env_->SleepFor(milliseconds(20));
  EXPECT_GE(env_->NowMono() - a, milliseconds(20));
}

TEST(DirNameTest, Cases) {
  EXPECT_EQ(DirName("/etc/dlagent/x.toml"), "/etc/dlagent");
  EXPECT_EQ(DirName("/x"), "/");
  EXPECT_EQ(DirName("x"), ".");
  EXPECT_EQ(DirName("a/b/"), "a");
}

}  // namespace
}  // namespace dlagent
