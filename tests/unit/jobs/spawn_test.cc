// Starting a rank (spawn.h): a caller that places the child (a systemd scope) does so before the program runs,
// and where scopes cannot be had the reason is given.
#include "agent/jobs/spawn.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/jobs/scope.h"
#include "tests/support/temp_dir.h"

namespace dlagent::jobs {
namespace {

std::string Exe(pid_t pid) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(("/proc/" + std::to_string(pid) + "/exe").c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

std::string ReadAll(int fd) {
  std::string out;
  char buf[256];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) break;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// A request to run argv as this process's user in dir.
SpawnRequest Request(const testing::TempDir& dir, std::vector<std::string> argv, const std::string& path = "/usr/bin:/bin") {
  SpawnRequest req;
  req.argv = std::move(argv);
  req.env = {"PATH=" + path};
  req.workdir = dir.path();
  req.uid = ::geteuid();
  req.gid = ::getegid();
  return req;
}

TEST(SpawnTest, APlacedChildRunsItsProgramOnlyOncePlaceHasReturned) {
  testing::TempDir dir;
  SpawnRequest req = Request(dir, {"/bin/sh", "-c", "echo ran"});
  std::string exe_when_placed;
  pid_t placed = -1;
  req.place = [&](pid_t pid) {
    placed = pid;
    // Still a copy of this process: the program (and so anything it could start) has not run yet.
    exe_when_placed = Exe(pid);
  };
  Result<Spawned> s = Spawn(req);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(placed, s->pid);
  EXPECT_EQ(exe_when_placed, Exe(::getpid()));
  EXPECT_EQ(ReadAll(s->out_fd), "ran\n");
  int status = 0;
  ASSERT_EQ(::waitpid(s->pid, &status, 0), s->pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  for (int fd : {s->pidfd, s->out_fd, s->err_fd}) ::close(fd);
}

// Another process forked while a child waits to be placed (another thread's Spawn, a look as a user) holds a
// copy of the pipe the child waits on. The child must go on once placed, not when every copy is gone: three
// nodes' Spawns at once deadlocked that way, each child holding the others' pipes.
TEST(SpawnTest, APlacedChildGoesOnWhileAnotherProcessHoldsItsPipe) {
  testing::TempDir dir;
  SpawnRequest req = Request(dir, {"/bin/sh", "-c", "echo ran"});
  pid_t holder = -1;
  req.place = [&](pid_t) {
    holder = ::fork();  // holds every fd this process has now, the pipe's write end included, for 10 s
    if (holder == 0) {
      ::sleep(10);
      ::_exit(0);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  Result<Spawned> s = Spawn(req);
  const auto took = std::chrono::steady_clock::now() - t0;
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_LT(took, std::chrono::seconds(5)) << "the child waited for the holder to end";
  EXPECT_EQ(ReadAll(s->out_fd), "ran\n");
  ::waitpid(s->pid, nullptr, 0);
  for (int fd : {s->pidfd, s->out_fd, s->err_fd}) ::close(fd);
}

TEST(SpawnTest, AChildThatCannotRunItsProgramStillReportsWhyWhenPlaced) {
  testing::TempDir dir;
  SpawnRequest req = Request(dir, {"no-such-program-here"}, "/nonexistent");
  bool placed = false;
  req.place = [&](pid_t) { placed = true; };
  Result<Spawned> s = Spawn(req);
  EXPECT_TRUE(placed);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_NE(s.status().ToString().find("cannot run the program no-such-program-here"), std::string::npos) << s.status().ToString();
}

TEST(ScopesTest, ScopesAreHadOnlyWithSystemdAsPidOneAndAsRootOtherwiseTheReasonIsGiven) {
  // Scopes themselves are tested under real systemd (tests/system/systemd_container_test.sh).
  std::string why;
  const std::unique_ptr<Scopes> scopes = Scopes::Open(ScopeOptions{}, &why);
  if (::access("/run/systemd/system", F_OK) != 0) {
    EXPECT_EQ(scopes, nullptr);
    EXPECT_EQ(why, "PID 1 is not systemd");
  } else if (::geteuid() != 0) {
    EXPECT_EQ(scopes, nullptr);
    EXPECT_EQ(why, "agentd is not root");
  } else {
    EXPECT_NE(scopes, nullptr) << why;
  }
}

}  // namespace
}  // namespace dlagent::jobs
