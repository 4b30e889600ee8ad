// A GossipNode on loopback against captured packets sent again: each sealed packet and each push-pull state is
// taken once; a copy, or one sealed long ago, is dropped unread and counted.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "bootstrap/membership/gossip_node.h"
#include "bootstrap/membership/swim.h"
#include "tests/support/free_port.h"

namespace dlagent::swim {
namespace {

struct NoTransport : PushPullTransport {
  Result<std::string> Exchange(const std::string&, const std::string&) override { return Status::Unavailable("test", "no peers"); }
};

TEST(GossipReplayTest, CapturedPacketsAndStatesAreTakenOnce) {
  const Keyring ring = *Keyring::Create({{1, std::string(32, 'k')}}, 1, "demo");
  NoTransport transport;
  GossipOptions o;
  o.name = "i-receiver";
  o.bind_host = "127.0.0.1";
  o.port = testing::FreePort();
  auto node = GossipNode::Start(o, ring, &transport);
  ASSERT_TRUE(node.ok()) << node.status().ToString();

  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(o.port));
  ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  auto send = [&](const std::string& p) { ::sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to); };
  const std::string captured = ring.Seal("not a swim message", NowUnixMs());
  for (int i = 0; i < 3; ++i) send(captured);
  send(ring.Seal("not a swim message", NowUnixMs() - 3'600'000));  // an hour old
  for (int i = 0; i < 100 && (*node)->stats().packets_in < 4; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::close(fd);
  GossipStats s = (*node)->stats();
  EXPECT_EQ(s.packets_in, 4u);
  EXPECT_EQ(s.malformed, 1u) << "the first copy is opened (and is not a swim message)";
  EXPECT_EQ(s.replays, 3u) << "two copies and the old packet are dropped unread";

  const std::string state = ring.Seal(EncodeState({}), NowUnixMs());
  EXPECT_TRUE((*node)->HandlePushPull(state).ok());
  Result<std::string> again = (*node)->HandlePushPull(state);
  EXPECT_EQ(again.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(again.status().ToString().find("packet replayed"), std::string::npos) << again.status().ToString();
}

}  // namespace
}  // namespace dlagent::swim
