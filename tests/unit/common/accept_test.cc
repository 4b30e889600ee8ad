#include "bootstrap/common/accept.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include <gtest/gtest.h>

namespace dlagent {
namespace {

using namespace std::chrono;

// A non-blocking listening socket on 127.0.0.1 and a client connected to it (not yet accepted).
struct Listener {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in addr{AF_INET, 0, {htonl(INADDR_LOOPBACK)}, {}};
  Listener() {
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    EXPECT_EQ(::listen(fd, 8), 0);
    EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  }
  ~Listener() { ::close(fd); }
  int Connect() {
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return c;
  }
};

TEST(AcceptOneTest, TakesAWaitingConnectionAndNothingElse) {
  Listener l;
  std::string error;
  EXPECT_EQ(AcceptOne(l.fd, &error), -1) << "nobody waits";
  EXPECT_EQ(error, "") << "that is not an error";
  const int client = l.Connect();
  const int fd = AcceptOne(l.fd, &error);
  ASSERT_GE(fd, 0) << error;
  EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
  ::close(fd);
  ::close(client);
}

// Out of fds, the listening socket stays readable: a loop polling it would spin without the pause.
TEST(AcceptOneTest, OutOfFdsIsNamedAndPaused) {
  Listener l;
  const int client = l.Connect();
  const pid_t child = ::fork();
  if (child == 0) {                                                                   // the limit applies to this process alone
    const rlimit none{static_cast<rlim_t>(::dup(0)), static_cast<rlim_t>(::dup(0))};  // the lowest free fd: no new one
    ::setrlimit(RLIMIT_NOFILE, &none);
    std::string error;
    const auto t0 = steady_clock::now();
    const int fd = AcceptOne(l.fd, &error, milliseconds(200));
    const bool paused = steady_clock::now() - t0 >= milliseconds(200);
    ::_exit(fd == -1 && error.find("Too many open files") != std::string::npos && paused ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "accept must fail with EMFILE, say so and pause";
  ::close(client);
}

}  // namespace
}  // namespace dlagent
