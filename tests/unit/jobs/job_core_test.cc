// JobCore's decisions on a virtual clock: a failure, a lost node (gone, unknown to its agent, silent), the
// timeout, kills, the processes a launcher adds, restarts (waiting for ranks and for nodes, a start that
// fails, a kill during one), a job taken over from a lost coordinator and one let go to another.
#include "agent/jobs/job_core.h"

#include <signal.h>

#include <gtest/gtest.h>

namespace dlagent::jobs {
namespace {

using namespace std::chrono;

constexpr int64_t kUnixAtStart = 1'700'000'000'000;
// The exit code of a rank the agent stopped with SIGTERM: such a rank is marked stopped (not a failure).
constexpr int kStopped = 128 + SIGTERM;

// A rank of the attempt as its node reports it.
struct R {
  uint32_t rank;
  bool running = true;
  int exit_code = 0;
  uint32_t attempt = 0;
};

class JobCoreTest : public ::testing::Test {
 protected:
  // A job of `nodes` nodes with one rank each (i-0 is rank 0), started now.
  void Start(int nodes, uint32_t restarts = 0, uint32_t min_nodes = 0, int64_t timeout_ms = 0) {
    spec_ = pb::JobSpec();
    spec_.set_id("j-1");
    spec_.set_name("train");
    spec_.set_coordinator("i-0");
    spec_.set_max_restarts(restarts);
    spec_.set_min_nodes(min_nodes);
    spec_.set_timeout_ms(timeout_ms);
    spec_.set_every_node(true);
    spec_.set_created_unix_ms(kUnixAtStart);
    for (int i = 0; i < nodes; ++i) {
      spec_.add_nodes("i-" + std::to_string(i));
      spec_.add_node_addrs("10.0.0." + std::to_string(i) + ":7947");
    }
    spec_.set_num_ranks(static_cast<uint32_t>(nodes));
    std::map<std::string, pb::NodeJob> parts;
    for (int i = 0; i < nodes; ++i) parts[spec_.nodes(i)] = Part(spec_, i, {{static_cast<uint32_t>(i)}});
    core_.emplace(Options(), spec_, std::move(parts), now_, kUnixAtStart);
  }
  static JobCoreOptions Options() {
    JobCoreOptions o;
    o.self = "i-0";
    o.self_addr = "10.0.0.0:7947";
    o.unreachable_after = seconds(10);
    o.restart_wait = seconds(60);
    o.restart_retry = seconds(1);
    return o;
  }
  static pb::NodeJob Part(const pb::JobSpec& spec, int node, const std::vector<R>& ranks, bool ended = false, const std::string& failure = "") {
    pb::NodeJob p;
    *p.mutable_spec() = spec;
    p.set_node(spec.nodes(node));
    for (const R& r : ranks) {
      pb::RankState* s = p.add_ranks();
      s->set_rank(r.rank);
      s->set_running(r.running);
      s->set_exit_code(r.exit_code);
      s->set_attempt(r.attempt);
      s->set_stopped(!r.running && r.exit_code == kStopped);
      if (!r.running) s->set_ended_unix_ms(kUnixAtStart + 1000 + r.rank);
      // A rank's node names its failure itself (NodeJobs), and the coordinator takes that as the decision.
      if (!r.running && r.exit_code != 0 && !s->stopped() && p.failure().empty())
        p.set_failure("rank " + std::to_string(r.rank) + " on " + p.node() + " " + RankEnding(*s));
    }
    p.set_ended(ended);
    if (!failure.empty()) p.set_failure(failure);
    return p;
  }
  // Every node answers with its one rank in the given state (nullopt: the node does not answer).
  std::vector<NodeAnswer> Answers(const std::vector<std::optional<R>>& ranks, bool ended = false) {
    const pb::JobSpec& spec = core_->spec();
    std::vector<NodeAnswer> out(static_cast<size_t>(spec.nodes_size()));
    for (size_t i = 0; i < ranks.size() && i < out.size(); ++i) {
      if (ranks[i])
        out[i].part = Part(spec, static_cast<int>(i), {*ranks[i]}, ended && !ranks[i]->running);
      else
        out[i].part = Status::Unavailable("test", "no answer");
    }
    return out;
  }
  JobActions Round(const std::vector<std::optional<R>>& ranks, bool ended = false) {
    now_ += milliseconds(200);
    return core_->OnAnswers(now_, Answers(ranks, ended));
  }
  pb::JobState State() const { return core_->summary().state(); }

  pb::JobSpec spec_;
  MonoTime now_ = MonoTime() + hours(1);
  std::optional<JobCore> core_;
};

TEST_F(JobCoreTest, ARunThatEveryRankEndsWellSucceedsAndSaysSoOnce) {
  Start(3);
  EXPECT_EQ(State(), pb::JOB_STATE_RUNNING);
  JobActions a = Round({R{0}, R{1}, R{2}});
  EXPECT_FALSE(a.signal);
  EXPECT_TRUE(a.log.empty());
  a = Round({R{0, false}, R{1, false}, R{2, false}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_SUCCEEDED);
  EXPECT_FALSE(a.signal) << "nothing to stop";
  ASSERT_EQ(a.log.size(), 1u);
  EXPECT_EQ(a.log[0].text, "job j-1 (train) succeeded");
  EXPECT_TRUE(Round({R{0, false}, R{1, false}, R{2, false}}, true).log.empty()) << "the end is said once";
}

TEST_F(JobCoreTest, ARankThatFailsStopsEveryOtherRankAndTheJobFailsWithItsCode) {
  Start(3);
  JobActions a = Round({R{0}, R{1, false, 3}, R{2}});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.sig, SIGTERM);
  EXPECT_TRUE(a.skip.empty());
  EXPECT_FALSE(a.pick_nodes);
  EXPECT_EQ(State(), pb::JOB_STATE_STOPPING);
  EXPECT_EQ(core_->summary().failure(), "rank 1 on i-1 exited with 3");
  EXPECT_FALSE(Round({R{0}, R{1, false, 3}, R{2}}).signal) << "the decision is acted on once";
  a = Round({R{0, false, kStopped}, R{1, false, 3}, R{2, false, kStopped}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(core_->summary().exit_code(), 3);
  ASSERT_EQ(a.log.size(), 1u);
  EXPECT_TRUE(a.log[0].warning);
}

TEST_F(JobCoreTest, ANodeGossipCallsGoneIsLostAtOnceSkippedAndExitsWith255) {
  Start(3);
  std::vector<NodeAnswer> answers = Answers({R{0}, std::nullopt, R{2}});
  answers[1].gone = true;
  now_ += milliseconds(200);
  JobActions a = core_->OnAnswers(now_, answers);
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "node i-1 died or left the cluster");
  EXPECT_EQ(a.skip, std::vector<std::string>{"i-1"}) << "a lost node is not signalled";
  EXPECT_EQ(core_->ToAsk(), (std::vector<size_t>{0, 2})) << "nor asked again";
  EXPECT_EQ(core_->unusable().count("i-1"), 1u);
  Round({R{0, false, kStopped}, std::nullopt, R{2, false, kStopped}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(core_->summary().exit_code(), 255);
}

TEST_F(JobCoreTest, ASilentNodeIsLostOnlyAfterUnreachableAfterAndOneThatForgotTheJobAtOnce) {
  Start(3);
  for (int i = 0; i < 49; ++i) ASSERT_FALSE(Round({R{0}, std::nullopt, R{2}}).signal) << "silent for " << (i + 1) * 200 << " ms only";
  JobActions a = Round({R{0}, std::nullopt, R{2}});
  a = a.signal ? a : Round({R{0}, std::nullopt, R{2}});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure.rfind("node i-1 did not answer for 10s", 0), 0u) << a.signal->failure;
  EXPECT_EQ(core_->unusable().count("i-1"), 1u);

  Start(2);
  std::vector<NodeAnswer> answers = Answers({R{0}, std::nullopt});
  answers[1].part = Status::NotFound("jobs", "no job j-1");
  a = core_->OnAnswers(now_, answers);
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "node i-1 no longer knows the job (its agent restarted)");
  EXPECT_EQ(core_->unusable().count("i-1"), 0u) << "its agent restarted: the node may take the next attempt";
}

TEST_F(JobCoreTest, TheTimeoutEndsTheJobWith124AndIsNotRestarted) {
  Start(2, /*restarts=*/3, 0, /*timeout_ms=*/1000);
  EXPECT_FALSE(Round({R{0}, R{1}}).signal);
  now_ += milliseconds(900);
  JobActions a = Round({R{0}, R{1}});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "timed out after 1s");
  EXPECT_FALSE(core_->restarting()) << "a timeout is the job's own end";
  Round({R{0, false, kStopped}, R{1, false, kStopped}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(core_->summary().exit_code(), 124);
}

TEST_F(JobCoreTest, AKillStopsEveryRankWithItsSignalOnceAndNothingAfterTheEnd) {
  Start(2, /*restarts=*/2);
  JobActions a = core_->OnKill(now_, Decision{"killed with SIGINT by uid 0", 128 + SIGINT, true}, SIGINT);
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.sig, SIGINT);
  EXPECT_TRUE(a.signal->killed);
  EXPECT_EQ(State(), pb::JOB_STATE_STOPPING);
  a = core_->OnKill(now_, Decision{"killed with SIGTERM by uid 0", 128 + SIGTERM, true}, SIGTERM);
  EXPECT_EQ(a.signal->failure, "killed with SIGINT by uid 0") << "the first kill names the job's end";
  Round({R{0, false, 0}, R{1, false, 0}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_KILLED);
  EXPECT_EQ(core_->summary().exit_code(), 128 + SIGINT);
  EXPECT_FALSE(core_->restarting()) << "a kill is never restarted";
  EXPECT_FALSE(core_->OnKill(now_, Decision{"again", 1, true}, SIGTERM).signal) << "an ended job has nothing to signal";
}

TEST_F(JobCoreTest, TheProcessesALauncherAddedAreStoppedOnceTheJobsOwnRanksHaveEnded) {
  Start(2);
  // Node 1 also runs a helper (rank 2, beyond num_ranks: an MPI daemon, dask's scheduler).
  auto answers = [&](bool helper_running) {
    std::vector<NodeAnswer> out(2);
    out[0].part = Part(core_->spec(), 0, {R{0, false}});
    out[1].part = Part(core_->spec(), 1, {R{1, false}, R{2, helper_running}});
    return out;
  };
  now_ += milliseconds(200);
  JobActions a = core_->OnAnswers(now_, answers(true));
  ASSERT_TRUE(a.signal);
  EXPECT_TRUE(a.signal->failure.empty()) << "no failure: the job ends with its ranks' status";
  EXPECT_EQ(State(), pb::JOB_STATE_RUNNING);
  EXPECT_FALSE(core_->OnAnswers(now_, answers(true)).signal) << "asked once";
  core_->OnAnswers(now_, answers(false));
  EXPECT_EQ(State(), pb::JOB_STATE_SUCCEEDED);
}

TEST_F(JobCoreTest, AFailureWithRestartsLeftRestartsOnceEveryRankHasEndedAndItsOutputBeenRead) {
  Start(3, /*restarts=*/2);
  JobActions a = Round({R{0}, R{1, false, 3}, R{2}});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.log.at(0).text, "job j-1: rank 1 on i-1 exited with 3; stopping every rank to start again (restart 1 of 2)");
  EXPECT_TRUE(core_->restarting());
  EXPECT_EQ(State(), pb::JOB_STATE_RESTARTING);
  ASSERT_EQ(core_->summary().restarts_size(), 1);
  EXPECT_EQ(core_->summary().restarts(0).unix_ms(), kUnixAtStart + 200) << "the record's time is the virtual clock's";
  EXPECT_FALSE(Round({R{0, false, kStopped}, R{1, false, 3}, R{2}}).pick_nodes) << "rank 2 still runs";
  EXPECT_FALSE(Round({R{0, false, kStopped}, R{1, false, 3}, R{2, false, kStopped}}, false).pick_nodes) << "ended, but output not yet read";
  a = Round({R{0, false, kStopped}, R{1, false, 3}, R{2, false, kStopped}}, true);
  EXPECT_TRUE(a.pick_nodes);
  EXPECT_EQ(State(), pb::JOB_STATE_RESTARTING) << "not failed: the next attempt is due";

  pb::JobSpec next = core_->NextAttempt();
  EXPECT_EQ(next.attempt(), 1u);
  EXPECT_EQ(next.restarts_size(), 1) << "every node of the next attempt holds the restarts so far";
  next.clear_nodes();
  next.add_nodes("i-0");
  next.add_nodes("i-2");
  next.set_num_ranks(2);
  std::map<std::string, pb::NodeJob> parts;
  parts["i-0"] = Part(next, 0, {R{0, true, 0, 1}});
  parts["i-2"] = Part(next, 1, {R{1, true, 0, 1}});
  a = core_->OnLaunched(now_, next, parts);
  EXPECT_FALSE(a.signal);
  EXPECT_EQ(State(), pb::JOB_STATE_RUNNING);
  EXPECT_EQ(core_->summary().attempt(), 1u);
  EXPECT_EQ(core_->summary().restarts(0).nodes(), 2u);
  EXPECT_TRUE(core_->summary().failure().empty());
  a = Round({R{0, false, 0, 1}, R{1, false, 0, 1}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_SUCCEEDED);
}

TEST_F(JobCoreTest, ARestartWaitsForNodesSayingWhyOnceAndFailsWith255PastTheWait) {
  Start(2, /*restarts=*/1);
  Round({R{0, false, 3}, R{1}});
  ASSERT_TRUE(Round({R{0, false, 3}, R{1, false, kStopped}}, true).pick_nodes);
  JobActions a = core_->OnNoNodes(now_, "1 of the job's nodes is usable; it needs 2");
  ASSERT_EQ(a.log.size(), 1u);
  EXPECT_EQ(a.log[0].text, "job j-1: the restart waits for nodes: 1 of the job's nodes is usable; it needs 2");
  now_ += seconds(30);
  EXPECT_TRUE(core_->OnNoNodes(now_, "1 of the job's nodes is usable; it needs 2").log.empty()) << "said once";
  EXPECT_EQ(State(), pb::JOB_STATE_RESTARTING);
  now_ += seconds(31);
  core_->OnNoNodes(now_, "1 of the job's nodes is usable; it needs 2");
  EXPECT_FALSE(core_->restarting());
  EXPECT_EQ(State(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(core_->summary().exit_code(), 255);
  EXPECT_EQ(core_->summary().failure(), "no restart after waiting 1m00s for nodes: 1 of the job's nodes is usable; it needs 2");
}

TEST_F(JobCoreTest, AStartThatFailsIsAnAttemptThatFailedRetriedAfterRestartRetryUntilNoneAreLeft) {
  Start(2, /*restarts=*/2);
  Round({R{0, false, 3}, R{1}});
  ASSERT_TRUE(Round({R{0, false, 3}, R{1, false, kStopped}}, true).pick_nodes);
  JobActions a = core_->OnLaunchFailed(now_, 1, Status::Unavailable("jobs", "node i-1: no such program"));
  EXPECT_EQ(a.log.at(0).text, "job j-1: attempt 1 could not start: node i-1: no such program");
  EXPECT_TRUE(core_->restarting()) << "one restart is left";
  EXPECT_FALSE(Round({R{0, false, 3}, R{1, false, kStopped}}, true).pick_nodes) << "not before restart_retry";
  now_ += seconds(1);
  ASSERT_TRUE(Round({R{0, false, 3}, R{1, false, kStopped}}, true).pick_nodes);
  EXPECT_EQ(core_->NextAttempt().attempt(), 2u);
  core_->OnLaunchFailed(now_, 2, Status::Unavailable("jobs", "node i-1: no such program"));
  EXPECT_FALSE(core_->restarting());
  EXPECT_EQ(State(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(core_->summary().exit_code(), 1);
  EXPECT_EQ(core_->summary().restarts_size(), 3);
  EXPECT_EQ(core_->summary().failure(), "attempt 2 could not start: node i-1: no such program") << "a start's failure is final";
}

TEST_F(JobCoreTest, AKillWhileTheNextAttemptStartsStopsWhatStartedAndTheJobEndsKilled) {
  Start(2, /*restarts=*/1);
  Round({R{0, false, 3}, R{1}});
  ASSERT_TRUE(Round({R{0, false, 3}, R{1, false, kStopped}}, true).pick_nodes);
  pb::JobSpec next = core_->NextAttempt();
  JobActions kill = core_->OnKill(now_, Decision{"killed with SIGTERM by uid 0", 128 + SIGTERM, true}, SIGTERM);
  EXPECT_TRUE(kill.signal) << "the failed attempt's nodes are told too";
  EXPECT_FALSE(core_->restarting());
  std::map<std::string, pb::NodeJob> parts;
  parts["i-0"] = Part(next, 0, {R{0, true, 0, 1}});
  parts["i-1"] = Part(next, 1, {R{1, true, 0, 1}});
  JobActions a = core_->OnLaunched(now_, next, parts);
  ASSERT_TRUE(a.signal);
  EXPECT_TRUE(a.signal->killed);
  Round({R{0, false, 0, 1}, R{1, false, 0, 1}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_KILLED);
}

TEST_F(JobCoreTest, ATakenOverJobStopsEveryRankButTheLostCoordinatorsAndRestartsWithoutIt) {
  Start(3, /*restarts=*/1);
  pb::JobSpec old = core_->spec();
  JobCoreOptions o = Options();
  o.self = "i-1";
  o.self_addr = "10.0.0.1:7947";
  now_ += seconds(5);
  core_.emplace(JobCore::TakeOver(o, old, now_, kUnixAtStart + 5000));
  EXPECT_EQ(core_->spec().coordinator(), "i-1");
  EXPECT_TRUE(core_->restarting());
  EXPECT_EQ(core_->ToAsk(), (std::vector<size_t>{1, 2})) << "the lost coordinator's node is not asked";
  JobActions a = Round({std::nullopt, R{1}, R{2}});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "the job's coordinator i-0 died or left the cluster");
  EXPECT_EQ(a.skip, std::vector<std::string>{"i-0"});
  EXPECT_EQ(core_->unusable().count("i-0"), 1u);
  EXPECT_FALSE(Round({std::nullopt, R{1}, R{2}}).signal);
  EXPECT_TRUE(Round({std::nullopt, R{1, false, kStopped}, R{2, false, kStopped}}, true).pick_nodes);

  // Without restarts left the taken-over job fails with 255.
  old.set_max_restarts(0);
  core_.emplace(JobCore::TakeOver(o, old, now_, kUnixAtStart + 5000));
  EXPECT_FALSE(core_->restarting());
  Round({std::nullopt, R{1, false, kStopped}, R{2, false, kStopped}}, true);
  EXPECT_EQ(State(), pb::JOB_STATE_FAILED);
  EXPECT_EQ(core_->summary().exit_code(), 255);
}

TEST_F(JobCoreTest, ALaterAttemptUnderAnotherCoordinatorLetsTheJobGo) {
  Start(2, /*restarts=*/1);
  std::vector<NodeAnswer> answers = Answers({R{0}, R{1}});
  pb::JobSpec theirs = core_->spec();
  theirs.set_coordinator("i-1");
  theirs.set_attempt(1);
  *answers[1].part->mutable_spec() = theirs;
  JobActions a = core_->OnAnswers(now_, answers);
  EXPECT_TRUE(a.let_go);
  EXPECT_FALSE(a.signal) << "nothing is stopped: the job is theirs";
  theirs.set_attempt(0);
  *answers[1].part->mutable_spec() = theirs;
  EXPECT_FALSE(core_->OnAnswers(now_, answers).let_go) << "the same attempt is not a takeover";
}

TEST_F(JobCoreTest, PushesDecideAsRoundsDoAndALatePushNeverTakesBackWhatANewerOneSaid) {
  Start(2, /*restarts=*/1);
  pb::NodeJob ended = Part(core_->spec(), 1, {R{1, false, 3}}, true);
  ended.set_version(5);
  pb::NodeJob stale = Part(core_->spec(), 1, {R{1}});
  stale.set_version(4);
  EXPECT_FALSE(core_->OnPart(now_, "i-9", ended).signal) << "a node not of the job is not heard";
  EXPECT_FALSE(core_->OnPart(now_, "i-0", ended).signal) << "nor a part sent in another node's name";
  JobActions a = core_->OnPart(now_, "i-1", ended);
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "rank 1 on i-1 exited with 3");
  core_->OnPart(now_, "i-1", stale);  // crossed with the newer one
  pb::NodeJob rank0 = Part(core_->spec(), 0, {R{0, false, kStopped}}, true);
  rank0.set_version(9);
  EXPECT_TRUE(core_->OnPart(now_, "i-0", rank0).pick_nodes) << "i-1's part is still the ended one";

  // The next attempt starts; a push of the failed attempt that arrives late changes nothing.
  pb::JobSpec next = core_->NextAttempt();
  std::map<std::string, pb::NodeJob> parts;
  parts["i-0"] = Part(next, 0, {R{0, true, 0, 1}});
  parts["i-1"] = Part(next, 1, {R{1, true, 0, 1}});
  core_->OnLaunched(now_, next, parts);
  ended.set_version(6);
  EXPECT_FALSE(core_->OnPart(now_, "i-1", ended).signal);
  EXPECT_EQ(State(), pb::JOB_STATE_RUNNING);
  EXPECT_EQ(core_->summary().running(), 2u);
}

TEST_F(JobCoreTest, ANodeWhoseAgentIsStoppingIsNoPlaceForTheNextAttempt) {
  Start(3, /*restarts=*/1);
  pb::NodeJob leaving = Part(core_->spec(), 2, {R{2, false, kStopped}}, true, "agentd on i-2 is stopping");
  leaving.set_leaving(true);
  JobActions a = core_->OnPart(now_, "i-2", leaving);
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "agentd on i-2 is stopping");
  EXPECT_TRUE(core_->restarting());
  EXPECT_EQ(core_->unusable(), std::set<std::string>{"i-2"}) << "gossip may not call it gone yet";
}

TEST_F(JobCoreTest, ATickLosesTheNodesGossipCallsGoneAndEndsTheJobPastItsTimeout) {
  Start(3, 0, 0, /*timeout_ms=*/60'000);
  now_ += seconds(1);
  EXPECT_FALSE(core_->OnTick(now_, {}).signal) << "nothing changed";
  JobActions a = core_->OnTick(now_, {"i-2", "i-7"});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "node i-2 died or left the cluster");
  EXPECT_EQ(a.skip, std::vector<std::string>{"i-2"});

  Start(2, 0, 0, /*timeout_ms=*/60'000);
  now_ += seconds(59);
  EXPECT_FALSE(core_->OnTick(now_, {}).signal);
  now_ += seconds(2);
  a = core_->OnTick(now_, {});
  ASSERT_TRUE(a.signal);
  EXPECT_EQ(a.signal->failure, "timed out after 1m00s");
}

}  // namespace
}  // namespace dlagent::jobs
