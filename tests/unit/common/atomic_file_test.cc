#include "bootstrap/common/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "bootstrap/common/fake_env.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

TEST(AtomicFileTest, WritesSyncsRenamesAndSyncsTheDirectory) {
  FakeEnv env;
  std::vector<std::string> ops;
  env.SetFaultHook([&](std::string_view op, const std::string& path) {
    ops.push_back(std::string(op) + " " + (path.find(".tmp.") != std::string::npos ? "tmp" : path));
    return Status();
  });
  ASSERT_TRUE(WriteFileAtomically(env, "/etc/dlagent/cluster.env", "A=1\n", 0640).ok());
  EXPECT_EQ(ops, (std::vector<std::string>{"create tmp", "append tmp", "sync tmp", "close tmp", "rename tmp", "syncdir /etc/dlagent"}));
  EXPECT_EQ(env.GetFile("/etc/dlagent/cluster.env"), "A=1\n");
  EXPECT_EQ(env.GetMode("/etc/dlagent/cluster.env"), 0640u);
  EXPECT_EQ(env.ListFiles().size(), 1u);  // no temporary file left
}

// A failure at any step before the rename leaves the old file whole and removes the temporary file.
TEST(AtomicFileTest, FailureBeforeRenameKeepsTheOldFile) {
  for (const char* failing : {"create", "append", "sync", "close", "rename"}) {
    FakeEnv env;
    env.PutFile("/etc/hosts", "old contents\n");
    env.SetFaultHook([&](std::string_view op, const std::string&) {
      return op == failing ? Status::IoError("env", std::string(failing) + ": No space left on device") : Status();
    });
    Status st = WriteFileAtomically(env, "/etc/hosts", "new contents\n");
    ASSERT_FALSE(st.ok()) << failing;
    EXPECT_NE(st.ToString().find("writing /etc/hosts"), std::string::npos) << st.ToString();
    EXPECT_NE(st.ToString().find(failing), std::string::npos) << st.ToString();
    EXPECT_EQ(env.GetFile("/etc/hosts"), "old contents\n") << failing;
    EXPECT_EQ(env.ListFiles(), std::vector<std::string>{"/etc/hosts"}) << failing;
  }
}

TEST(AtomicFileTest, DirectorySyncFailureIsReported) {
  FakeEnv env;
  env.SetFaultHook([](std::string_view op, const std::string&) {
    return op == "syncdir" ? Status::IoError("env", "fsync directory: Input/output error") : Status();
  });
  Status st = WriteFileAtomically(env, "/opt/deeplearning/workers", "w1\n");
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(env.GetFile("/opt/deeplearning/workers"), "w1\n");  // renamed, durability not promised
}

TEST(AtomicFileTest, RealFileSystemReplacesWholeFileWithExactMode) {
  testing::TempDir dir;
  std::unique_ptr<Env> env = NewPosixEnv();
  const std::string path = dir.Join("workers");
  dir.Write("workers", "old\n");
  ASSERT_TRUE(WriteFileAtomically(*env, path, "deeplearning-worker1\ndeeplearning-worker2\n", 0600).ok());
  EXPECT_EQ(dir.Read("workers"), "deeplearning-worker1\ndeeplearning-worker2\n");
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

// The real Env with one call overridden: fsync fails on the temporary file.
class FailingSyncEnv : public EnvWrapper {
 public:
  using EnvWrapper::EnvWrapper;
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path, uint32_t mode) override {
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, target()->NewWritableFile(path, mode));
    return std::unique_ptr<WritableFile>(std::make_unique<FailingSync>(std::move(file)));
  }

 private:
  struct FailingSync : WritableFile {
    explicit FailingSync(std::unique_ptr<WritableFile> f) : f(std::move(f)) {}
    Status Append(std::string_view d) override { return f->Append(d); }
    Status Sync() override { return Status::IoError("env", "fsync: Input/output error"); }
    Status Close() override { return f->Close(); }
    std::unique_ptr<WritableFile> f;
  };
};

TEST(AtomicFileTest, RealFileSystemFsyncFailureKeepsTheOldFile) {
  testing::TempDir dir;
  std::unique_ptr<Env> real = NewPosixEnv();
  FailingSyncEnv env(real.get());
  dir.Write("hosts", "127.0.0.1 localhost\n");
  Status st = WriteFileAtomically(env, dir.Join("hosts"), "broken\n");
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(dir.Read("hosts"), "127.0.0.1 localhost\n");
  int entries = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++entries;
  EXPECT_EQ(entries, 1) << "temporary file left behind";
}

// The temporary name cannot be guessed, and a new file is never opened through a link: a user who can write to
// the directory (shared storage) cannot make root write into a file of their choosing.
TEST(AtomicFileTest, NoFileIsWrittenThroughALinkPlantedInTheDirectory) {
  testing::TempDir dir;
  std::unique_ptr<Env> env = NewPosixEnv();
  dir.Write("secret", "root only\n");
  ASSERT_EQ(::symlink(dir.Join("secret").c_str(), dir.Join("planted").c_str()), 0);
  Result<std::unique_ptr<WritableFile>> f = env->NewWritableFile(dir.Join("planted"), 0644);
  EXPECT_EQ(f.status().code(), StatusCode::kAlreadyExists) << f.status().ToString();
  EXPECT_EQ(dir.Read("secret"), "root only\n");

  std::vector<std::string> tmps;
  FakeEnv fake;
  fake.SetFaultHook([&](std::string_view op, const std::string& path) {
    if (op == "create") tmps.push_back(path);
    return Status();
  });
  ASSERT_TRUE(WriteFileAtomically(fake, "/ckpt/manifest.json", "1").ok());
  ASSERT_TRUE(WriteFileAtomically(fake, "/ckpt/manifest.json", "2").ok());
  ASSERT_EQ(tmps.size(), 2u);
  EXPECT_NE(tmps[0], tmps[1]);
  EXPECT_EQ(tmps[0].size(), std::string("/ckpt/manifest.json.tmp.").size() + 16) << tmps[0] << ": 64 random bits";
  EXPECT_EQ(tmps[0].find(std::to_string(::getpid())), std::string::npos) << tmps[0] << ": no pid to guess from";
}

TEST(AtomicFileTest, MissingDirectoryIsAClearError) {
  std::unique_ptr<Env> env = NewPosixEnv();
  Status st = WriteFileAtomically(*env, "/nonexistent-dlagent-dir/x", "y");
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.ToString().find("/nonexistent-dlagent-dir/x"), std::string::npos);
}

}  // namespace
}  // namespace dlagent
