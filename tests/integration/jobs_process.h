#pragma once
// What the jobs process tests share (jobs_process_test.cc, jobs_launchers_test.cc): agentctl against a local
// cluster of 4 real agents, the job as `agentctl jobs --json` shows it, and the fixture that forms the cluster.
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/local_cluster.h"

namespace dlagent::jobs_process {

using namespace std::chrono;
using testing::LocalCluster;
using testing::Range;
using testing::RunCommand;
using testing::RunResult;

constexpr int kNodes = 4;

inline RunResult Ctl(LocalCluster& c, int node, std::vector<std::string> args, seconds timeout = seconds(60)) {
  args.insert(args.begin(), {DLAGENT_AGENTCTL, "-s", c.Sock(node)});
  return RunCommand(args, timeout);
}

inline std::string JobId(const std::string& output) {
  std::smatch m;
  return std::regex_search(output, m, std::regex("job (j-[0-9a-f]{12})")) ? m[1].str() : "";
}

// The job as `agentctl jobs --json` on `node` shows it.
inline nlohmann::json Job(LocalCluster& c, int node, const std::string& id) {
  RunResult r = Ctl(c, node, {"jobs", "--json"});
  if (r.exit_code != 0) return {};
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')), nullptr, false);
  if (j.is_discarded()) return {};
  for (const auto& job : j["jobs"]) {
    if (job["id"] == id) return job;
  }
  return {};
}

// Waits until the job's state is one of `states`; the job then (or as last seen).
inline nlohmann::json WaitState(LocalCluster& c, int node, const std::string& id, const std::set<std::string>& states, seconds limit = seconds(30)) {
  const auto until = steady_clock::now() + limit;
  nlohmann::json j;
  while (steady_clock::now() < until) {
    j = Job(c, node, id);
    if (!j.is_null() && states.count(j["state"].get<std::string>())) return j;
    std::this_thread::sleep_for(milliseconds(200));
  }
  return j;
}

// Whether one line of text holds both a and, after it, b.
inline bool HasLine(const std::string& text, const std::string& a, const std::string& b) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    const size_t p = line.find(a);
    if (p != std::string::npos && line.find(b, p + a.size()) != std::string::npos) return true;
  }
  return false;
}

class JobsProcessTest : public ::testing::Test {
 protected:
  void Form(testing::LocalClusterOptions o = {}) {
    o.expected = kNodes;
    cluster_ = std::make_unique<LocalCluster>(kNodes, o);
    ASSERT_EQ(cluster_->error(), "");
    for (int i : Range(kNodes)) cluster_->Start(i, i == 0);
    ASSERT_TRUE(cluster_->WaitPhase(Range(kNodes), "ready", seconds(60))) << cluster_->Describe(Range(kNodes));
  }
  LocalCluster& c() { return *cluster_; }
  std::unique_ptr<LocalCluster> cluster_;
};

}  // namespace dlagent::jobs_process
