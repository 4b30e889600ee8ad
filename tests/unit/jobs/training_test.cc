// Training metrics from ranks (training.h): the report's parser, what is kept, and NodeJobs taking reports
// from real ranks through its abstract socket (only from the job's own user).
#include "agent/jobs/training.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <thread>

#include <gtest/gtest.h>

#include "agent/jobs/node_jobs.h"
#include "bootstrap/common/crypto.h"

namespace dlagent::jobs {
namespace {

using namespace std::chrono;

TEST(TrainingReportTest, ParsesStepAndScalars) {
  Result<TrainingReport> r = ParseTrainingReport("job=j-0123456789ab step=120 loss=0.5312\nsamples_per_second=1200.5 grad_norm=nan  ");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->job, "j-0123456789ab");
  ASSERT_TRUE(r->step.has_value());
  EXPECT_EQ(*r->step, 120u);
  ASSERT_EQ(r->values.size(), 3u);
  EXPECT_EQ(r->values[0].first, "loss");
  EXPECT_DOUBLE_EQ(r->values[0].second, 0.5312);
  EXPECT_DOUBLE_EQ(r->values[1].second, 1200.5);
  EXPECT_TRUE(std::isnan(r->values[2].second)) << "a diverging loss is worth seeing";
  Result<TrainingReport> no_step = ParseTrainingReport("job=j-1 loss=1e-3");
  ASSERT_TRUE(no_step.ok());
  EXPECT_FALSE(no_step->step.has_value());
}

TEST(TrainingReportTest, RefusesWhatIsNotAReportAndSaysWhy) {
  struct Case {
    std::string text;
    const char* says;
  };
  for (const Case& c :
       {Case{"step=1 loss=2", "a report without job=ID"}, Case{"job=j-1 loss", "\"loss\" is not name=value"},
        Case{"job=j-1 1loss=2", "name \"1loss\" is not"}, Case{"job=j-1 lo-ss=2", "name \"lo-ss\" is not"},
        Case{"job=j-1 loss=fast", "loss = \"fast\" is not a number"}, Case{"job=j-1 step=1.5", "step \"1.5\" is not a whole number"},
        Case{"job=j-1 step=-1", "step \"-1\" is not a whole number"}, Case{"job=j-1 loss=1 loss=2", "name loss is given twice"},
        Case{"job= loss=1", "job \"\" is not a job id"}, Case{"job=j-1 x=" + std::string(2000, '1'), "a report of 2010 bytes; at most 1024"},
        Case{"job=j-1 " + std::string(65, 'a') + "=1", "of at most 64 bytes"}}) {
    Result<TrainingReport> r = ParseTrainingReport(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.status().message().find(c.says), std::string::npos) << r.status().ToString();
  }
}

TEST(TrainingReportTest, KeepsTheLastStepAndValuesAndAtMostSixteenNames) {
  v1::Training t;
  ASSERT_TRUE(ApplyTrainingReport(*ParseTrainingReport("job=j step=1 loss=2"), 1000, &t).ok());
  ASSERT_TRUE(ApplyTrainingReport(*ParseTrainingReport("job=j loss=1.5 lr=0.1"), 2000, &t).ok());
  EXPECT_EQ(t.step(), 1u);
  EXPECT_EQ(t.step_unix_ms(), 1000) << "a report without a step leaves the step's time";
  EXPECT_DOUBLE_EQ(t.values().at("loss"), 1.5);
  EXPECT_EQ(t.reports(), 2u);
  std::string many = "job=j step=2";
  for (int i = 0; i < 20; ++i) many += " m" + std::to_string(i) + "=" + std::to_string(i);
  Status st = ApplyTrainingReport(*ParseTrainingReport(many), 3000, &t);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.message().find("not kept: m14, m15, m16, m17, m18, m19"), std::string::npos) << st.ToString();
  EXPECT_EQ(t.values().size(), kMaxTrainingNames);
  EXPECT_EQ(t.step(), 2u) << "the rest of the report is taken";
  EXPECT_EQ(t.step_unix_ms(), 3000);
}

TEST(TrainingReportTest, TheLatestNodeWinsAndReportsAddUp) {
  v1::Training a, b, none;
  a.set_step(10), a.set_step_unix_ms(5000), a.set_reports(3), (*a.mutable_values())["loss"] = 1;
  b.set_step(12), b.set_step_unix_ms(6000), b.set_reports(4), (*b.mutable_values())["loss"] = 0.5;
  const v1::Training l = LatestTraining({&a, &b, &none});
  EXPECT_EQ(l.step(), 12u);
  EXPECT_DOUBLE_EQ(l.values().at("loss"), 0.5);
  EXPECT_EQ(l.reports(), 7u);
}

// NodeJobs with a training socket, and a rank that reports with Python's socket module as the docs show.
class NodeJobsTrainingTest : public ::testing::Test {
 protected:
  NodeJobsOptions Options() {
    NodeJobsOptions o;
    o.node = "i-train";
    o.journal = false;
    o.base_env = [] { return std::vector<std::string>{"PATH=/usr/bin:/bin"}; };
    o.training_socket = name_;
    return o;
  }
  static pb::StartRequest Start(const std::string& id, uint32_t uid, const std::string& script) {
    pb::StartRequest r;
    pb::JobSpec& s = *r.mutable_spec();
    s.set_id(id);
    s.set_name("train");
    s.add_argv("/usr/bin/python3");
    s.add_argv("-c");
    s.add_argv(script);
    s.set_uid(uid);
    s.set_gid(uid == 0 ? 0 : 65534);
    s.set_user(uid == 0 ? "root" : "nobody");
    s.set_workdir("/");
    s.set_grace_ms(1000);
    pb::RankSpec* rs = r.add_ranks();
    rs->add_env("DLAGENT_JOB=" + id);
    return r;
  }
  // A script that sends each datagram, then prints what DLAGENT_METRICS_SOCKET was.
  static std::string Sender(const std::vector<std::string>& datagrams) {
    std::string s = "import os, socket\np = os.environ['DLAGENT_METRICS_SOCKET']\nk = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n";
    for (const std::string& d : datagrams) s += "k.sendto(b'" + d + "', '\\0' + p[1:])\n";
    return s + "print(p)\n";
  }
  // Waits for the job to end on `jobs`; its node view then.
  static pb::NodeJob WaitEnded(NodeJobs& jobs, const std::string& id) {
    pb::QueryRequest q;
    q.set_job(id);
    q.set_max_lines(100);
    for (const auto until = steady_clock::now() + seconds(20); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(20))) {
      Result<pb::QueryReply> r = jobs.Query(q);
      if (r.ok() && r->jobs_size() == 1 && r->jobs(0).ended()) return r->jobs(0);
    }
    return {};
  }

  std::string name_ = "dlagent-test/training/" + RandomHex(8);
};

TEST_F(NodeJobsTrainingTest, ARanksReportsAreKeptForItsJobAndGarbageIsCounted) {
  NodeJobs jobs(Options());
  ASSERT_TRUE(jobs.Start(Start("j-t1", ::geteuid(),
                               Sender({"job=j-t1 step=5 loss=0.25", "garbage", "job=j-t1 step=7 loss=0.125 samples_per_second=100",
                                       "job=j-elsewhere step=1"})))
                  .ok());
  const pb::NodeJob j = WaitEnded(jobs, "j-t1");
  ASSERT_TRUE(j.ended()) << j.DebugString();
  ASSERT_EQ(j.lines_size(), 1) << j.DebugString();
  EXPECT_EQ(j.lines(0).text(), "@" + name_) << "every rank is told the socket";
  // The datagrams were queued before the rank exited, so they are read by the time its exit is seen.
  EXPECT_EQ(j.training().step(), 7u) << j.DebugString();
  EXPECT_DOUBLE_EQ(j.training().values().at("loss"), 0.125);
  EXPECT_DOUBLE_EQ(j.training().values().at("samples_per_second"), 100);
  EXPECT_GT(j.training().step_unix_ms(), 0);
  const NodeJobs::Counters c = jobs.counters();
  EXPECT_EQ(c.reports, 2u);
  EXPECT_EQ(c.reports_malformed, 1u);
  EXPECT_EQ(c.reports_refused, 1u) << "no job j-elsewhere runs here";
  const auto kept = jobs.Training(minutes(5));
  ASSERT_EQ(kept.count("j-t1"), 1u);
  EXPECT_EQ(kept.at("j-t1").step(), 7u);
  EXPECT_EQ(jobs.Training(seconds(0)).count("j-t1"), 0u) << "an ended job's reports are kept only for the grace given";
}

TEST_F(NodeJobsTrainingTest, AnotherUserCannotReportForSomeoneElsesJob) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a job of another user)";
  NodeJobs jobs(Options());
  // Root's job runs until stopped; nobody's job claims to be it.
  ASSERT_TRUE(jobs.Start(Start("j-root", 0, "import time\ntime.sleep(30)")).ok());
  ASSERT_TRUE(jobs.Start(Start("j-nobody", 65534, Sender({"job=j-root step=999 loss=666", "job=j-nobody step=1"}))).ok());
  const pb::NodeJob n = WaitEnded(jobs, "j-nobody");
  ASSERT_TRUE(n.ended()) << n.DebugString();
  EXPECT_EQ(n.training().step(), 1u) << n.DebugString();
  EXPECT_EQ(jobs.Training(minutes(5)).count("j-root"), 0u) << "nobody's claim for root's job was refused";
  EXPECT_EQ(jobs.counters().reports_refused, 1u);
}

}  // namespace
}  // namespace dlagent::jobs
