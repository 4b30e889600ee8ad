#include "bootstrap/common/heartbeat.h"

#include <gtest/gtest.h>

#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

using namespace std::chrono;

TEST(HeartbeatTest, ALoopThatStopsBeatingIsNamedOnceItIsLate) {
  FakeEnv env;
  Heartbeats beats(env);
  auto gossip = beats.Register("gossip");
  auto formation = beats.Register("formation");
  EXPECT_TRUE(beats.Stale(seconds(3)).empty()) << "a new loop has just beaten";
  env.Advance(seconds(2));
  gossip->Beat();
  env.Advance(seconds(2));
  EXPECT_EQ(beats.Stale(seconds(3)), std::vector<std::string>{"formation"});
  formation->Beat();
  EXPECT_TRUE(beats.Stale(seconds(3)).empty());
}

}  // namespace
}  // namespace dlagent
