#pragma once
// What the NodeJobs tests share (node_jobs_test.cc, node_jobs_output_test.cc): a job's spec and start request,
// a node's options, and waits on what the node holds.
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "agent/jobs/node_jobs.h"

namespace dlagent::jobs::node_jobs_testing {

using namespace std::chrono;

inline pb::JobSpec Spec(const std::string& id, const std::vector<std::string>& argv, int64_t grace_ms = 2000) {
  pb::JobSpec s;
  s.set_id(id);
  s.set_name("test");
  for (auto& a : argv) s.add_argv(a);
  s.set_uid(::geteuid());
  s.set_gid(::getegid());
  s.set_user("me");
  s.set_workdir("/");
  s.set_grace_ms(grace_ms);
  return s;
}

inline pb::StartRequest Start(const pb::JobSpec& spec, int ranks) {
  pb::StartRequest r;
  *r.mutable_spec() = spec;
  for (int i = 0; i < ranks; ++i) {
    pb::RankSpec* rs = r.add_ranks();
    rs->set_rank(i);
    rs->set_local_rank(i);
    rs->add_env("DLAGENT_RANK=" + std::to_string(i));
  }
  return r;
}

inline NodeJobsOptions Options(const std::string& node) {
  NodeJobsOptions o;
  o.node = node;
  o.journal = false;
  o.base_env = [] { return std::vector<std::string>{"PATH=/usr/bin:/bin", "FROM_NODE=yes"}; };
  return o;
}

// Waits until the job on `jobs` has ended (every rank exited, all output read); the job's view then.
inline pb::NodeJob WaitEnded(NodeJobs& jobs, const std::string& id, seconds limit = seconds(10)) {
  pb::QueryRequest q;
  q.set_job(id);
  q.set_max_lines(10000);
  const auto until = steady_clock::now() + limit;
  for (;;) {
    Result<pb::QueryReply> r = jobs.Query(q);
    EXPECT_TRUE(r.ok());
    if (!r.ok()) return {};
    if (r->jobs(0).ended()) return r->jobs(0);
    if (steady_clock::now() > until) {
      ADD_FAILURE() << "job " << id << " has not ended after " << limit.count() << " s";
      return r->jobs(0);
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
}

// Every line the job holds, asked for a page at a time (a reply holds at most 10,000 lines or 1 MiB).
inline pb::NodeJob AllLines(NodeJobs& jobs, const std::string& id) {
  pb::QueryRequest q;
  q.set_job(id);
  q.set_max_lines(10000);
  pb::NodeJob all;
  for (bool first = true;; first = false) {
    Result<pb::QueryReply> r = jobs.Query(q);
    EXPECT_TRUE(r.ok());
    if (!r.ok()) return all;
    const pb::NodeJob& page = r->jobs(0);
    if (first) {
      all = page;
    } else {
      for (const auto& l : page.lines()) *all.add_lines() = l;
    }
    if (page.lines_size() == 0) return all;
    q.set_after_seq(page.next_seq() - 1);
  }
}

}  // namespace dlagent::jobs::node_jobs_testing
