// NodeJobs's output with real processes: each rank's buffer and what it dropped, the bounds in bytes per rank
// and for the node, and every line reaching the log in order (node_jobs.h).
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "agent/jobs/node_jobs.h"
#include "tests/unit/jobs/node_jobs_testing.h"

namespace dlagent::jobs {
namespace {

using namespace std::chrono;
using namespace node_jobs_testing;

TEST(NodeJobsTest, EachRanksBufferKeepsItsLastLinesAndSaysHowManyWereDropped) {
  NodeJobsOptions o = Options("i-a");
  o.max_lines_per_rank = 100;
  NodeJobs jobs(o);
  // Rank 0 is chatty, rank 1 says one line first: its line stays, in a buffer of its own.
  ASSERT_TRUE(jobs.Start(Start(Spec("j-6", {"sh", "-c", "if [ $DLAGENT_RANK = 1 ]; then echo quiet; else sleep 0.2; seq 1 1000; fi"}), 2)).ok());
  pb::NodeJob j = WaitEnded(jobs, "j-6");
  ASSERT_EQ(j.lines_size(), 101);
  EXPECT_EQ(j.lines(0).text(), "quiet");
  EXPECT_EQ(j.lines(1).text(), "901");
  EXPECT_EQ(j.lines(100).text(), "1000");
  EXPECT_EQ(j.dropped(), 900u);
  // A cursor in the middle: what follows it, nothing dropped.
  pb::QueryRequest q;
  q.set_job("j-6");
  q.set_after_seq(j.lines(50).seq());
  q.set_max_lines(10);
  auto part = jobs.Query(q);
  ASSERT_TRUE(part.ok());
  ASSERT_EQ(part->jobs(0).lines_size(), 10);
  EXPECT_EQ(part->jobs(0).lines(0).text(), j.lines(51).text());
  EXPECT_EQ(part->jobs(0).dropped(), 0u);
  EXPECT_EQ(part->jobs(0).next_seq(), j.lines(61).seq());
}

TEST(NodeJobsTest, OutputWithoutNewlinesIsBoundedInBytesPerRankAndWhatWasDroppedIsCounted) {
  NodeJobsOptions o = Options("i-a");
  o.max_bytes_per_rank = 1 << 20;
  NodeJobs jobs(o);
  // 20 MB without a newline: cut into 16 KiB lines, of which 1 MiB's worth is kept, the latest.
  ASSERT_TRUE(jobs.Start(Start(Spec("j-big", {"sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x"}), 2)).ok());
  ASSERT_TRUE(WaitEnded(jobs, "j-big", seconds(60)).ended());
  const pb::NodeJob j = AllLines(jobs, "j-big");
  size_t text[2] = {0, 0}, held[2] = {0, 0};  // per rank: the text held, and what it costs
  for (const auto& l : j.lines()) {
    text[l.rank()] += l.text().size();
    held[l.rank()] += l.text().size() + NodeJobs::kLineOverhead;
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_LE(held[r], size_t{1} << 20) << "rank " << r;
    EXPECT_GT(held[r], size_t{1} << 19) << "rank " << r;
    EXPECT_GT(j.ranks(r).dropped_lines(), 0u);
    EXPECT_EQ(j.ranks(r).dropped_bytes() + text[r], 20000000u) << "rank " << r << ": every byte is held or counted as dropped";
  }
  EXPECT_EQ(jobs.HeldBytes(), held[0] + held[1]);
  EXPECT_EQ(j.lines(j.lines_size() - 1).text().back(), 'x');
}

TEST(NodeJobsTest, TheNodesOutputIsBoundedInTotalAndJobsThatEndedGiveWayFirst) {
  NodeJobsOptions o = Options("i-a");
  o.max_lines_per_rank = 1000000;
  o.max_bytes_per_rank = 8 << 20;
  o.max_bytes = 10 << 20;
  NodeJobs jobs(o);
  // 100,000 lines of 7 bytes and 64 of overhead each: about 6.8 MiB held, the ranks' own bound not reached.
  const std::vector<std::string> writes = {"sh", "-c", "seq 1000001 1100000"};
  ASSERT_TRUE(jobs.Start(Start(Spec("j-a", writes), 1)).ok());
  WaitEnded(jobs, "j-a", seconds(30));
  pb::NodeJob a = AllLines(jobs, "j-a");
  EXPECT_EQ(a.lines_size(), 100000);
  EXPECT_LE(jobs.HeldBytes(), o.max_bytes);
  // A second job: the ended one's lines go before its own.
  ASSERT_TRUE(jobs.Start(Start(Spec("j-b", writes), 1)).ok());
  WaitEnded(jobs, "j-b", seconds(30));
  pb::NodeJob b = AllLines(jobs, "j-b");
  EXPECT_EQ(b.lines_size(), 100000) << "the node's bound took the ended job's lines, not its own";
  EXPECT_LE(jobs.HeldBytes(), o.max_bytes);
  a = AllLines(jobs, "j-a");
  EXPECT_LT(a.lines_size(), 100000) << "the ended job gave way";
  EXPECT_GT(a.ranks(0).dropped_lines(), 0u);
  // Two running ranks together over the node's bound: each keeps its own latest lines, within it.
  ASSERT_TRUE(jobs.Start(Start(Spec("j-c", writes), 2)).ok());
  WaitEnded(jobs, "j-c", seconds(30));
  pb::NodeJob c = AllLines(jobs, "j-c");
  EXPECT_LE(jobs.HeldBytes(), o.max_bytes);
  std::set<std::string> last;
  for (const auto& l : c.lines()) {
    if (l.text() == "1100000") last.insert(std::to_string(l.rank()));
  }
  EXPECT_EQ(last, (std::set<std::string>{"0", "1"})) << "each rank's latest line is held";
}

TEST(NodeJobsTest, EveryLineReachesTheLogInOrderInRecordsOfManyLines) {
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  sink->set_pattern("%v");
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("test", sink));
  constexpr int kLines = 200000;
  {
    NodeJobsOptions o = Options("i-a");
    o.journal = true;
    NodeJobs jobs(o);
    ASSERT_TRUE(jobs.Start(Start(Spec("j-5", {"seq", "1", std::to_string(kLines)}), 1)).ok());
    EXPECT_EQ(WaitEnded(jobs, "j-5").ranks(0).exit_code(), 0);
  }
  spdlog::set_default_logger(previous);
  // Records of the rank's output: "job j-5 rank 0: " and its lines; every number once, in order.
  std::istringstream log(captured.str());
  int expect = 1, records = 0;
  for (std::string line; std::getline(log, line);) {
    if (line.rfind("job j-5 rank 0: ", 0) == 0) {
      ++records;
      line = line.substr(16);
    } else if (line.empty() || !std::isdigit(static_cast<unsigned char>(line[0]))) {
      continue;  // the agent's own messages
    }
    ASSERT_EQ(line, std::to_string(expect)) << "line " << expect << " lost or out of order";
    ++expect;
  }
  EXPECT_EQ(expect, kLines + 1);
  EXPECT_LT(records, kLines / 100) << "a record a line";
}

}  // namespace
}  // namespace dlagent::jobs
