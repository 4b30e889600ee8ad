#include <gtest/gtest.h>

#include "agent/ctl/job_commands.h"

namespace dlagent {
namespace {

using namespace std::chrono;
namespace jpb = jobs::v1;

jpb::JobSummary Job(const std::string& id, jpb::JobState state, int64_t step_unix_ms) {
  jpb::JobSummary s;
  s.set_id(id);
  s.set_state(state);
  if (step_unix_ms > 0) {
    s.mutable_training()->set_step(10);
    s.mutable_training()->set_step_unix_ms(step_unix_ms);
  }
  return s;
}

TEST(StuckJobsTest, OnlyRunningJobsThatReportedAndWentQuietTooLong) {
  const int64_t now = 10'000'000;
  jpb::JobList list;
  *list.add_jobs() = Job("j-quiet", jpb::JOB_STATE_RUNNING, now - 11 * 60'000);   // 11 minutes without a step
  *list.add_jobs() = Job("j-busy", jpb::JOB_STATE_RUNNING, now - 2'000);          // a step 2 s ago
  *list.add_jobs() = Job("j-silent", jpb::JOB_STATE_RUNNING, 0);                  // never reports: not judged
  *list.add_jobs() = Job("j-done", jpb::JOB_STATE_SUCCEEDED, now - 60 * 60'000);  // ended: not judged
  *list.add_jobs() = Job("j-restarting", jpb::JOB_STATE_RESTARTING, now - 60 * 60'000);
  const std::vector<jpb::JobSummary> stuck = StuckJobs(list, now, minutes(10));
  ASSERT_EQ(stuck.size(), 1u);
  EXPECT_EQ(stuck[0].id(), "j-quiet");
  EXPECT_EQ(StuckJobs(list, now, minutes(12)).size(), 0u);
  EXPECT_EQ(StuckJobs(list, now, seconds(1)).size(), 2u);
}

}  // namespace
}  // namespace dlagent
