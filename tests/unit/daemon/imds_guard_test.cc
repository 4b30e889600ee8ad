// The instance metadata guard (imds_guard.h), applied with the real nft in a network namespace of the test's
// own: other users' connections to the metadata address are refused, root's pass, and lifting the guard lets
// every user through again.
#include "agent/daemon/imds_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

namespace dlagent {
namespace {

TEST(ImdsGuardTest, TheRulesRejectEveryoneButRootAndLiftingThemRemovesTheTableWhole) {
  const std::string on = ImdsGuardRules(true);
  EXPECT_NE(on.find("ip daddr 169.254.169.254 meta skuid != 0 counter reject"), std::string::npos) << on;
  EXPECT_NE(on.find("ip6 daddr fd00:ec2::254 meta skuid != 0 counter reject"), std::string::npos) << on;
  EXPECT_EQ(ImdsGuardRules(false), "add table inet dlagent_imds\ndelete table inet dlagent_imds\n");
  EXPECT_EQ(on.rfind(ImdsGuardRules(false), 0), 0u) << "the guard replaces any table of the same name";
}

// The errno of a TCP connect to the metadata address as uid (in a child; -1 when it could not try).
int ConnectAs(uid_t uid) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (uid != 0 && (::setgid(uid) != 0 || ::setuid(uid) != 0)) ::_exit(255);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(80);
    ::inet_pton(AF_INET, "169.254.169.254", &a.sin_addr);
    ::_exit(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 ? 0 : errno);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) != 255 ? WEXITSTATUS(status) : -1;
}

TEST(ImdsGuardTest, OnlyRootReachesTheMetadataAddressWhileTheGuardIsOn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a network namespace and nftables)";
  // Everything happens in a child that has a network namespace of its own: the host's firewall is not touched.
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNET) != 0) ::_exit(10);
    std::unique_ptr<Env> env = NewPosixEnv();
    ExecRequest up;
    up.argv = {"ip", "addr", "add", "169.254.169.254/32", "dev", "lo"};
    if (Result<ExecResult> r = env->Exec(up); !r.ok() || r->exit_code != 0) ::_exit(11);
    up.argv = {"ip", "link", "set", "lo", "up"};
    if (Result<ExecResult> r = env->Exec(up); !r.ok() || r->exit_code != 0) ::_exit(11);
    // Nothing listens: a connection that reaches the address is refused by its port, one the guard stops is not.
    if (ConnectAs(65534) != ECONNREFUSED) ::_exit(12);
    if (!ApplyImdsGuard(*env, true).ok()) ::_exit(13);
    if (!ApplyImdsGuard(*env, true).ok()) ::_exit(14);  // again, as every start of agentd does
    if (ConnectAs(65534) != EHOSTUNREACH) ::_exit(15);
    if (ConnectAs(0) != ECONNREFUSED) ::_exit(16);
    if (!ApplyImdsGuard(*env, false).ok()) ::_exit(17);
    if (ConnectAs(65534) != ECONNREFUSED) ::_exit(18);
    if (!ApplyImdsGuard(*env, false).ok()) ::_exit(19);  // lifting a guard that is not there
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  // 10-11: the namespace; 12: reached before the guard; 13-14: applying it; 15: a user got through; 16: root was
  // stopped; 17, 19: lifting it; 18: a user still stopped once it was lifted.
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace dlagent
