// Small simulated clusters with fixed seeds: the protocol's behaviour as a user would notice it.
#include "bootstrap/membership/swim.h"

#include <gtest/gtest.h>

#include "tests/sim/swim_sim.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using swim::MemberState;
using testing::SimConfig;
using testing::SwimSim;

bool AllSee(SwimSim& sim, int subject, MemberState s) {
  for (int i = 0; i < sim.size(); ++i) {
    if (i != subject && sim.up(i) && sim.View(i, subject) != s) return false;
  }
  return true;
}

bool Converged(SwimSim& sim) {
  for (int i = 0; i < sim.size(); ++i) {
    if (sim.up(i) && !AllSee(sim, i, MemberState::kAlive)) return false;
  }
  return true;
}

TEST(SwimTest, MembersJoiningOneByOneConverge) {
  SwimSim sim({.seed = 1}, swim::SwimConfig::Lan());
  for (int i = 0; i < 10; ++i) sim.Add();
  auto t = sim.RunUntil([&] { return Converged(sim); }, seconds(10));
  ASSERT_TRUE(t.has_value()) << "10 members did not converge in 10 s";
  for (int i = 0; i < 10; ++i) EXPECT_EQ(sim.node(i).NumActive(), 10u);
}

TEST(SwimTest, CrashedMemberIsDeclaredDeadByEveryone) {
  SwimSim sim({.seed = 2}, swim::SwimConfig::Lan());
  sim.AddMany(10);
  ASSERT_TRUE(sim.RunUntil([&] { return Converged(sim); }, seconds(10)));
  sim.Crash(3);
  auto suspect = sim.RunUntil([&] { return sim.CountViews(3, MemberState::kSuspect) + sim.CountViews(3, MemberState::kDead) > 0; }, seconds(5));
  ASSERT_TRUE(suspect.has_value()) << "nobody suspected the crashed member";
  auto dead = sim.RunUntil([&] { return AllSee(sim, 3, MemberState::kDead); }, seconds(30));
  ASSERT_TRUE(dead.has_value()) << "not every member declared it dead within 30 s";
  // LAN profile, N=10: suspicion lasts at least 4 s; detection within about 20 s.
  EXPECT_GE(*suspect + *dead, seconds(4));
  for (int i = 0; i < sim.size(); ++i) {
    if (i != 3) {
      EXPECT_EQ(sim.node(i).NumActive(), 9u);
    }
  }
}

TEST(SwimTest, GracefulLeaveIsSeenAsLeft) {
  SwimSim sim({.seed = 3}, swim::SwimConfig::Lan());
  sim.AddMany(8);
  ASSERT_TRUE(sim.RunUntil([&] { return Converged(sim); }, seconds(10)));
  sim.node(5).Leave(sim.now());
  auto t = sim.RunUntil([&] { return AllSee(sim, 5, MemberState::kLeft); }, seconds(5));
  ASSERT_TRUE(t.has_value()) << "the leave did not spread in 5 s";
  EXPECT_LT(*t, seconds(2));
}

TEST(SwimTest, SuspectedMemberRefutesAndStaysAlive) {
  SwimSim sim({.seed = 4}, swim::SwimConfig::Lan());
  sim.AddMany(10);
  ASSERT_TRUE(sim.RunUntil([&] { return Converged(sim); }, seconds(10)));
  const uint32_t before = sim.node(2).incarnation();
  sim.Pause(2);
  ASSERT_TRUE(sim.RunUntil([&] { return sim.CountViews(2, MemberState::kSuspect) > 0; }, seconds(5))) << "pause went unnoticed";
  sim.Resume(2);
  ASSERT_TRUE(sim.RunUntil([&] { return AllSee(sim, 2, MemberState::kAlive); }, seconds(10)));
  EXPECT_GT(sim.node(2).incarnation(), before) << "alive again only by refuting with a higher incarnation";
  EXPECT_EQ(sim.CountViews(2, MemberState::kDead), 0);
}

TEST(SwimTest, RestartedMemberRejoinsWithAHigherIncarnation) {
  SwimSim sim({.seed = 5}, swim::SwimConfig::Lan());
  sim.AddMany(8);
  ASSERT_TRUE(sim.RunUntil([&] { return Converged(sim); }, seconds(10)));
  sim.Crash(6);
  ASSERT_TRUE(sim.RunUntil([&] { return AllSee(sim, 6, MemberState::kDead); }, seconds(40)));
  const uint32_t dead_incarnation = sim.node(0).Find("n6")->incarnation;
  sim.Restart(6);
  ASSERT_TRUE(sim.RunUntil([&] { return AllSee(sim, 6, MemberState::kAlive); }, seconds(10))) << "restarted member not back";
  EXPECT_GT(sim.node(6).incarnation(), dead_incarnation);
  EXPECT_GE(sim.node(0).Find("n6")->flaps, 1u);
}

TEST(SwimTest, HealedPartitionMergesBack) {
  SwimSim sim({.seed = 6}, swim::SwimConfig::Lan());
  sim.AddMany(12);
  ASSERT_TRUE(sim.RunUntil([&] { return Converged(sim); }, seconds(10)));
  for (int i = 6; i < 12; ++i) sim.SetGroup(i, 1);
  // Member 0's own side (5 others) still sees it alive; the other side (6) declares it dead.
  ASSERT_TRUE(sim.RunUntil([&] { return sim.CountViews(0, MemberState::kDead) == 6; }, seconds(60))) << "each side should declare the other dead";
  EXPECT_EQ(sim.CountViews(0, MemberState::kAlive), 5);
  sim.Heal();
  auto t = sim.RunUntil([&] { return Converged(sim); }, seconds(60));
  ASSERT_TRUE(t.has_value()) << "partition did not re-merge within 60 s of healing";
}

TEST(SwimTest, NoFalseDeathsUnderModerateLoss) {
  SwimSim sim({.loss = 0.10, .seed = 7}, swim::SwimConfig::Lan());
  sim.AddMany(20);
  ASSERT_TRUE(sim.RunUntil([&] { return Converged(sim); }, seconds(20)));
  sim.Run(minutes(3));
  for (int i = 0; i < sim.size(); ++i) EXPECT_EQ(sim.CountViews(i, MemberState::kDead), 0) << "n" << i << " falsely declared dead";
}

TEST(SwimTest, MalformedPacketChangesNothing) {
  swim::Swim s(swim::SwimConfig::Lan(), "n0", "a0", "", 1, MonoTime(hours(1)));
  EXPECT_FALSE(s.OnPacket("\x05\x00garbage", MonoTime(hours(1))).ok());
  EXPECT_EQ(s.Members().size(), 1u);
}

}  // namespace
}  // namespace dlagent
