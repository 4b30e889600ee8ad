#include "agent/daemon/status_page.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

namespace pb = jobs::v1;
using nlohmann::json;

pb::Training Report(uint64_t step, int64_t unix_ms, double loss) {
  pb::Training t;
  t.set_step(step);
  t.set_step_unix_ms(unix_ms);
  (*t.mutable_values())["loss"] = loss;
  return t;
}

TEST(TrainingHistoryTest, TakesANewStepAtMostOnceASecondAndHalvesWhenFull) {
  TrainingHistory h;
  h.Add(pb::Training());  // no step reported yet
  EXPECT_TRUE(h.points().empty());
  h.Add(Report(1, 1000, 1.0));
  h.Add(Report(1, 3000, 0.9));  // the same step: nothing new
  h.Add(Report(2, 1500, 0.8));  // under a second after the last point
  ASSERT_EQ(h.points().size(), 1u);
  h.Add(Report(3, 2000, 0.7));
  ASSERT_EQ(h.points().size(), 2u);
  EXPECT_EQ(h.points()[1].step, 3u);
  EXPECT_EQ(h.points()[1].values.at("loss"), 0.7);
  for (uint64_t s = 4; h.points().size() < TrainingHistory::kMaxPoints; ++s) h.Add(Report(s, static_cast<int64_t>(s) * 1000, 1.0 / s));
  const uint64_t last = h.points().back().step;
  h.Add(Report(last + 1, static_cast<int64_t>(last + 1) * 1000, 0.01));
  ASSERT_EQ(h.points().size(), TrainingHistory::kMaxPoints / 2 + 1) << "every other point dropped, then the new one";
  EXPECT_EQ(h.points().front().step, 1u) << "the start of the run stays in view";
  EXPECT_EQ(h.points().back().step, last + 1);
}

StatusPageInput Formed() {
  StatusPageInput in;
  in.status.phase = AgentPhase::kReady;
  in.status.identity = {"i-0abc", "p4d.24xlarge", "10.0.1.17", "us-east-1", "us-east-1a", 8};
  in.status.phases = {{AgentPhase::kStarting, 0}, {AgentPhase::kIdentify, 10}, {AgentPhase::kReady, 510}};
  in.status.ready_after_ms = 510;
  ClusterSnapshot c;
  c.generation = 2;
  c.roster = {{0, "i-0aaa", "10.0.1.16", 8, true}, {1, "i-0abc", "10.0.1.17", 8, true}};
  c.alive = 2;
  c.expected = 2;
  in.status.cluster = c;
  in.members.enabled = true;
  in.members.members = {{"i-0aaa", "10.0.1.16:7946", "alive", "master", "us-east-1a", "0.1.0", 8, 4, 2, 10}};
  pb::JobList list;
  pb::JobSummary* j = list.add_jobs();
  j->set_id("j-1");
  j->set_name("train\xff");  // not UTF-8
  j->set_user("alice");
  j->add_argv("python3");
  j->set_state(jobs::v1::JOB_STATE_RUNNING);
  j->set_ranks(3);
  for (const char* node : {"i-0aaa", "i-0aaa", "i-0abc"}) j->add_rank_exits()->set_node(node);
  in.jobs = list;
  return in;
}

TEST(StatusPageJsonTest, SaysWhatThePageDrawsAndShowsMissingAsNull) {
  StatusPageInput in = Formed();
  TrainingHistory h;
  h.Add(Report(1, 1000, std::numeric_limits<double>::quiet_NaN()));
  in.history["j-1"] = &h;
  const json j = json::parse(StatusPageJson(in));
  EXPECT_EQ(j["agent"]["phase"], "ready");
  EXPECT_EQ(j["agent"]["ready_after_ms"], 510);
  ASSERT_EQ(j["timeline"].size(), 3u);
  EXPECT_EQ(j["timeline"][1]["took_ms"], 500);
  EXPECT_TRUE(j["timeline"][2]["took_ms"].is_null()) << "the phase it is in has taken no set time";
  EXPECT_EQ(j["members"][0]["flaps"], 2);
  EXPECT_EQ(j["roster"]["generation"], 2);
  EXPECT_EQ(j["roster"]["nodes"].size(), 2u);
  const json& job = j["jobs"]["list"][0];
  EXPECT_EQ(job["ranks_per_node"], (json{{"i-0aaa", 2}, {"i-0abc", 1}}));
  EXPECT_TRUE(job["training"].is_null()) << "nothing reported: missing, not zero";
  EXPECT_TRUE(job["history"][0][2]["loss"].is_null()) << "a NaN loss is missing, not a number";
  EXPECT_FALSE(job.contains("name")) << "without the token: ids only, as /metrics";
  EXPECT_FALSE(job.contains("user"));
  EXPECT_FALSE(job.contains("argv"));

  in.logs_allowed = true;
  const json t = json::parse(StatusPageJson(in));
  EXPECT_EQ(t["jobs"]["list"][0]["name"], "train\xef\xbf\xbd") << "bytes that are not UTF-8 become U+FFFD";
  EXPECT_EQ(t["jobs"]["list"][0]["user"], "alice");

  StatusPageInput alone;  // a standalone agent: no gossip, no roster, no jobs
  const json a = json::parse(StatusPageJson(alone));
  EXPECT_TRUE(a["members"].is_null());
  EXPECT_TRUE(a["roster"].is_null());
  EXPECT_TRUE(a["jobs"].is_null());
  EXPECT_TRUE(a["agent"]["ready_after_ms"].is_null());
}

metrics::HttpRequest Get(const std::string& target, const std::string& authorization = "") {
  metrics::HttpRequest r;
  r.method = "GET";
  const size_t q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  r.authorization = authorization;
  return r;
}

class StatusPageTest : public ::testing::Test {
 protected:
  StatusPageTest()
      : page_(env_, {[] { return Formed().status; }, [] { return Formed().members; }, [] { return std::shared_ptr<jobs::Jobs>(); }},
              "00112233445566778899aabbccddeeff") {}
  FakeEnv env_;
  StatusPage page_;
};

TEST_F(StatusPageTest, ServesThePageItsFilesAndItsApi) {
  for (const char* path : {"/", "/page.js", "/page.css", "/api/status"}) {
    std::optional<metrics::HttpReply> r = page_.Serve(Get(path));
    ASSERT_TRUE(r.has_value()) << path;
    EXPECT_EQ(r->status, 200) << path;
    EXPECT_FALSE(r->body.empty()) << path;
  }
  EXPECT_NE(page_.Serve(Get("/"))->body.find("<script src=\"page.js\""), std::string::npos);
  EXPECT_EQ(page_.Serve(Get("/page.js"))->content_type, "text/javascript; charset=utf-8");
  EXPECT_FALSE(page_.Serve(Get("/nothing")).has_value()) << "left to the caller's 404";
  const json s = json::parse(page_.Serve(Get("/api/status"))->body);
  EXPECT_EQ(s["agent"]["instance_id"], "i-0abc");
  EXPECT_FALSE(s["logs"].get<bool>());
  EXPECT_TRUE(json::parse(page_.Serve(Get("/api/status", "Bearer 00112233445566778899aabbccddeeff"))->body)["logs"].get<bool>());
}

TEST_F(StatusPageTest, TheOutputOfJobsNeedsTheTokenAndIsBounded) {
  for (const std::string auth :
       {"", "Bearer 00112233445566778899aabbccddeefe", "Bearer ", "00112233445566778899aabbccddeeff", "Bearer 00112233445566778899aabbccddeeff0"}) {
    std::optional<metrics::HttpReply> r = page_.Serve(Get("/api/logs?job=j-1", auth));
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->status, 401) << "'" << auth << "'";
    EXPECT_NE(r->body.find("needs the page token"), std::string::npos) << r->body;
  }
  const std::string token = "Bearer 00112233445566778899aabbccddeeff";
  EXPECT_EQ(page_.Serve(Get("/api/logs", token))->status, 400) << "no job";
  EXPECT_EQ(page_.Serve(Get("/api/logs?job=../../etc", token))->status, 400);
  EXPECT_EQ(page_.Serve(Get("/api/logs?job=j-1&after=x", token))->status, 400);
  EXPECT_EQ(page_.Serve(Get("/api/logs?job=j-1&after=99999999999999999999", token))->status, 400);
  const json first = json::parse(page_.Serve(Get("/api/logs?job=j-1&after=0", token))->body);
  EXPECT_EQ(first["lines"].size(), 0u);
  EXPECT_EQ(first["next"], 1);
  for (size_t i = 2; i <= StatusPage::kMaxFollowed; ++i) {
    EXPECT_EQ(page_.Serve(Get("/api/logs?job=j-" + std::to_string(i), token))->status, 200) << i;
  }
  std::optional<metrics::HttpReply> full = page_.Serve(Get("/api/logs?job=j-99", token));
  EXPECT_EQ(full->status, 503) << "at most kMaxFollowed jobs followed at once";
  EXPECT_NE(full->body.find("follows 8 jobs' output already"), std::string::npos) << full->body;
  EXPECT_EQ(page_.Serve(Get("/api/logs?job=j-1", token))->status, 200) << "one already followed still answers";
}

}  // namespace
}  // namespace dlagent
