// NodeJobs with real processes on this machine: ranks started, their ends and bounds, stops, orphans and the
// next attempt of a job (their output: node_jobs_output_test.cc; the Coordinator over several NodeJobs:
// coordinator_test.cc).
#include "agent/jobs/node_jobs.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "agent/jobs/rank_env.h"
#include "tests/support/temp_dir.h"
#include "tests/unit/jobs/node_jobs_testing.h"

namespace dlagent::jobs {
namespace {

using namespace std::chrono;
using namespace node_jobs_testing;

// A process's state letter from /proc (R, S, Z...), or 0 when there is no such process.
char ProcState(int pid) {
  FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (!f) return 0;
  char state = 0;
  if (std::fscanf(f, "%*d (%*[^)]) %c", &state) != 1) state = 0;
  std::fclose(f);
  return state;
}

TEST(NodeJobsTest, RanksGetTheirEnvironmentAndTheirOutputIsKeptLineByLine) {
  NodeJobs jobs(Options("i-a"));
  auto spec = Spec("j-1", {"sh", "-c", "echo rank=$DLAGENT_RANK node=$FROM_NODE extra=$EXTRA; printf 'no newline'; echo oops >&2"});
  spec.add_env("EXTRA=1");
  ASSERT_TRUE(jobs.Start(Start(spec, 2)).ok());
  pb::NodeJob j = WaitEnded(jobs, "j-1");
  ASSERT_EQ(j.ranks_size(), 2);
  for (const auto& r : j.ranks()) {
    EXPECT_FALSE(r.running());
    EXPECT_EQ(r.exit_code(), 0);
  }
  std::map<std::string, int> seen;
  for (const auto& l : j.lines()) ++seen[std::to_string(l.rank()) + (l.stderr() ? " err " : " out ") + l.text()];
  EXPECT_EQ(seen["0 out rank=0 node=yes extra=1"], 1);
  EXPECT_EQ(seen["1 out rank=1 node=yes extra=1"], 1);
  EXPECT_EQ(seen["1 out no newline"], 1);
  EXPECT_EQ(seen["0 err oops"], 1);
  // The cursor: nothing after the last line.
  pb::QueryRequest q;
  q.set_job("j-1");
  q.set_after_seq(j.next_seq() - 1);
  q.set_max_lines(100);
  EXPECT_EQ(jobs.Query(q)->jobs(0).lines_size(), 0);
}

TEST(NodeJobsTest, AFailingRankStopsItsSiblingsAndOneIgnoringSigtermIsKilledAfterTheGrace) {
  NodeJobs jobs(Options("i-a"));
  // Rank 0 fails at once; rank 1 ignores SIGTERM; rank 2 sleeps.
  auto spec = Spec("j-2", {"sh", "-c", "case $DLAGENT_RANK in 0) sleep 0.2; exit 3;; 1) trap '' TERM; sleep 30;; *) sleep 30;; esac"}, 500);
  const auto start = steady_clock::now();
  ASSERT_TRUE(jobs.Start(Start(spec, 3)).ok());
  pb::NodeJob j = WaitEnded(jobs, "j-2");
  EXPECT_LT(steady_clock::now() - start, seconds(5));
  EXPECT_EQ(j.ranks(0).exit_code(), 3);
  EXPECT_FALSE(j.ranks(0).stopped());
  EXPECT_EQ(j.ranks(1).signal(), SIGKILL);
  EXPECT_TRUE(j.ranks(1).stopped());
  EXPECT_EQ(j.ranks(2).signal(), SIGTERM);
  EXPECT_EQ(j.failure(), "rank 0 on i-a exited with 3");
}

TEST(NodeJobsTest, AKillThatFindsTheRanksStoppedByTheSameKillCountsThem) {
  // A kill from agentctl on another node reaches this node both directly and through the coordinator, in
  // either order: both answers count the ranks it stopped.
  NodeJobs jobs(Options("i-a"));
  ASSERT_TRUE(jobs.Start(Start(Spec("j-k", {"sleep", "30"}), 2)).ok());
  pb::SignalRequest kill;
  kill.set_job("j-k");
  kill.set_signal(SIGTERM);
  kill.set_escalate(true);
  kill.set_reason("killed with SIGTERM by uid 0 on i-b");
  kill.set_killed(true);
  Result<pb::SignalReply> first = jobs.Signal(kill);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->signalled(), 2u);
  EXPECT_EQ(WaitEnded(jobs, "j-k").failure(), "killed with SIGTERM by uid 0 on i-b");
  Result<pb::SignalReply> again = jobs.Signal(kill);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->signalled(), 2u);
  // A signal that is not a kill (a sibling's failure passed on) reaches only ranks still running.
  kill.set_killed(false);
  EXPECT_EQ(jobs.Signal(kill)->signalled(), 0u);
  // A job that ended by itself is not reported as reached by a later kill.
  ASSERT_TRUE(jobs.Start(Start(Spec("j-done", {"true"}), 1)).ok());
  WaitEnded(jobs, "j-done");
  kill.set_job("j-done");
  kill.set_killed(true);
  EXPECT_EQ(jobs.Signal(kill)->signalled(), 0u);
}

TEST(NodeJobsTest, APreparedJobLivesHereBeforeItStartsSoOtherNodesRanksCanReachItsShard) {
  // Every node is prepared before any starts; another node's ranks may reach this node's dlps shard before
  // this node's start arrives, and must find the job alive (with its user) then.
  NodeJobs jobs(Options("i-a"));
  EXPECT_FALSE(jobs.Live("j-p", seconds(60)));
  EXPECT_FALSE(jobs.Owner("j-p").has_value());
  pb::PrepareRequest prepare;
  *prepare.mutable_spec() = Spec("j-p", {"sleep", "30"});
  ASSERT_TRUE(jobs.Prepare(prepare).ok());
  EXPECT_TRUE(jobs.Live("j-p", seconds(60)));
  ASSERT_TRUE(jobs.Owner("j-p").has_value());
  EXPECT_EQ(*jobs.Owner("j-p"), ::geteuid());
  EXPECT_FALSE(jobs.Live("j-other", seconds(60)));
}

TEST(NodeJobsTest, StartIsAllOrNothingAndNamesWhatIsWrong) {
  NodeJobs jobs(Options("i-a"));
  auto missing = jobs.Start(Start(Spec("j-3", {"no-such-program-here"}), 1));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no-such-program-here"), std::string::npos);
  auto spec = Spec("j-4", {"true"});
  spec.set_workdir("/no/such/dir");
  auto bad_dir = jobs.Start(Start(spec, 1));
  ASSERT_FALSE(bad_dir.ok());
  EXPECT_NE(bad_dir.status().message().find("/no/such/dir"), std::string::npos);
  pb::PrepareRequest p;
  *p.mutable_spec() = Spec("j-5", {"no-such-program-here"});
  EXPECT_EQ(jobs.Prepare(p).status().code(), StatusCode::kNotFound);
  *p.mutable_spec() = Spec("j-5", {"sh"});
  p.set_ports(3);
  auto ports = jobs.Prepare(p);
  ASSERT_TRUE(ports.ok());
  ASSERT_EQ(ports->ports_size(), 3);
  EXPECT_NE(ports->ports(0), ports->ports(1));
  pb::QueryRequest all;
  EXPECT_EQ(jobs.Query(all)->jobs_size(), 0);  // nothing of the failed starts is left
}

TEST(NodeJobsTest, AUserLearnsNothingOfPathsTheyCannotReach) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a job of another user)";
  NodeJobs jobs(Options("i-a"));
  char dir[] = "/tmp/node-jobs-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);  // 0700 root: nobody may not enter it
  const std::string secret = std::string(dir) + "/secret";
  ASSERT_EQ(::mkdir(secret.c_str(), 0755), 0);
  const std::string tool = secret + "/tool";
  {
    FILE* f = std::fopen(tool.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("#!/bin/sh\n", f);
    std::fclose(f);
    ASSERT_EQ(::chmod(tool.c_str(), 0755), 0);
  }
  auto as_nobody = [](pb::JobSpec s) {
    s.set_uid(65534);
    s.set_gid(65534);
    s.set_user("nobody");
    return s;
  };
  auto prepare = [&](const pb::JobSpec& s) {
    pb::PrepareRequest p;
    *p.mutable_spec() = s;
    return jobs.Prepare(p).status();
  };
  // A directory that exists but is not theirs answers as one that does not exist.
  pb::JobSpec in_secret = as_nobody(Spec("j-p1", {"true"}));
  in_secret.set_workdir(secret);
  pb::JobSpec in_missing = as_nobody(Spec("j-p2", {"true"}));
  in_missing.set_workdir(std::string(dir) + "/missing");
  const Status a = prepare(in_secret), b = prepare(in_missing);
  EXPECT_EQ(a.code(), StatusCode::kNotFound) << a.ToString();
  EXPECT_EQ(b.code(), a.code());
  std::string shape = a.ToString();
  shape.replace(shape.find(secret), secret.size(), std::string(dir) + "/missing");
  EXPECT_EQ(shape, b.ToString()) << "the two answers differ only in the path asked about";
  // A program that exists where they cannot reach, and one that does not exist: one answer.
  const Status c = prepare(as_nobody(Spec("j-p3", {tool}))), d = prepare(as_nobody(Spec("j-p4", {secret + "/none"})));
  EXPECT_EQ(c.code(), StatusCode::kNotFound) << c.ToString();
  std::string shape2 = c.ToString();
  shape2.replace(shape2.find(tool), tool.size(), secret + "/none");
  EXPECT_EQ(shape2, d.ToString());
  // Root reaches both.
  pb::JobSpec as_root = Spec("j-p5", {tool});
  as_root.set_workdir(secret);
  EXPECT_TRUE(prepare(as_root).ok());
  std::filesystem::remove_all(dir);
}

TEST(NodeJobsTest, AnExitedRankStaysAZombieUntilItsJobEndsSoItsGroupIdCannotBeReused) {
  NodeJobs jobs(Options("i-a"));
  char dir[] = "/tmp/node-jobs-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string pidfile = std::string(dir) + "/helper";
  // The rank starts a helper in a session of its own that keeps its output open, and exits once it runs.
  auto spec = Spec("j-z",
                   {"sh", "-c",
                    "setsid sh -c 'echo $$ > " + pidfile + ".tmp; mv " + pidfile + ".tmp " + pidfile + "; exec sleep 30' & while [ ! -e " + pidfile +
                        " ]; do sleep 0.01; done"},
                   300);
  auto started = jobs.Start(Start(spec, 1));
  ASSERT_TRUE(started.ok());
  const int rank_pid = started->ranks(0).pid();
  pb::QueryRequest q;
  q.set_job("j-z");
  for (auto until = steady_clock::now() + seconds(10); jobs.Query(q)->jobs(0).ranks(0).running() && steady_clock::now() < until;)
    std::this_thread::sleep_for(milliseconds(10));
  pb::NodeJob j = jobs.Query(q)->jobs(0);
  ASSERT_FALSE(j.ranks(0).running());
  ASSERT_FALSE(j.ended()) << "the helper holds the output for the grace and more";
  EXPECT_EQ(ProcState(rank_pid), 'Z') << "the exited rank's pid is held while its job may still be signalled";
  // The helper escaped the group's signals; its output is let go and the job ends, then the zombie goes.
  j = WaitEnded(jobs, "j-z");
  EXPECT_TRUE(j.ended());
  EXPECT_EQ(ProcState(rank_pid), 0) << "reaped once the job ended";
  int helper = 0;
  if (FILE* f = std::fopen(pidfile.c_str(), "r")) {
    if (std::fscanf(f, "%d", &helper) != 1) helper = 0;
    std::fclose(f);
  }
  ASSERT_GT(helper, 0);
  EXPECT_NE(ProcState(helper), 0) << "the escaped helper is a separate matter (a job's cgroup)";
  ::kill(helper, SIGKILL);
  std::filesystem::remove_all(dir);
}

TEST(NodeJobsTest, OnlyTheLatestFinishedJobsAreKept) {
  NodeJobsOptions o = Options("i-a");
  o.keep_finished = 2;
  NodeJobs jobs(o);
  for (const char* id : {"j-1", "j-2", "j-3", "j-4"}) {
    ASSERT_TRUE(jobs.Start(Start(Spec(id, {"true"}), 1)).ok());
    WaitEnded(jobs, id);  // so they end one after the other, and Forget has run when it says so
  }
  std::set<std::string> kept;
  Result<pb::QueryReply> all = jobs.Query(pb::QueryRequest());
  ASSERT_TRUE(all.ok());
  for (const pb::NodeJob& j : all->jobs()) kept.insert(j.spec().id());
  EXPECT_EQ(kept, (std::set<std::string>{"j-3", "j-4"}));
}

TEST(NodeJobsTest, RanksOfAJobWhoseCoordinatorIsGoneAreStopped) {
  std::atomic<bool> coordinator_gone{false};
  NodeJobsOptions o = Options("i-b");
  o.gone = [&](const std::string& id) { return id == "i-a" && coordinator_gone.load(); };
  NodeJobs jobs(o);
  pb::JobSpec spec = Spec("j-7", {"sleep", "30"}, 500);
  spec.set_coordinator("i-a");
  ASSERT_TRUE(jobs.Start(Start(spec, 2)).ok());
  std::this_thread::sleep_for(milliseconds(1200));
  pb::QueryRequest q;
  q.set_job("j-7");
  EXPECT_TRUE(jobs.Query(q)->jobs(0).ranks(0).running()) << "stopped while its coordinator lives";
  coordinator_gone = true;
  pb::NodeJob j = WaitEnded(jobs, "j-7", seconds(5));
  EXPECT_EQ(j.ranks(0).signal(), SIGTERM);
  EXPECT_EQ(j.failure(), "the job's coordinator i-a died or left the cluster");
}

TEST(NodeJobsTest, AnEndedJobStartsAgainAsItsNextAttemptWithTheCountAndTheCheckpointDirectory) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (the checkpoint directory's parent must be root's)";
  testing::TempDir efs;
  NodeJobsOptions o = Options("i-a");
  o.base_env = [&] { return std::vector<std::string>{"PATH=/usr/bin:/bin", "EFS_MOUNT=" + efs.path()}; };
  NodeJobs jobs(o);
  auto wait_lines = [&](int n) {  // the ranks have said what they were started with
    pb::QueryRequest q;
    q.set_job("j-9");
    q.set_max_lines(100);
    for (const auto until = steady_clock::now() + seconds(10); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(10))) {
      if (jobs.Query(q)->jobs(0).lines_size() >= n) return;
    }
    ADD_FAILURE() << "fewer than " << n << " lines";
  };
  pb::JobSpec spec = Spec("j-9", {"sh", "-c", "echo $DLAGENT_RESTART_COUNT $DLAGENT_JOB_CHECKPOINT_DIR; exec sleep 30"});
  spec.set_max_restarts(1);  // a job that restarts gets a checkpoint directory
  ASSERT_TRUE(jobs.Start(Start(spec, 1)).ok());
  spec.set_attempt(1);
  Result<pb::StartReply> early = jobs.Start(Start(spec, 1));
  ASSERT_EQ(early.status().code(), StatusCode::kFailedPrecondition) << early.status().ToString();
  EXPECT_EQ(early.status().message(), "job j-9 still has ranks of attempt 0 on i-a");
  pb::SignalRequest stop;
  stop.set_job("j-9");
  stop.set_signal(SIGTERM);
  stop.set_reason("rank 0 failed");
  wait_lines(1);
  ASSERT_TRUE(jobs.Signal(stop).ok());
  EXPECT_EQ(WaitEnded(jobs, "j-9").failure(), "rank 0 failed");
  ASSERT_TRUE(jobs.Start(Start(spec, 1)).ok());
  pb::QueryRequest q;
  q.set_job("j-9");
  q.set_max_lines(100);
  pb::NodeJob now = jobs.Query(q)->jobs(0);
  EXPECT_EQ(now.failure(), "") << "a new attempt starts with no failure";
  ASSERT_EQ(now.ranks_size(), 1) << "only the attempt's ranks are told";
  EXPECT_EQ(now.ranks(0).attempt(), 1u);
  EXPECT_TRUE(now.ranks(0).running());
  wait_lines(2);
  ASSERT_TRUE(jobs.Signal(stop).ok());
  pb::NodeJob ended = WaitEnded(jobs, "j-9");
  const std::string dir = efs.path() + "/dlagent-jobs/j-9";
  ASSERT_EQ(ended.lines_size(), 2);
  EXPECT_EQ(ended.lines(0).text(), "0 " + dir);
  EXPECT_EQ(ended.lines(1).text(), "1 " + dir);
  EXPECT_TRUE(std::filesystem::is_directory(dir));
}

}  // namespace
}  // namespace dlagent::jobs
