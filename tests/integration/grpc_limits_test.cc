// The cluster port against a caller without the cluster key: anyone in the security group reaches it. Such a
// caller opens calls whose messages never finish (HTTP/2 DATA up to one byte short of what the message
// declares); before connections had to open with a sealed preamble, gRPC held 2.6 GB for 10 of them. Each
// test runs in a process of its own (ctest), so the process's peak RSS is the test's.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include <gtest/gtest.h>

#include "agent/rpc/cluster_service.h"
#include "tests/support/free_port.h"
#include "tests/support/h2_hold.h"

namespace dlagent {
namespace {

using namespace std::chrono;

size_t PeakRssBytes() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<size_t>(u.ru_maxrss) * 1024;
}

std::shared_ptr<const swim::Keyring> Ring(std::map<uint8_t, std::string> keys, uint8_t primary) {
  auto ring = swim::Keyring::Create(std::move(keys), primary, "test-cluster");
  EXPECT_TRUE(ring.ok()) << ring.status().ToString();
  return std::make_shared<const swim::Keyring>(*ring);
}

class ClusterPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = testing::FreePort();
    ASSERT_GT(port_, 0);
    ClusterHandlers h;
    h.push_pull = [](std::string_view s) -> Result<std::string> { return std::string("echo:") + std::string(s); };
    server_ring_ = Ring({{1, std::string(32, 'a')}, {2, std::string(32, 'b')}}, 1);
    auto server = StartClusterServer("127.0.0.1", port_, h, [this] { return server_ring_; });
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(*server);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(seconds(1));
  }
  std::string Addr() const { return "127.0.0.1:" + std::to_string(port_); }

  int port_ = 0;
  std::shared_ptr<const swim::Keyring> server_ring_;
  std::unique_ptr<ClusterServer> server_;
};

TEST_F(ClusterPortTest, UnfinishedCallsWithoutTheKeyHoldNothingAndMembersAreServedMeanwhile) {
  auto member = NewGrpcClusterClient(seconds(5));
  member->SetKeyring(Ring({{1, std::string(32, 'a')}}, 1));
  ASSERT_TRUE(member->Exchange(Addr(), "warm").ok());
  const size_t before = PeakRssBytes();

  testing::H2HoldOptions o;
  testing::SetTcpLoopback(o, port_);
  o.path = "/dlagent.cluster.v1.Cluster/PushPull";
  o.connections = 10;
  o.streams = 32;
  o.declared = 8 << 20;
  o.duration = milliseconds(3000);
  // First the attack alone, for what it makes the server hold (member calls meanwhile would count their own
  // allocations, which AddressSanitizer's quarantine keeps).
  const testing::H2HoldResult r = testing::HoldIncompleteMessages(o);
  const size_t grew = PeakRssBytes() - before;
  // Then again, with members' calls going on while it runs (one after the other, for as long as it does).
  std::thread attack([&] { testing::HoldIncompleteMessages(o); });
  int served = 0;
  for (auto until = steady_clock::now() + milliseconds(2500); steady_clock::now() < until; ++served) {
    Result<std::string> during = member->Exchange(Addr(), "during");
    ASSERT_TRUE(during.ok()) << during.status().ToString();
    EXPECT_EQ(*during, "echo:during");
  }
  attack.join();
  std::printf("attack: %d connections, %d closed by the server, %zu KB accepted; peak RSS +%zu MB; %d member calls served meanwhile\n", r.connected,
              r.closed_by_server, r.accepted_bytes >> 10, grew >> 20, served);
  EXPECT_EQ(r.closed_by_server, r.connected) << "every connection without the preamble is closed";
  EXPECT_LT(r.accepted_bytes, size_t{10} << 20) << "at most the initial windows' worth was sent into a closing socket";
  EXPECT_LT(grew, size_t{64} << 20) << "the server held " << (grew >> 20) << " MB for callers without the key";
  EXPECT_GT(served, 0);
}

TEST_F(ClusterPortTest, AConnectionMustProveAKeyOfTheClusterFreshAndOnce) {
  // Another cluster's key: refused before gRPC reads anything, so the call fails as unreachable.
  auto stranger = NewGrpcClusterClient(seconds(2));
  stranger->SetKeyring(Ring({{1, std::string(32, 'z')}}, 1));
  Result<std::string> refused = stranger->Exchange(Addr(), "hello");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable) << refused.status().ToString();
  // No preamble at all (plain gRPC): refused too.
  auto plain = NewGrpcClusterClient(seconds(2));
  EXPECT_FALSE(plain->Exchange(Addr(), "hello").ok());
  // The second key of the server's keyring (a rotation under way) is as good as the first.
  auto rotated = NewGrpcClusterClient(seconds(2));
  rotated->SetKeyring(Ring({{2, std::string(32, 'b')}}, 2));
  Result<std::string> ok = rotated->Exchange(Addr(), "hello");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(*ok, "echo:hello");
  // A preamble seen before is refused: record one, then send it twice by hand.
  const std::string sealed = server_ring_->Seal("dlagent cluster connection", swim::NowUnixMs());
  std::string preamble = "DLAC";
  preamble += static_cast<char>(sealed.size() >> 8);
  preamble += static_cast<char>(sealed.size() & 0xff);
  preamble += sealed;
  auto open_with = [&](const std::string& bytes) {
    testing::H2HoldOptions o;
    testing::SetTcpLoopback(o, port_);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&o.addr), o.addr_len), 0);
    EXPECT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    // The server's first bytes: gRPC's SETTINGS when it took the connection; nothing (closed) when refused.
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    const ssize_t n = ::recv(fd, &c, 1, 0);
    ::close(fd);
    return n == 1;
  };
  EXPECT_TRUE(open_with(preamble + "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) << "a fresh preamble is taken";
  EXPECT_FALSE(open_with(preamble + "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) << "the same preamble again is a replay";
  const std::string stale = server_ring_->Seal("dlagent cluster connection", swim::NowUnixMs() - 600'000);
  std::string old = "DLAC";
  old += static_cast<char>(stale.size() >> 8);
  old += static_cast<char>(stale.size() & 0xff);
  EXPECT_FALSE(open_with(old + stale)) << "a preamble sealed 10 minutes ago";
  const std::string other = server_ring_->Seal("something else", swim::NowUnixMs());
  std::string wrong = "DLAC";
  wrong += static_cast<char>(other.size() >> 8);
  wrong += static_cast<char>(other.size() & 0xff);
  EXPECT_FALSE(open_with(wrong + other)) << "another sealed packet of the cluster is no preamble";
}

TEST_F(ClusterPortTest, AMemberReconnectsWhenTheServerClosedItsConnection) {
  auto member = NewGrpcClusterClient(seconds(3));
  member->SetKeyring(Ring({{1, std::string(32, 'a')}}, 1));
  ASSERT_TRUE(member->Exchange(Addr(), "one").ok());
  // The server goes and comes back on the same port: the kept connection is dead, the next call makes another.
  server_->Shutdown(seconds(0));
  ClusterHandlers h;
  h.push_pull = [](std::string_view s) -> Result<std::string> { return std::string("again:") + std::string(s); };
  auto server = StartClusterServer("127.0.0.1", port_, h, [this] { return server_ring_; });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  server_ = std::move(*server);
  Result<std::string> r = member->Exchange(Addr(), "two");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "again:two");
}

}  // namespace
}  // namespace dlagent
