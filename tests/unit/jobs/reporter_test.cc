// Reporter: a part reaches the coordinator, is tried again after a failure, gives way to a newer part of the
// same job, and is given up when the coordinator is gone or the tries are used up.
#include "agent/jobs/reporter.h"

#include <condition_variable>
#include <deque>
#include <mutex>

#include <gtest/gtest.h>

namespace dlagent::jobs {
namespace {

using namespace std::chrono;

// A coordinator that answers each call with the next status scripted (then OK), and records what it took.
class FakeCoordinator {
 public:
  Result<pb::NodeReply> Call(const std::string& node, const std::string& addr, const pb::NodeRequest& req) {
    std::unique_lock<std::mutex> lock(mu_);
    ++entered_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !hold_; });
    Status st = Status::Ok();
    if (!script_.empty()) st = script_.front(), script_.pop_front();
    calls_.push_back({node, addr, req});
    cv_.notify_all();
    if (!st.ok()) return st;
    return pb::NodeReply{};
  }
  // Waits until `n` calls were made (at most 10 s); their count.
  size_t WaitCalls(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, seconds(10), [&] { return calls_.size() >= n; });
    return calls_.size();
  }
  struct Seen {
    std::string node, addr;
    pb::NodeRequest req;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Status> script_;
  std::vector<Seen> calls_;
  bool hold_ = false;  // calls wait until it is cleared
  int entered_ = 0;    // calls begun
};

pb::NodeJob Part(const std::string& job, uint64_t version) {
  pb::NodeJob p;
  p.mutable_spec()->set_id(job);
  p.mutable_spec()->set_coordinator("i-0");
  p.mutable_spec()->set_coordinator_addr("10.0.0.1:7947");
  p.set_node("i-3");
  p.set_version(version);
  return p;
}

ReporterOptions Options(FakeCoordinator& f, std::function<bool(const std::string&)> gone = nullptr) {
  ReporterOptions o;
  o.self = "i-3";
  o.call = [&f](const std::string& n, const std::string& a, const pb::NodeRequest& r) { return f.Call(n, a, r); };
  o.gone = std::move(gone);
  o.min_backoff = milliseconds(1);
  o.max_backoff = milliseconds(4);
  o.max_tries = 3;
  return o;
}

// Waits until the reporter's counters satisfy `done` (at most 10 s).
template <typename F>
Reporter::Counters WaitCounters(Reporter& r, F done) {
  const auto until = steady_clock::now() + seconds(10);
  Reporter::Counters c = r.counters();
  while (!done(c) && steady_clock::now() < until) {
    std::this_thread::yield();
    c = r.counters();
  }
  return c;
}

TEST(ReporterTest, APartReachesItsCoordinatorAndAFailedCallIsTriedAgain) {
  FakeCoordinator f;
  f.script_ = {Status::Unavailable("test", "connection refused")};
  Reporter r(Options(f));
  r.Add({Part("j-1", 7)});
  ASSERT_EQ(f.WaitCalls(2), 2u);
  Reporter::Counters c = WaitCounters(r, [](const Reporter::Counters& c) { return c.delivered == 1; });
  EXPECT_EQ(c.delivered, 1u);
  EXPECT_EQ(c.retried, 1u);
  EXPECT_EQ(c.dropped, 0u);
  std::lock_guard<std::mutex> lock(f.mu_);
  EXPECT_EQ(f.calls_[1].node, "i-0");
  EXPECT_EQ(f.calls_[1].addr, "10.0.0.1:7947");
  EXPECT_EQ(f.calls_[1].req.from(), "i-3");
  EXPECT_EQ(f.calls_[1].req.report().part().version(), 7u);
}

TEST(ReporterTest, ANewerPartOfTheSameJobReplacesOneNotYetDelivered) {
  FakeCoordinator f;
  f.hold_ = true;
  Reporter r(Options(f));
  r.Add({Part("j-1", 1)});
  {
    // The first call is under way (held); newer parts come meanwhile: of j-1's, only the last goes next.
    std::unique_lock<std::mutex> lock(f.mu_);
    ASSERT_TRUE(f.cv_.wait_for(lock, seconds(10), [&] { return f.entered_ == 1; }));
  }
  r.Add({Part("j-1", 2)});
  r.Add({Part("j-1", 3), Part("j-2", 1)});
  {
    std::lock_guard<std::mutex> lock(f.mu_);
    f.hold_ = false;
  }
  f.cv_.notify_all();
  Reporter::Counters c = WaitCounters(r, [](const Reporter::Counters& c) { return c.delivered == 3; });
  EXPECT_EQ(c.delivered, 3u);
  std::lock_guard<std::mutex> lock(f.mu_);
  std::vector<uint64_t> j1;
  for (const auto& seen : f.calls_) {
    if (seen.req.report().part().spec().id() == "j-1") j1.push_back(seen.req.report().part().version());
  }
  EXPECT_EQ(j1, (std::vector<uint64_t>{1, 3})) << "version 2 was replaced before it went";
  EXPECT_EQ(f.calls_.size(), 3u);
}

TEST(ReporterTest, APartIsGivenUpAfterItsTriesOrWhenTheCoordinatorIsGone) {
  FakeCoordinator f;
  f.script_ = {Status::Unavailable("test", "a"), Status::Unavailable("test", "b"), Status::Unavailable("test", "c")};
  Reporter r(Options(f));
  r.Add({Part("j-1", 1)});
  Reporter::Counters c = WaitCounters(r, [](const Reporter::Counters& c) { return c.dropped == 1; });
  EXPECT_EQ(c.dropped, 1u);
  EXPECT_EQ(c.retried, 2u) << "3 tries in all";
  EXPECT_EQ(f.WaitCalls(3), 3u);

  FakeCoordinator g;
  Reporter gone(Options(g, [](const std::string& id) { return id == "i-0"; }));
  gone.Add({Part("j-1", 1)});
  c = WaitCounters(gone, [](const Reporter::Counters& c) { return c.dropped == 1; });
  EXPECT_EQ(c.dropped, 1u);
  std::lock_guard<std::mutex> lock(g.mu_);
  EXPECT_TRUE(g.calls_.empty()) << "a coordinator gossip calls gone is not called";
}

TEST(ReporterTest, ACoordinatorThatDoesNotKnowTheJobEndsItsReportsAndStopDropsLaterParts) {
  FakeCoordinator f;
  f.script_ = {Status::NotFound("jobs", "no job j-1")};
  Reporter r(Options(f));
  r.Add({Part("j-1", 1)});
  Reporter::Counters c = WaitCounters(r, [](const Reporter::Counters& c) { return c.unknown == 1; });
  EXPECT_EQ(c.unknown, 1u);
  r.Stop();  // the thread is joined: nothing more can be called
  r.Add({Part("j-1", 2)});
  c = r.counters();
  EXPECT_EQ(c.retried, 0u) << "NotFound is not tried again";
  EXPECT_EQ(c.delivered, 0u);
  std::lock_guard<std::mutex> lock(f.mu_);
  EXPECT_EQ(f.calls_.size(), 1u) << "nothing goes after Stop";
}

}  // namespace
}  // namespace dlagent::jobs
