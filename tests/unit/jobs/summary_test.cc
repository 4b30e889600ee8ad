// Summarize: a job's state, exit code and failure from its nodes' parts, as every node says it.
#include "agent/jobs/summary.h"

#include <signal.h>

#include <gtest/gtest.h>

namespace dlagent::jobs {
namespace {

// A rank as a node reports it. ended_ms 0: still running.
struct Rank {
  uint32_t rank;
  int exit_code = 0;
  int signal = 0;
  bool stopped = false;
  int64_t ended_ms = 100;
  bool running = false;
};

pb::NodeJob Part(const std::vector<Rank>& ranks, const std::string& failure = "", bool killed = false) {
  pb::NodeJob j;
  for (const Rank& r : ranks) {
    pb::RankState* s = j.add_ranks();
    s->set_rank(r.rank);
    s->set_running(r.running);
    s->set_exit_code(r.exit_code);
    s->set_signal(r.signal);
    s->set_stopped(r.stopped);
    s->set_ended_unix_ms(r.running ? 0 : r.ended_ms);
  }
  j.set_failure(failure);
  j.set_killed(killed);
  return j;
}

pb::JobSpec Spec(uint32_t ranks) {
  pb::JobSpec s;
  s.set_id("j-1");
  s.set_name("train");
  s.set_num_ranks(ranks);
  s.add_nodes("i-a");
  s.add_nodes("i-b");
  s.set_created_unix_ms(10);
  return s;
}

struct Case {
  const char* what;
  std::vector<Rank> a, b;  // node i-a's ranks, node i-b's ranks
  bool b_answers = true;
  bool b_lost = false;
  Decision decision;
  std::string state;
  int exit_code;
  std::string failure;  // "" : none
  uint32_t running, exited;
  std::string b_failure = "";  // why node i-b stopped the job on its own ("" : it did not)
};

TEST(SummarizeTest, StateExitCodeAndFailureFromTheParts) {
  const Case cases[] = {
      {"every rank exited 0", {{0}}, {{1, 0, 0, false, 250}}, true, false, {}, "succeeded", 0, "", 0, 2},
      {"one rank still runs", {{0}}, {{1, 0, 0, false, 0, true}}, true, false, {}, "running", 0, "", 1, 1},
      {"a node has not answered yet", {{0}}, {}, false, false, {}, "running", 0, "", 0, 1},
      {"the first failure gives the code, not the rank stopped after it",
       {{0, 0, SIGTERM, true, 300}},
       {{1, 3, 0, false, 200}},
       true,
       false,
       {},
       "failed",
       3,
       "rank 1 on i-b exited with 3",
       0,
       2},
      {"of two failures, the earlier",
       {{0, 2, 0, false, 150}},
       {{1, 3, 0, false, 120}},
       true,
       false,
       {},
       "failed",
       3,
       "rank 1 on i-b exited with 3",
       0,
       2},
      {"a rank killed by a signal",
       {{0, 0, SIGKILL, false, 120}},
       {{1}},
       true,
       false,
       {},
       "failed",
       128 + SIGKILL,
       "rank 0 on i-a was killed by SIGKILL",
       0,
       2},
      {"killed, ranks still stopping",
       {{0, 0, 0, false, 0, true}},
       {{1, 0, SIGTERM, true}},
       true,
       false,
       {"killed by root", 0, true},
       "stopping",
       128 + SIGTERM,
       "killed by root",
       1,
       1},
      {"killed, every rank gone",
       {{0, 0, SIGTERM, true}},
       {{1, 0, SIGTERM, true}},
       true,
       false,
       {"killed by root", 0, true},
       "killed",
       128 + SIGTERM,
       "killed by root",
       0,
       2},
      {"a lost node's ranks count as ended",
       {{0, 0, SIGTERM, true}},
       {},
       false,
       true,
       {"node i-b was lost", 255},
       "failed",
       255,
       "node i-b was lost",
       0,
       2},
      {"a launcher's helper keeps the job running", {{0}, {2, 0, 0, false, 0, true}}, {{1}}, true, false, {}, "running", 0, "", 0, 2},
      {"a node's own failure without a decision",
       {{0, 0, SIGTERM, true}},
       {{1, 0, SIGTERM, true}},
       true,
       false,
       {},
       "failed",
       1,
       "the timeout passed",
       0,
       2,
       "the timeout passed"},
  };
  for (const Case& c : cases) {
    const pb::NodeJob a = Part(c.a);
    const pb::NodeJob b = Part(c.b, c.b_failure);
    std::vector<NodePart> parts = {{"i-a", &a, false}, {"i-b", c.b_answers ? &b : nullptr, c.b_lost}};
    const pb::JobSummary s = Summarize(Spec(2), parts, c.decision);
    EXPECT_EQ(JobStateName(s.state()), c.state) << c.what;
    EXPECT_EQ(s.exit_code(), c.exit_code) << c.what;
    EXPECT_EQ(s.failure(), c.failure) << c.what;
    EXPECT_EQ(s.running(), c.running) << c.what;
    EXPECT_EQ(s.exited(), c.exited) << c.what;
    EXPECT_EQ(Terminal(s), c.state == "succeeded" || c.state == "failed" || c.state == "killed") << c.what;
    if (Terminal(s)) {
      EXPECT_GT(s.ended_unix_ms(), 0) << c.what;
    }
  }
}

TEST(SummarizeTest, RankExitsAreInRankOrderWithTheirNodes) {
  const pb::NodeJob a = Part({{2, 0, 0, false, 0, true}, {0}});
  pb::NodeJob b = Part({{1, 3}});
  b.mutable_ranks(0)->set_dropped_lines(7);
  b.mutable_ranks(0)->set_dropped_bytes(700);
  const pb::JobSummary s = Summarize(Spec(3), {{"i-a", &a, false}, {"i-b", &b, false}}, {});
  ASSERT_EQ(s.rank_exits_size(), 3);
  EXPECT_EQ(s.rank_exits(0).rank(), 0u);
  EXPECT_EQ(s.rank_exits(1).node(), "i-b");
  EXPECT_EQ(s.rank_exits(1).exit_code(), 3);
  EXPECT_EQ(s.rank_exits(1).dropped_lines(), 7u);
  EXPECT_EQ(s.rank_exits(1).dropped_bytes(), 700u);
  EXPECT_EQ(s.rank_exits(0).dropped_lines(), 0u);
  EXPECT_TRUE(s.rank_exits(2).running());
  EXPECT_EQ(s.name(), "train");
  EXPECT_EQ(s.started_unix_ms(), 10);
}

TEST(JobListTest, ACommandIsShortenedForListsAndTheSpecLosesItsEnvironment) {
  pb::JobSpec spec = Spec(1);
  spec.add_argv("python3");
  spec.add_argv(std::string(2000, 'x'));
  spec.add_argv("--last");
  spec.add_env("SECRET=1");
  Brief(&spec);
  ASSERT_EQ(spec.argv_size(), 2);
  EXPECT_EQ(spec.argv(0), "python3");
  EXPECT_EQ(spec.argv(1), std::string(kListArgvBytes - 7, 'x'));
  EXPECT_TRUE(spec.argv_cut());
  EXPECT_EQ(spec.env_size(), 0);
  EXPECT_TRUE(Summarize(spec, {}, {}).argv_cut()) << "the summary says so too";
  // A command that fits is left whole.
  pb::JobSummary fits;
  fits.add_argv("sleep");
  fits.add_argv("30");
  Brief(&fits);
  EXPECT_EQ(fits.argv_size(), 2);
  EXPECT_FALSE(fits.argv_cut());
}

pb::JobList Jobs(int n, size_t argv_bytes = 10) {
  pb::JobList all;
  for (int i = 0; i < n; ++i) {
    pb::JobSummary* s = all.add_jobs();
    s->set_id("j-" + std::to_string(1000 + i));
    s->set_started_unix_ms(1000 + i / 2);  // two jobs started in each millisecond
    s->add_argv(std::string(argv_bytes, 'a'));
  }
  all.add_unreachable("i-dead");
  return all;
}

TEST(JobListTest, PagesHoldEveryJobOnceInOrderWithinTheirBounds) {
  std::vector<std::string> seen;
  std::string after;
  int pages = 0;
  do {
    Result<pb::JobList> page = ListPage(Jobs(250), after, 0);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    EXPECT_LE(page->jobs_size(), 100);
    EXPECT_EQ(page->unreachable_size(), 1);
    for (const pb::JobSummary& s : page->jobs()) seen.push_back(s.id());
    after = page->next();
    ++pages;
  } while (!after.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(seen.size(), 250u);
  for (int i = 0; i < 250; ++i) EXPECT_EQ(seen[i], "j-" + std::to_string(1000 + i));
  // A limit of its own, and at most 1,000.
  EXPECT_EQ(ListPage(Jobs(250), "", 7)->jobs_size(), 7);
  EXPECT_EQ(ListPage(Jobs(1500), "", 5000)->jobs_size(), 1000);
  // Bytes: 100 jobs of 100 KB do not fit a page of about 1 MiB; one job always does.
  Result<pb::JobList> big = ListPage(Jobs(100, 100'000), "", 0);
  EXPECT_EQ(big->jobs_size(), 10);
  EXPECT_LE(big->ByteSizeLong(), kListPageBytes + 1024);
  EXPECT_EQ(ListPage(Jobs(3, 2 << 20), "", 0)->jobs_size(), 1);
}

TEST(JobListTest, APageFollowsItsCursorEvenWhenThatJobHasGoneAndRefusesAForgedOne) {
  Result<pb::JobList> first = ListPage(Jobs(10), "", 4);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->next(), "1001.j-1003");
  pb::JobList fewer = Jobs(10);
  fewer.mutable_jobs()->DeleteSubrange(3, 1);  // j-1003 is gone
  Result<pb::JobList> second = ListPage(fewer, first->next(), 4);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->jobs(0).id(), "j-1004");
  EXPECT_TRUE(ListPage(Jobs(10), "1004.j-1009", 4)->next().empty()) << "the last page";
  EXPECT_EQ(ListPage(Jobs(10), "1004.j-1009", 4)->jobs_size(), 0);
  for (const std::string bad : {"garbage", ".j-1", "12x.j-1"}) {
    Result<pb::JobList> r = ListPage(Jobs(10), bad, 0);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("is not a job list cursor"), std::string::npos) << r.status().ToString();
  }
}

}  // namespace
}  // namespace dlagent::jobs
