// A dlps-server process against peers that mean harm, as agentd's shard is reachable by every host of its
// network: a job size that cannot be allocated, connections that say "DLPS" and nothing more, and pulls that
// wait forever. Each must leave the server alive, small and serving.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "agent/ps/client.h"
#include "agent/ps/frame.h"
#include "tests/support/dlps_job.h"

namespace dlagent::ps {
namespace {

using namespace std::chrono;

// A field of /proc/PID/status ("Threads", "VmRSS"), as a number.
long ProcStatus(int pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

struct HostileTest : ::testing::Test {
  testing::TempDir dir;
  testing::DlpsServers servers{dir, 1, 0};  // as agentd runs it: each job sized by its workers
  int pid() const { return servers.procs[0]->pid(); }

  int Connect() {
    Result<int> fd = ConnectTcp(servers.addresses[0], milliseconds(2000));
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    timeval tv{5, 0};
    if (fd.ok()) ::setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd.ok() ? *fd : -1;
  }
  void SendHello(int fd, uint32_t num_workers) {
    Hello hello;
    hello.num_workers = num_workers;
    iovec iov{&hello, sizeof hello};
    ASSERT_TRUE(WriteAll(fd, &iov, 1).ok());
  }
  // After the hostile part: the server runs and a proper worker trains on it.
  void ExpectServing() {
    ASSERT_FALSE(servers.procs[0]->Wait(milliseconds(100)).has_value()) << "the server died";
    PsClientOptions o;
    o.servers = servers.addresses;
    o.deadline = seconds(10);
    auto c = PsClient::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    std::vector<float> w(4, 1.0f), g(4, 2.0f);
    ASSERT_TRUE((*c)->Init(1, w.size(), w.data(), {}).ok());
    Status st = (*c)->Wait((*c)->PushPull(1, g.data(), w.data(), w.size()));
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(w, g);
  }
};

TEST_F(HostileTest, AJobTooLargeToAllocateIsRefusedNamingTheLimit) {
  ASSERT_TRUE(servers.ok());
  const int fd = Connect();
  SendHello(fd, 0xffffffff);
  Frame reply;
  ASSERT_TRUE(ReadFull(fd, &reply, sizeof reply).ok());
  ASSERT_EQ(reply.op, Op::kError);
  std::string message(reply.bytes, '\0');
  ASSERT_TRUE(ReadFull(fd, message.data(), message.size()).ok());
  EXPECT_NE(message.find("a job of 4294967295 workers is over the limit of 4096"), std::string::npos) << message;
  ::close(fd);
  ExpectServing();
}

TEST_F(HostileTest, SilentConnectionsHoldNoThreadsAndAreBounded) {
  ASSERT_TRUE(servers.ok());
  const long threads0 = ProcStatus(pid(), "Threads");
  std::vector<int> silent;
  for (int i = 0; i < 300; ++i) {  // more than the server keeps undecided
    const int fd = Connect();
    iovec iov{const_cast<char*>("DLPS"), 4};
    ASSERT_TRUE(WriteAll(fd, &iov, 1).ok());
    silent.push_back(fd);
  }
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_LT(ProcStatus(pid(), "Threads") - threads0, 10) << "a connection that has not sent its whole Hello has no thread";
  const int open_fds = [&] {
    int n = 0;
    for (int i = 0; i < 4096; ++i) n += ::access(("/proc/" + std::to_string(pid()) + "/fd/" + std::to_string(i)).c_str(), F_OK) == 0;
    return n;
  }();
  EXPECT_LT(open_fds, 290) << "past 256 undecided connections the server closes the oldest";
  ExpectServing();
  for (int fd : silent) ::close(fd);
}

TEST_F(HostileTest, RequestsThatWaitForeverAreBoundedPerConnection) {
  ASSERT_TRUE(servers.ok());
  const int fd = Connect();
  SendHello(fd, 1);
  Hello ack;
  ASSERT_TRUE(ReadFull(fd, &ack, sizeof ack).ok());
  {  // a real key of the job, declared on the same connection
    InitBody body;
    body.length = 1;
    Frame init{.op = Op::kInit, .key = 7, .id = 1, .bytes = sizeof body};
    iovec iov[2] = {{&init, sizeof init}, {&body, sizeof body}};
    ASSERT_TRUE(WriteAll(fd, iov, 2).ok());
    Frame reply;
    ASSERT_TRUE(ReadFull(fd, &reply, sizeof reply).ok());
    ASSERT_EQ(reply.op, Op::kControlReply);
    ASSERT_EQ(reply.bytes, 0u);
  }
  const long rss0 = ProcStatus(pid(), "VmRSS");
  // Pulls of a version that never comes: each would wait in the server for as long as the connection lasts.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::vector<Frame> batch(4096);
  for (auto& f : batch) f.op = Op::kPull, f.key = 7, f.version = ~uint64_t{0};
  size_t sent = 0;
  const auto until = steady_clock::now() + seconds(3);
  while (sent < 1'000'000 * sizeof(Frame) && steady_clock::now() < until) {
    const ssize_t n = ::send(fd, reinterpret_cast<const char*>(batch.data()) + sent % sizeof(Frame),
                             batch.size() * sizeof(Frame) - sent % sizeof(Frame), MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 50);
    } else {
      break;
    }
  }
  std::this_thread::sleep_for(milliseconds(300));
  const long grown_kb = ProcStatus(pid(), "VmRSS") - rss0;
  std::printf("sent %zu pulls in 3 s at most; the server grew by %ld KiB\n", sent / sizeof(Frame), grown_kb);
  EXPECT_LT(grown_kb, 12 * 1024) << "the server keeps what " << sent / sizeof(Frame) << " waiting pulls need";
  // Its unread requests keep a plain close's FIN queued behind them: reset the connection instead.
  linger reset{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
  ::close(fd);
  std::this_thread::sleep_for(milliseconds(500));  // a connection held at its bound sees a reset within 200 ms
  ExpectServing();
}

}  // namespace
}  // namespace dlagent::ps
