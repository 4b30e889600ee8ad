#include "agent/ps/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include <numeric>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace dlagent::ps {
namespace {

TEST(FrameTest, WriteAllSendsEveryByteOfManyIovecsThroughASmallBuffer) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const int small = 4096;
  ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);  // every sendmsg is partial
  std::vector<char> a(100000), b(3), c(250000);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 7);
  std::iota(c.begin(), c.end(), 3);
  std::vector<char> got(a.size() + b.size() + c.size());
  std::thread reader([&] { EXPECT_TRUE(ReadFull(fds[1], got.data(), got.size()).ok()); });
  iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  ASSERT_TRUE(WriteAll(fds[0], iov, 3).ok());
  reader.join();
  std::vector<char> want = a;
  want.insert(want.end(), b.begin(), b.end());
  want.insert(want.end(), c.begin(), c.end());
  EXPECT_EQ(got, want);

  // The peer gone: reading says the connection closed, writing fails instead of raising SIGPIPE.
  ::close(fds[0]);
  char byte;
  Status st = ReadFull(fds[1], &byte, 1);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_NE(st.ToString().find("connection closed"), std::string::npos) << st.ToString();
  iovec one{&byte, 1};
  EXPECT_FALSE(WriteAll(fds[1], &one, 1).ok());
  ::close(fds[1]);
}

TEST(FrameTest, AReceiveTimeoutIsADeadlineNotAHang) {
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  timeval tv{0, 50000};
  ::setsockopt(fds[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[8];
  EXPECT_EQ(ReadFull(fds[1], buf, sizeof buf).code(), StatusCode::kDeadlineExceeded);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(FrameTest, SplitsHostAndPort) {
  std::string host, port;
  ASSERT_TRUE(SplitHostPort("10.0.0.1:7070", &host, &port).ok());
  EXPECT_EQ(host, "10.0.0.1");
  EXPECT_EQ(port, "7070");
  ASSERT_TRUE(SplitHostPort("[::1]:80", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  ASSERT_TRUE(SplitHostPort("0.0.0.0:1", &host, &port).ok());
  EXPECT_EQ(host, "") << "any address";
  for (const char* bad : {"7070", "host:", ""}) EXPECT_FALSE(SplitHostPort(bad, &host, &port).ok()) << bad;
  EXPECT_FALSE(ConnectTcp("127.0.0.1:not-a-port", std::chrono::milliseconds(500)).ok());  // resolved locally: no DNS
}

}  // namespace
}  // namespace dlagent::ps
