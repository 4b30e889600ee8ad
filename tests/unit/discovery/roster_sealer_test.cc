#include "bootstrap/discovery/roster_sealer.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

using namespace std::chrono;

std::vector<Candidate> Nodes(int n, bool with_master = true) {
  std::vector<Candidate> out;
  for (int i = 0; i < n; ++i) out.push_back({"i-" + std::to_string(100 + i), "10.0.0." + std::to_string(20 - i), 8, with_master && i == 3});
  return out;
}

const MonoTime kStart(hours(1));

TEST(RosterSealerTest, LeaderIsTheMasterElseTheLowestId) {
  EXPECT_EQ(ChooseLeader(Nodes(5)), "i-103");
  EXPECT_EQ(ChooseLeader(Nodes(5, false)), "i-100");
  auto without_first = Nodes(5, false);
  without_first.erase(without_first.begin());
  EXPECT_EQ(ChooseLeader(without_first), "i-101") << "a new leader when the old one dies";
  EXPECT_EQ(ChooseLeader({}), "");
}

TEST(RosterSealerTest, SealsAsSoonAsAllExpectedAreAlive) {
  SealDecision d = DecideSeal({8, 6, minutes(10)}, "demo", 1, "i-103", Nodes(8), {}, kStart, kStart + seconds(5));
  ASSERT_EQ(d.kind, SealDecision::kSealed) << d.reason;
  ASSERT_EQ(d.roster.nodes.size(), 8u);
  EXPECT_EQ(d.roster.nodes[0].instance_id, "i-103") << "master is rank 0";
  EXPECT_EQ(d.roster.nodes[1].ip, "10.0.0.13") << "then by numeric IP";
  EXPECT_EQ(d.roster.generation, 1u);
}

TEST(RosterSealerTest, WaitsWithProgressBeforeTheDeadline) {
  SealDecision d = DecideSeal({10, 6, minutes(10)}, "demo", 1, "i-103", Nodes(8), {}, kStart, kStart + minutes(5) + seconds(48));
  EXPECT_EQ(d.kind, SealDecision::kWaiting);
  EXPECT_EQ(d.reason, "8/10 nodes, deadline in 4m12s");
}

TEST(RosterSealerTest, ShrinksToWhatArrivedAtTheDeadline) {
  SealDecision d = DecideSeal({10, 6, minutes(10)}, "demo", 2, "i-103", Nodes(8), {}, kStart, kStart + minutes(10));
  ASSERT_EQ(d.kind, SealDecision::kSealed) << d.reason;
  EXPECT_EQ(d.roster.nodes.size(), 8u);
  EXPECT_EQ(d.missing, 2u);
  EXPECT_NE(d.reason.find("sealed with 8 of 10 nodes, 2 missing"), std::string::npos) << d.reason;
}

TEST(RosterSealerTest, FailsBelowMinNamingTheMissing) {
  std::set<std::string> seen = {"i-100", "i-101", "i-102", "i-103", "i-104", "i-105", "i-106", "i-107", "i-200", "i-201"};
  SealDecision d = DecideSeal({10, 9, minutes(10)}, "demo", 1, "i-103", Nodes(8), seen, kStart, kStart + minutes(11));
  ASSERT_EQ(d.kind, SealDecision::kFailed);
  EXPECT_EQ(d.missing, 2u);
  EXPECT_EQ(d.gone, (std::vector<std::string>{"i-200", "i-201"}));
  EXPECT_NE(d.reason.find("below min_nodes 9: 2 missing (seen, then lost: i-200, i-201)"), std::string::npos) << d.reason;
}

TEST(RosterSealerTest, ABadCandidateFailsTheSealClearly) {
  auto nodes = Nodes(3);
  nodes[1].ip = "10.0.0.300";
  SealDecision d = DecideSeal({3, 3, minutes(1)}, "demo", 1, "i-103", nodes, {}, kStart, kStart);
  EXPECT_EQ(d.kind, SealDecision::kFailed);
  EXPECT_NE(d.reason.find("not an IPv4 address"), std::string::npos) << d.reason;
}

TEST(RosterSealerTest, PollersAreTheLeaderAndTwoHelpersWhateverTheSize) {
  EXPECT_EQ(ChoosePollers(Nodes(64)), (std::vector<std::string>{"i-103", "i-100", "i-101"}));
  EXPECT_EQ(ChoosePollers(Nodes(2)), (std::vector<std::string>{"i-100", "i-101"}));
  auto nodes = Nodes(64, false);
  EXPECT_EQ(ChoosePollers(nodes), (std::vector<std::string>{"i-100", "i-101", "i-102"}));
  nodes.erase(nodes.begin() + 1);  // a helper died
  EXPECT_EQ(ChoosePollers(nodes), (std::vector<std::string>{"i-100", "i-102", "i-103"}));
  EXPECT_TRUE(ChoosePollers({}).empty());
  EXPECT_EQ(ChoosePollers(Nodes(64), 0).size(), 1u);
}

}  // namespace
}  // namespace dlagent
