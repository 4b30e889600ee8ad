// The Coordinator with real processes on this machine: several NodeJobs stand for the nodes (each its own
// "instance"), and a JobNodes that calls them directly stands for the sealed RPC. Runs, failures, kills,
// restarts, a coordinator taken over, and the fan-out's bound.
#include "agent/jobs/coordinator.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "agent/jobs/job_rpc.h"
#include "agent/jobs/node_jobs.h"
#include "agent/jobs/restart.h"
#include "tests/support/temp_dir.h"

namespace dlagent::jobs {
namespace {

using namespace std::chrono;

// The coordinator's JobNodes: NodeJobs of several "nodes" reached directly.
class LocalNodes : public JobNodes {
 public:
  // n nodes, the first `in_roster` of them (all: -1) in the roster.
  explicit LocalNodes(int n, int in_roster = -1) {
    for (int i = 0; i < n; ++i) {
      NodeJobsOptions o;
      o.node = "i-" + std::to_string(i);
      o.journal = false;
      o.base_env = [] { return std::vector<std::string>{"PATH=/usr/bin:/bin"}; };
      o.gone = [this](const std::string& id) { return Gone(id); };
      o.report = [this, i](const std::vector<pb::NodeJob>& parts) { Push(i, parts); };
      jobs_.push_back(std::make_unique<NodeJobs>(o));
      endpoints_.push_back(std::make_unique<NodeEndpoint>(*jobs_.back(), nullptr));
      if (in_roster < 0 || i < in_roster) roster_.push_back({"i-" + std::to_string(i), "127.0.0.1", "node" + std::to_string(i), 1});
    }
  }
  Result<pb::NodeReply> Call(const std::string& id, const std::string&, const pb::NodeRequest& req) override {
    const int i = std::stoi(id.substr(2));
    if (down_ == i) return Status::Unavailable("test", "node down");
    return endpoints_[i]->Dispatch(req);
  }
  bool Gone(const std::string& id) override { return down_ == std::stoi(id.substr(2)); }
  std::function<std::vector<JobNode>()> RosterFn() {
    return [this] { return Roster(); };
  }
  std::vector<JobNode> Roster() override {
    MutexLock lock(mu_);
    return roster_;
  }
  std::vector<pb::JobSpec> Orphans() override { return jobs_[self_]->Orphans(); }
  // Where the nodes push their parts (the Reporter's part, without its retries); null: nowhere.
  void PushTo(Coordinator* c) {
    MutexLock lock(push_mu_);
    push_to_ = c;
  }
  void Push(int node, const std::vector<pb::NodeJob>& parts) {
    MutexLock lock(push_mu_);
    if (!push_to_ || down_ == node) return;
    for (const pb::NodeJob& p : parts) (void)push_to_->Report("i-" + std::to_string(node), p);
  }
  // A node that joins the roster (an instance that replaced a lost one); it must be one of the n made.
  void Join(int i) {
    MutexLock lock(mu_);
    roster_.push_back({"i-" + std::to_string(i), "127.0.0.1", "node" + std::to_string(i), 1});
  }
  std::vector<std::unique_ptr<NodeJobs>> jobs_;
  std::vector<std::unique_ptr<NodeEndpoint>> endpoints_;
  Mutex mu_;
  std::vector<JobNode> roster_ GUARDED_BY(mu_);
  std::atomic<int> down_{-1};
  Mutex push_mu_;
  Coordinator* push_to_ GUARDED_BY(push_mu_) = nullptr;
  int self_ = 0;  // the node whose agent the coordinator is (Orphans)
};

Result<pb::JobSummary> WaitDone(Coordinator& c, const std::string& id, seconds limit = seconds(10)) {
  const auto until = steady_clock::now() + limit;
  for (;;) {
    Result<pb::JobSummary> s = c.Summary(id);
    if (!s.ok() || Terminal(*s) || steady_clock::now() > until) return s;
    std::this_thread::sleep_for(milliseconds(20));
  }
}

CoordinatorOptions Coord() {
  CoordinatorOptions o;
  o.self = "i-0";
  o.self_addr = "node0";
  // The nodes' pushes and gossip's gone nodes drive the jobs: the slow round asks only at the start.
  o.tick_interval = milliseconds(20);
  o.round_interval = hours(1);
  return o;
}

// A coordinator its nodes push to, detached before it goes.
struct Pushed {
  Pushed(LocalNodes& nodes, CoordinatorOptions o) : nodes(nodes), c(nodes, std::move(o)) { nodes.PushTo(&c); }
  ~Pushed() { nodes.PushTo(nullptr); }
  Coordinator* operator->() { return &c; }
  Coordinator& operator*() { return c; }
  LocalNodes& nodes;
  Coordinator c;
};

pb::RunJobRequest Request(const std::vector<std::string>& argv) {
  pb::RunJobRequest r;
  for (auto& a : argv) r.add_argv(a);
  r.set_per_node(1);
  r.set_grace_ms(500);
  return r;
}

TEST(CoordinatorTest, ARankFailingOnOneNodeStopsTheOthersAndTheJobExitsWithItsCode) {
  LocalNodes nodes(3);
  Pushed pushed_c(nodes, Coord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  auto started = c.Run(Request({"sh", "-c", "if [ $DLAGENT_RANK = 1 ]; then exit 7; fi; sleep 30"}), me, nodes.RosterFn());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  EXPECT_EQ(started->ranks(), 3u);
  auto done = WaitDone(c, started->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(done->exit_code(), 7);
  EXPECT_EQ(done->failure(), "rank 1 on i-1 exited with 7");
  EXPECT_EQ(done->running(), 0u);
}

TEST(CoordinatorTest, ALostNodeFailsTheJobWith255AndKillEndsOneKilled) {
  LocalNodes nodes(3);
  Pushed pushed_c(nodes, Coord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  auto a = c.Run(Request({"sleep", "30"}), me, nodes.RosterFn());
  ASSERT_TRUE(a.ok());
  nodes.down_ = 2;
  auto done = WaitDone(c, a->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(done->exit_code(), 255);
  EXPECT_EQ(done->failure(), "node i-2 died or left the cluster");
  nodes.down_ = -1;
  nodes.jobs_[2]->StopAll("test", seconds(2));

  auto b = c.Run(Request({"sleep", "30"}), me, nodes.RosterFn());
  ASSERT_TRUE(b.ok());
  Caller stranger{me.uid + 1, me.gid, {}, 0};
  if (me.uid != 0) {
    EXPECT_EQ(c.Kill(b->id(), SIGTERM, stranger).status().code(), StatusCode::kPermissionDenied);
  }
  auto n = c.Kill(b->id(), SIGTERM, me);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 3u);
  done = WaitDone(c, b->id());
  EXPECT_EQ(done->state(), pb::JOB_STATE_KILLED);
  EXPECT_EQ(done->exit_code(), 128 + SIGTERM);
}

TEST(CoordinatorTest, AJobWhoseRanksEndBeforeTheStartReturnsEndsByTheirPushes) {
  LocalNodes nodes(3);
  Pushed pushed_c(nodes, Coord());  // no round after the first: pushes alone
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  auto started = c.Run(Request({"true"}), me, nodes.RosterFn());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  auto done = WaitDone(c, started->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_SUCCEEDED) << done->DebugString();
  EXPECT_GE(c.counters().reports, 3u) << "every node pushed its part";
}

TEST(CoordinatorTest, WithoutPushesTheSlowRoundAloneEndsAJob) {
  LocalNodes nodes(3);  // no PushTo: every push is lost
  CoordinatorOptions o = Coord();
  o.round_interval = milliseconds(50);
  Coordinator c(nodes, o);
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  auto started = c.Run(Request({"sh", "-c", "[ $DLAGENT_RANK = 2 ] && exit 4; exec sleep 30"}), me, nodes.RosterFn());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  auto done = WaitDone(c, started->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_FAILED) << done->DebugString();
  EXPECT_EQ(done->exit_code(), 4);
  EXPECT_EQ(c.counters().reports, 0u);
  EXPECT_GT(c.counters().rounds, 0u);
}

TEST(CoordinatorTest, NothingStartsWhenOneNodeCannotAndSelectionsAreChecked) {
  LocalNodes nodes(3);
  Pushed pushed_c(nodes, Coord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  nodes.down_ = 1;
  auto r = c.Run(Request({"sleep", "30"}), me, nodes.RosterFn());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nothing started"), std::string::npos);
  for (auto& j : nodes.jobs_) EXPECT_EQ(j->Query(pb::QueryRequest())->jobs_size(), 0);
  nodes.down_ = -1;
  auto sel = SelectNodes(nodes.RosterFn()(), {"0,2"});
  ASSERT_TRUE(sel.ok());
  ASSERT_EQ(sel->size(), 2u);
  EXPECT_EQ((*sel)[1].instance_id, "i-2");
  EXPECT_EQ(SelectNodes(nodes.RosterFn()(), {"1-2"})->size(), 2u);
  EXPECT_EQ(SelectNodes(nodes.RosterFn()(), {"i-1"})->size(), 1u);
  EXPECT_FALSE(SelectNodes(nodes.RosterFn()(), {"7"}).ok());
  pb::RunJobRequest other_user = Request({"true"});
  other_user.set_user("root");
  Caller stranger{me.uid + 1, me.gid, {}, 0};
  EXPECT_EQ(c.Run(other_user, stranger, nodes.RosterFn()).status().code(), StatusCode::kPermissionDenied);
  pb::RunJobRequest bad_env = Request({"true"});
  bad_env.add_env("NOEQUALS");
  EXPECT_EQ(c.Run(bad_env, me, nodes.RosterFn()).status().code(), StatusCode::kInvalidArgument);
}

TEST(CoordinatorTest, AFanOutCallsEveryNodeOnceWithAFewThreadsAtATime) {
  constexpr size_t kNodes = 40, kThreads = 4;
  std::vector<std::atomic<int>> called(kNodes);
  std::atomic<size_t> inside{0}, most{0};
  std::mutex mu;
  std::condition_variable cv;
  size_t arrived = 0;
  ForEachConcurrently(
      kNodes,
      [&](size_t i) {
        const size_t now = ++inside;
        for (size_t m = most.load(); now > m && !most.compare_exchange_weak(m, now);) {
        }
        if (i < kThreads) {  // the first calls wait for one another: kThreads of them run at once
          std::unique_lock<std::mutex> lock(mu);
          ++arrived;
          cv.notify_all();
          EXPECT_TRUE(cv.wait_for(lock, seconds(10), [&] { return arrived >= kThreads; })) << "the calls did not run at once";
        }
        ++called[i];
        --inside;
      },
      kThreads);
  for (size_t i = 0; i < kNodes; ++i) EXPECT_EQ(called[i].load(), 1) << i;
  EXPECT_EQ(most.load(), kThreads);
}

TEST(RestartTest, ARestartsReasonIsBoundedForItTravelsWithTheSpec) {
  EXPECT_EQ(RestartRecord(2, "rank 0 on i-0 exited with 3", 1).reason(), "rank 0 on i-0 exited with 3");
  const pb::JobRestart long_one = RestartRecord(0, std::string(100000, 'x'), 1);
  EXPECT_EQ(long_one.reason().size(), kMaxRestartReasonBytes);
  EXPECT_EQ(long_one.reason().substr(kMaxRestartReasonBytes - 3), "...");
  EXPECT_EQ(long_one.attempt(), 0u);
  EXPECT_EQ(long_one.unix_ms(), 1);
}

CoordinatorOptions RestartingCoord() {
  CoordinatorOptions o = Coord();
  o.restart_wait = milliseconds(600);
  o.restart_retry = milliseconds(50);
  return o;
}

TEST(CoordinatorTest, ARankThatFailsRestartsEveryRankAndTheNextAttemptSucceeds) {
  LocalNodes nodes(3);
  Pushed pushed_c(nodes, RestartingCoord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  // Attempt 0: rank 1 fails once the others have said which attempt they run (a rank stopped before its echo
  // would say nothing), and they run on until stopped; attempt 1 ends well everywhere.
  testing::TempDir said;
  const std::string rank1 =
      "for i in $(seq 1000); do [ -e " + said.Join("0") + " ] && [ -e " + said.Join("2") + " ] && break; sleep 0.01; done; exit 7";
  pb::RunJobRequest req = Request({"sh", "-c",
                                   "echo attempt $DLAGENT_RESTART_COUNT; [ $DLAGENT_RESTART_COUNT = 1 ] && exit 0; "
                                   "[ $DLAGENT_RANK = 1 ] && { " +
                                       rank1 + "; }; touch " + said.Join("$DLAGENT_RANK") + "; exec sleep 30"});
  req.set_restarts(2);
  auto started = c.Run(req, me, nodes.RosterFn());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  auto done = WaitDone(c, started->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_SUCCEEDED) << done->DebugString();
  EXPECT_EQ(done->exit_code(), 0);
  EXPECT_EQ(done->attempt(), 1u);
  ASSERT_EQ(done->restarts_size(), 1);
  EXPECT_EQ(done->restarts(0).attempt(), 0u);
  EXPECT_EQ(done->restarts(0).reason(), "rank 1 on i-1 exited with 7");
  EXPECT_EQ(done->restarts(0).nodes(), 3u);
  ASSERT_EQ(done->rank_exits_size(), 3);  // the last attempt's
  for (const pb::RankExit& e : done->rank_exits()) EXPECT_EQ(e.exit_code(), 0) << e.DebugString();
  // Both attempts' output stays on each node, in order.
  pb::QueryRequest q;
  q.set_job(started->id());
  q.set_max_lines(100);
  auto part = nodes.jobs_[0]->Query(q);
  ASSERT_TRUE(part.ok());
  std::vector<std::string> lines;
  for (const pb::LogLine& l : part->jobs(0).lines()) lines.push_back(l.text());
  EXPECT_EQ(lines, (std::vector<std::string>{"attempt 0", "attempt 1"}));
}

TEST(CoordinatorTest, ARankFailingEveryTimeUsesUpTheRestartsAndTheJobSaysHowManyTimes) {
  LocalNodes nodes(2);
  Pushed pushed_c(nodes, RestartingCoord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  pb::RunJobRequest req = Request({"sh", "-c", "[ $DLAGENT_RANK = 0 ] && exit 3; exec sleep 30"});
  req.set_restarts(2);
  auto started = c.Run(req, me, nodes.RosterFn());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  auto done = WaitDone(c, started->id(), seconds(20));
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_FAILED) << done->DebugString();
  EXPECT_EQ(done->exit_code(), 3);
  EXPECT_EQ(done->attempt(), 2u);
  EXPECT_EQ(done->restarts_size(), 2);
  EXPECT_EQ(done->failure(), "rank 0 on i-0 exited with 3; it failed 3 times, with every restart used (--restarts 2)");
}

TEST(CoordinatorTest, ALostNodeRestartsTheJobOnTheOthersAndAJoinedNodeIsTakenAtTheNextRestart) {
  LocalNodes nodes(4, 3);  // i-3 is not in the roster yet
  Pushed pushed_c(nodes, RestartingCoord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  // Attempt 0 runs until i-2 is lost; attempt 1 fails on rank 0; attempt 2 ends well.
  pb::RunJobRequest req =
      Request({"sh", "-c", "case $DLAGENT_RESTART_COUNT in 2) exit 0;; 1) [ $DLAGENT_RANK = 0 ] && exit 5;; esac; exec sleep 30"});
  req.set_restarts(2);
  req.set_min_nodes(2);
  auto started = c.Run(req, me, nodes.RosterFn());
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  nodes.down_ = 2;
  nodes.Join(3);
  auto done = WaitDone(c, started->id(), seconds(20));
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_SUCCEEDED) << done->DebugString();
  EXPECT_EQ(done->attempt(), 2u);
  ASSERT_EQ(done->restarts_size(), 2);
  EXPECT_EQ(done->restarts(0).reason(), "node i-2 died or left the cluster");
  EXPECT_EQ(done->restarts(0).nodes(), 3u);  // i-0, i-1 and i-3, which joined
  EXPECT_EQ(done->restarts(1).reason(), "rank 0 on i-0 exited with 5");
  EXPECT_EQ(done->nodes(), 3u);
  std::set<std::string> ran;
  for (const pb::RankExit& e : done->rank_exits()) ran.insert(e.node());
  EXPECT_EQ(ran, (std::set<std::string>{"i-0", "i-1", "i-3"}));
  nodes.down_ = -1;
  nodes.jobs_[2]->StopAll("test", seconds(2));
}

TEST(CoordinatorTest, WhenTheCoordinatorIsGoneTheFirstLiveNodeOfTheJobTakesItOverAndRestartsIt) {
  LocalNodes nodes(3);
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  pb::RunJobRequest req = Request({"sh", "-c", "[ $DLAGENT_RESTART_COUNT = 1 ] && exit 0; exec sleep 30"});
  req.set_restarts(1);
  req.set_min_nodes(2);
  std::string id;
  {
    Pushed pushed_first(nodes, RestartingCoord());  // i-0's
    Coordinator& first = *pushed_first;
    auto started = first.Run(req, me, nodes.RosterFn());
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    id = started->id();
  }
  nodes.down_ = 0;  // i-0 and its agent are gone
  nodes.self_ = 1;
  CoordinatorOptions o = RestartingCoord();
  o.self = "i-1";
  o.self_addr = "node1";
  Pushed pushed_second(nodes, o);
  Coordinator& second = *pushed_second;
  const auto until = steady_clock::now() + seconds(10);
  while (!second.Summary(id).ok() && steady_clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
  auto done = WaitDone(second, id, seconds(20));
  ASSERT_TRUE(done.ok()) << done.status().ToString();
  EXPECT_EQ(done->state(), pb::JOB_STATE_SUCCEEDED) << done->DebugString();
  EXPECT_EQ(done->coordinator(), "i-1");
  EXPECT_EQ(done->attempt(), 1u);
  ASSERT_EQ(done->restarts_size(), 1);
  EXPECT_EQ(done->restarts(0).reason(), "the job's coordinator i-0 died or left the cluster");
  std::set<std::string> ran;
  for (const pb::RankExit& e : done->rank_exits()) ran.insert(e.node());
  EXPECT_EQ(ran, (std::set<std::string>{"i-1", "i-2"}));
  nodes.down_ = -1;
  nodes.jobs_[0]->StopAll("test", seconds(2));
}

TEST(CoordinatorTest, ARestartWithTooFewNodesWaitsThenFailsAndAKillMeanwhileEndsTheJobKilled) {
  LocalNodes nodes(3);
  Pushed pushed_c(nodes, RestartingCoord());
  Coordinator& c = *pushed_c;
  Caller me{static_cast<uint32_t>(::geteuid()), static_cast<uint32_t>(::getegid()), {}, 0};
  pb::RunJobRequest req = Request({"sleep", "30"});
  req.set_restarts(1);  // and as many nodes as at first: 3
  auto a = c.Run(req, me, nodes.RosterFn());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  nodes.down_ = 2;
  auto done = WaitDone(c, a->id(), seconds(20));
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_FAILED) << done->DebugString();
  EXPECT_EQ(done->exit_code(), 255);
  EXPECT_EQ(done->failure(),
            "no restart after waiting 600ms for nodes: 2 of the job's nodes are usable; it needs 3 (as many as it started on; --min-nodes allows "
            "fewer)");

  CoordinatorOptions slow = RestartingCoord();
  slow.restart_wait = seconds(60);
  Pushed pushed_patient(nodes, slow);
  Coordinator& patient = *pushed_patient;
  // Once i-1 has failed the roster holds i-0 alone, so that the restart waits (for 2 nodes) until the kill.
  std::atomic<bool> shrunk{false};
  auto b = patient.Run(req, me, [&] {
    const std::vector<JobNode> all = nodes.RosterFn()();
    return shrunk ? std::vector<JobNode>{all[0]} : std::vector<JobNode>{all[0], all[1]};
  });
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  shrunk = true;
  nodes.jobs_[1]->StopAll("test", seconds(2));  // a failure (not a kill: agentd stopping) with a restart left
  const auto until = steady_clock::now() + seconds(10);
  while (patient.Summary(b->id())->state() != pb::JOB_STATE_RESTARTING && steady_clock::now() < until) std::this_thread::sleep_for(milliseconds(20));
  ASSERT_EQ(patient.Summary(b->id())->state(), pb::JOB_STATE_RESTARTING);
  ASSERT_TRUE(patient.Kill(b->id(), SIGTERM, me).ok());
  done = WaitDone(patient, b->id());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->state(), pb::JOB_STATE_KILLED) << done->DebugString();
  EXPECT_EQ(done->exit_code(), 128 + SIGTERM);
  nodes.down_ = -1;
  nodes.jobs_[2]->StopAll("test", seconds(2));
}

}  // namespace
}  // namespace dlagent::jobs
