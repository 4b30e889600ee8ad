#include "agent/rpc/control_server.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <sstream>

#include <gtest/gtest.h>

#include "agent/ctl/commands.h"
#include "agent/ctl/control_client.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

class FakeHandler : public ControlHandler {
 public:
  StatusSnapshot GetStatus() override {
    ++calls;
    StatusSnapshot s;
    s.phase = AgentPhase::kServing;
    s.phase_detail = "serving agentctl";
    s.version = "9.9.9";
    s.cluster_name = "unit";
    s.identity.instance_id = "i-0123456789abcdef0";
    s.identity.gpu_count = 8;
    s.uptime_ms = 61000;
    return s;
  }
  MemberListSnapshot ListMembers() override {
    MemberListSnapshot l;
    l.enabled = true;
    for (int i = 0; i < extra_members; ++i) {
      l.members.push_back({"i-" + std::to_string(100000 + i), "10.1.0.1:7946", "alive", "worker", "us-east-1a", "0.1.0", 8, 1, 0, 5000});
    }
    l.members.push_back({"i-a", "10.0.0.1:7946", "alive", "master", "us-east-1a", "0.1.0", 8, 3, 0, 1200});
    l.members.push_back({"i-b", "10.0.0.2:7946", "dead", "worker", "us-east-1b", "0.1.0", 8, 5, 2, 61000});
    l.counters = {120, 90, 1, 7, 2, 4, 0, 0};
    return l;
  }
  std::atomic<int> calls{0};
  int extra_members = 0;
};

class ControlServerTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  FakeHandler handler_;
  std::string sock_ = dir_.Join("run/agentd.sock");
};

TEST_F(ControlServerTest, ServesStatusOverTheSocket) {
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  struct stat st;
  ASSERT_EQ(::stat(sock_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  auto client = ControlClient::Connect(sock_, seconds(5));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  Result<StatusSnapshot> status = (*client)->GetStatus();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->identity.instance_id, "i-0123456789abcdef0");
  EXPECT_EQ(status->identity.gpu_count, 8u);
  EXPECT_EQ(status->cluster_name, "unit");
  EXPECT_EQ(*(*client)->GetVersion(), "9.9.9");
  EXPECT_EQ(handler_.calls.load(), 2);

  (*server)->Shutdown(seconds(1));
  EXPECT_NE(::access(sock_.c_str(), F_OK), 0) << "socket file left after shutdown";
}

TEST_F(ControlServerTest, ManyConcurrentClients) {
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(server.ok());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        auto c = ControlClient::Connect(sock_, seconds(5));
        if (c.ok() && (*c)->GetStatus().ok()) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 80);
}

TEST_F(ControlServerTest, SecondServerOnALiveSocketIsRefused) {
  auto first = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(first.ok());
  auto second = StartControlServer({sock_, ""}, &handler_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(second.status().ToString().find("another agentd is already serving on " + sock_), std::string::npos);
  // The first one still serves.
  EXPECT_TRUE((*ControlClient::Connect(sock_, seconds(5)))->GetStatus().ok());
}

TEST_F(ControlServerTest, StaleSocketFileIsReplaced) {
  ASSERT_EQ(::mkdir(dir_.Join("run").c_str(), 0755), 0);
  // A socket bound and closed without unlink: what a crashed agent leaves.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, sock_.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);

  std::ostringstream out, err;
  CtlOptions opts;
  opts.socket = sock_;
  EXPECT_EQ(RunStatus(opts, out, err), 1);
  EXPECT_NE(err.str().find("exists but nothing listens on it"), std::string::npos) << err.str();

  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_EQ(RunStatus(opts, out, err), 0);
}

TEST_F(ControlServerTest, RefusesToReplaceARegularFile) {
  ASSERT_EQ(::mkdir(dir_.Join("run").c_str(), 0755), 0);
  dir_.Write("run/agentd.sock", "not a socket");
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().ToString().find("is not a socket"), std::string::npos);
  EXPECT_EQ(dir_.Read("run/agentd.sock"), "not a socket");
}

// Whoever can write to the socket's directory could unlink the socket and bind their own in its place.
TEST_F(ControlServerTest, RefusesADirectoryOthersCanWriteToOrALink) {
  ASSERT_EQ(::mkdir(dir_.Join("run").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(dir_.Join("run").c_str(), 01777), 0);
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().ToString().find("socket directory " + dir_.Join("run") + " is writable by others (mode 1777)"), std::string::npos)
      << server.status().ToString();
  ASSERT_EQ(::mkdir(dir_.Join("real").c_str(), 0755), 0);
  ASSERT_EQ(::symlink(dir_.Join("real").c_str(), dir_.Join("link").c_str()), 0);
  server = StartControlServer({dir_.Join("link/agentd.sock"), ""}, &handler_);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().ToString().find("is not a directory (a link?)"), std::string::npos) << server.status().ToString();
}

// Whoever can write to a directory above the socket's can rename the socket's directory away after agentd
// checked it and put their own in its place: refused, unless the directory is sticky (as /tmp is).
TEST_F(ControlServerTest, RefusesADirectoryInsideOneOthersCanWriteTo) {
  ASSERT_EQ(::mkdir(dir_.Join("open").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(dir_.Join("open").c_str(), 0777), 0);
  auto server = StartControlServer({dir_.Join("open/run/agentd.sock"), ""}, &handler_);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().ToString().find("is inside " + dir_.Join("open") + ", which others can write to"), std::string::npos)
      << server.status().ToString();
  ASSERT_EQ(::chmod(dir_.Join("open").c_str(), 01777), 0);
  server = StartControlServer({dir_.Join("open/run/agentd.sock"), ""}, &handler_);
  EXPECT_TRUE(server.ok()) << "a sticky directory above is fine: " << server.status().ToString();
}

// agentctl checks who serves the socket before it sends anything: a server of another user (one that took the
// socket's path over) gets nothing, and the error says so.
TEST_F(ControlServerTest, AgentctlRefusesAServerOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a server run as nobody)";
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // nobody reaches the directory
  ASSERT_EQ(::mkdir(dir_.Join("run").c_str(), 0777), 0);
  ASSERT_EQ(::chmod(dir_.Join("run").c_str(), 0777), 0);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // As nobody: listen on the agent's socket path and record whether anything arrives.
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, sock_.c_str(), sizeof a.sun_path - 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) ::_exit(4);
    (void)!::write(ready[1], "r", 1);
    for (;;) {
      int c = ::accept(fd, nullptr, nullptr);
      char b[64];
      if (c >= 0 && ::read(c, b, sizeof b) > 0) ::_exit(5);  // it received bytes meant for the agent
      if (c >= 0) ::close(c);
    }
  }
  ::close(ready[1]);
  char r = 0;
  ASSERT_EQ(::read(ready[0], &r, 1), 1) << "the stranger's server did not start";
  ::close(ready[0]);
  std::ostringstream out, err;
  CtlOptions opts;
  opts.socket = sock_;
  EXPECT_EQ(RunStatus(opts, out, err), 1);
  EXPECT_NE(err.str().find("runs as uid 65534, neither root nor you: refusing to talk to it"), std::string::npos) << err.str();
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status)) << "the stranger's server exited " << WEXITSTATUS(status) << " (5: it received a request)";
}

TEST_F(ControlServerTest, AUserPastTheirConnectionLimitIsRefusedAndRootStillServed) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a client run as nobody)";
  ControlServerOptions o{sock_, "nogroup"};
  o.max_connections_per_user = 16;
  auto server = StartControlServer(o, &handler_);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // nobody reaches the socket (its group lets them in)
  ASSERT_EQ(::chmod(dir_.Join("run").c_str(), 0755), 0);
  int report[2], done[2];
  ASSERT_EQ(::pipe(report), 0);
  ASSERT_EQ(::pipe(done), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // As nobody: 24 connections held open; each either gets gRPC's first frame (taken) or is closed (refused).
    ::close(report[0]);
    ::close(done[1]);  // so that the parent's close is seen
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    char taken = 0, refused = 0;
    std::vector<int> held;
    for (int i = 0; i < 24; ++i) {
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::strncpy(a.sun_path, sock_.c_str(), sizeof a.sun_path - 1);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) ::_exit(4);
      const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
      (void)!::send(fd, preface, sizeof preface - 1, MSG_NOSIGNAL);  // a refused one may be closed already
      timeval tv{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char b;
      const ssize_t n = ::read(fd, &b, 1);
      if (n == 1) ++taken;
      if (n == 0 || (n < 0 && errno != EAGAIN)) ++refused;  // closed (or reset, having been written to)
      held.push_back(fd);
    }
    const char counts[2] = {taken, refused};
    (void)!::write(report[1], counts, 2);
    char wait;
    (void)!::read(done[0], &wait, 1);
    ::_exit(0);
  }
  ::close(report[1]);
  ::close(done[0]);
  char counts[2] = {0, 0};
  ASSERT_EQ(::read(report[0], counts, 2), 2);
  EXPECT_EQ(counts[0], 16) << "connections of nobody taken";
  EXPECT_EQ(counts[1], 8) << "connections of nobody refused";
  // Root, meanwhile, is served.
  auto client = ControlClient::Connect(sock_, seconds(5));
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_TRUE((*client)->GetStatus().ok());
  ::close(done[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ::close(report[0]);
}

TEST_F(ControlServerTest, AgentctlSaysWhenNoAgentRuns) {
  std::ostringstream out, err;
  CtlOptions opts;
  opts.socket = sock_;
  EXPECT_EQ(RunStatus(opts, out, err), 1);
  EXPECT_EQ(err.str(), "agentctl: agentd is not running: no socket at " + sock_ + "\n");
  EXPECT_EQ(out.str(), "");
}

TEST_F(ControlServerTest, AgentctlStatusTextAndJson) {
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(server.ok());
  std::ostringstream out, err;
  CtlOptions opts;
  opts.socket = sock_;
  ASSERT_EQ(RunStatus(opts, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("agentd 9.9.9"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("up 1m01s"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("i-0123456789abcdef0"), std::string::npos) << out.str();
  std::ostringstream json;
  opts.json = true;
  ASSERT_EQ(RunStatus(opts, json, err), 0);
  EXPECT_NE(json.str().find("\"instance_id\": \"i-0123456789abcdef0\""), std::string::npos) << json.str();
  EXPECT_NE(json.str().find("\"uptime_ms\": 61000"), std::string::npos) << json.str();
  opts.timeout = "soon";
  EXPECT_EQ(RunStatus(opts, json, err), 1);
  EXPECT_NE(err.str().find("\"soon\" is not a duration"), std::string::npos) << err.str();
}

TEST_F(ControlServerTest, AgentctlMembersFiltersAndExitCodes) {
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(server.ok());
  CtlOptions opts;
  opts.socket = sock_;
  std::ostringstream out, err;
  ASSERT_EQ(RunMembers(opts, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("i-a"), std::string::npos);
  EXPECT_NE(out.str().find("i-b"), std::string::npos);
  EXPECT_NE(out.str().find("1m01s"), std::string::npos) << out.str();
  std::ostringstream alive;
  opts.status_filter = "alive|suspect";
  ASSERT_EQ(RunMembers(opts, alive, err), 0);
  EXPECT_EQ(alive.str().find("i-b"), std::string::npos) << alive.str();
  std::ostringstream none;
  opts.status_filter = "";
  opts.role_filter = "scheduler";
  EXPECT_EQ(RunMembers(opts, none, err), 2) << "nothing matches";
  std::ostringstream json;
  opts.role_filter = "worker";
  opts.json = true;
  ASSERT_EQ(RunMembers(opts, json, err), 0);
  EXPECT_NE(json.str().find("\"status\": \"dead\""), std::string::npos) << json.str();
  EXPECT_EQ(json.str().find("i-a"), std::string::npos);
  std::ostringstream table;  // the counters travel through the codec and end the table
  opts.json = false;
  opts.role_filter = "";
  ASSERT_EQ(RunMembers(opts, table, err), 0);
  EXPECT_NE(table.str().find("gossip: 120 packets in, 90 out; dropped unread: 1 failed authentication, 7 replayed or stale, 2 malformed"),
            std::string::npos)
      << table.str();
  opts.status_filter = "(";
  std::ostringstream bad_err;
  EXPECT_EQ(RunMembers(opts, json, bad_err), 2);
  EXPECT_NE(bad_err.str().find("not a regular expression"), std::string::npos);
}

TEST_F(ControlServerTest, MembersOfAThousandAnswerWellUnder100ms) {
  handler_.extra_members = 1000;
  auto server = StartControlServer({sock_, ""}, &handler_);
  ASSERT_TRUE(server.ok());
  CtlOptions opts;
  opts.socket = sock_;
  std::ostringstream warm, err;
  ASSERT_EQ(RunMembers(opts, warm, err), 0);
  const auto start = std::chrono::steady_clock::now();
  std::ostringstream out;
  ASSERT_EQ(RunMembers(opts, out, err), 0);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::milliseconds(100));
  const std::string text = out.str();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1004);  // header + 1002 rows + the gossip counters
}

}  // namespace
}  // namespace dlagent
