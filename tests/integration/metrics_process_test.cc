// /metrics on a local cluster of 4 real agents, read by the real tools (Debian's prometheus package):
// promtool checks every node's output, and a Prometheus server scrapes all four while a job runs and answers
// PromQL about every node's phase and the job's ranks.
#include <unistd.h>

#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "jobs_process.h"
#include "tests/support/free_port.h"
#include "tests/support/local_cluster.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using namespace jobs_process;
using testing::LocalCluster;
using testing::RunCommand;
using testing::RunResult;

RunResult Curl(const std::string& url) { return RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", url}, seconds(10)); }

bool Has(const std::string& text, const std::string& line) { return text.find("\n" + line + "\n") != std::string::npos; }

// Asks Prometheus's HTTP API; the "result" array of a vector answer (empty when there is none yet).
nlohmann::json Query(int port, const std::string& promql) {
  RunResult r = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", "-G", "--data-urlencode", "query=" + promql,
                            "http://127.0.0.1:" + std::to_string(port) + "/api/v1/query"},
                           seconds(10));
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  if (r.exit_code != 0 || j.is_discarded() || j.value("status", "") != "success") return nlohmann::json::array();
  return j["data"]["result"];
}

class MetricsProcessTest : public JobsProcessTest {};

TEST_F(MetricsProcessTest, EveryNodeServesMetricsThatPromtoolAcceptsAndPrometheusScrapes) {
  for (const char* tool : {"/usr/bin/prometheus", "/usr/bin/promtool", "/usr/bin/curl"}) {
    if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is not installed (scripts/deps.sh installs it)";
  }
  Form();
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--", "sh", "-c", "echo started; sleep 120"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 0, id, {"running"})["running"], kNodes);

  testing::TempDir dir;
  for (int i : testing::Range(kNodes)) {
    const RunResult m = Curl(c().MetricsUrl(i));
    ASSERT_EQ(m.exit_code, 0) << c().MetricsUrl(i) << ": " << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_phase{phase=\"ready\"} 1")) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_roster_members 4")) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_members{state=\"alive\"} 4")) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_gpus " + std::to_string(c().gpus(i)))) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_jobs{state=\"running\"} " + std::string(i == 0 ? "1" : "0"))) << "node 0 coordinates the job\n" << m.output;
    const std::string file = "node" + std::to_string(i) + ".txt";
    dir.Write(file, m.output);
    const RunResult check = RunCommand({"/bin/sh", "-c", "promtool check metrics < " + dir.Join(file)});
    EXPECT_EQ(check.exit_code, 0) << "node " << i << ": " << check.output;
    EXPECT_EQ(check.output, "") << "node " << i << ": promtool's findings";
  }

  // A Prometheus server beside the services, scraping every node each second.
  std::string targets;
  for (int i : testing::Range(kNodes)) targets += std::string(targets.empty() ? "" : ", ") + "'" + c().Ip(i) + ":7071'";
  dir.Write("prometheus.yml",
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: dlagent\n    static_configs:\n"
            "      - targets: [" +
                targets + "]\n");
  const int port = testing::FreePort();
  ASSERT_GT(port, 0);
  testing::Subprocess prometheus({"/usr/bin/prometheus", "--config.file=" + dir.Join("prometheus.yml"), "--storage.tsdb.path=" + dir.Join("tsdb"),
                                  "--web.listen-address=127.0.0.1:" + std::to_string(port)},
                                 {}, dir.Join("prometheus.log"));
  nlohmann::json ready;
  for (const auto until = steady_clock::now() + seconds(60); steady_clock::now() < until && ready.size() < static_cast<size_t>(kNodes);) {
    ready = Query(port, "dlagent_phase{phase=\"ready\"} == 1");
    if (ready.size() < static_cast<size_t>(kNodes)) std::this_thread::sleep_for(milliseconds(250));
  }
  ASSERT_EQ(ready.size(), static_cast<size_t>(kNodes)) << ready.dump() << "\n" << prometheus.Output();
  std::set<std::string> instances;
  for (const auto& s : ready) instances.insert(s["metric"]["instance"].get<std::string>());
  for (int i : testing::Range(kNodes)) EXPECT_EQ(instances.count(c().Ip(i) + ":7071"), 1u) << ready.dump();
  const nlohmann::json ranks = Query(port, "sum(dlagent_ranks_running)");
  ASSERT_EQ(ranks.size(), 1u) << ranks.dump();
  EXPECT_EQ(ranks[0]["value"][1], std::to_string(kNodes)) << ranks.dump();
  const nlohmann::json jobs = Query(port, "sum(dlagent_jobs{state=\"running\"})");
  ASSERT_EQ(jobs.size(), 1u) << jobs.dump();
  EXPECT_EQ(jobs[0]["value"][1], "1") << "the cluster's running jobs, each counted by its coordinator only\n" << jobs.dump();
  const nlohmann::json up = Query(port, "up{job=\"dlagent\"} == 0");
  EXPECT_EQ(up.size(), 0u) << "targets down: " << up.dump();
  ASSERT_EQ(Ctl(c(), 1, {"kill", id}).exit_code, 0);
}

}  // namespace
}  // namespace dlagent
