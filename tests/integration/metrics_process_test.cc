// /metrics on a local cluster of 4 real agents, read by the real tools (Debian's prometheus package):
// promtool checks every node's output, and a Prometheus server scrapes all four while a job runs and answers
// PromQL about every node's phase, the job's ranks and the loss its ranks report (dlps.report, the Python
// helper the package ships).
#include <unistd.h>

#include <regex>
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
  // Each rank reports its step and a loss that falls with it, ten times a second.
  RunResult d = Ctl(c(), 0,
                    {"run", "--detach", "--env", std::string("PYTHONPATH=") + DLAGENT_PYTHON_DIR, "--", "/usr/bin/python3", "-c",
                     "import dlps, time\nfor step in range(1, 100000):\n    dlps.report(step=step, loss=1.0 / step)\n    time.sleep(0.1)\n"});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  const std::string id = d.output.substr(0, d.output.find('\n'));
  ASSERT_EQ(WaitState(c(), 0, id, {"running"})["running"], kNodes);
  // agentctl jobs shows the step once a report has come (its coordinator asks every node).
  nlohmann::json job;
  for (const auto until = steady_clock::now() + seconds(30); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(100))) {
    job = Job(c(), 2, id);
    if (!job.is_null() && job["training"].is_object() && job["training"]["step"].get<int>() >= 3) break;
  }
  ASSERT_TRUE(job["training"].is_object()) << job.dump() << "\n" << Ctl(c(), 0, {"logs", id}).output;
  EXPECT_GE(job["training"]["step"].get<int>(), 3) << job.dump();
  EXPECT_GT(job["training"]["values"]["loss"].get<double>(), 0) << job.dump();
  const RunResult table = Ctl(c(), 1, {"jobs"});
  EXPECT_TRUE(HasLine(table.output, id, " ago)")) << "the STEP column: N (age ago)\n" << table.output;

  testing::TempDir dir;
  for (int i : testing::Range(kNodes)) {
    const RunResult m = Curl(c().MetricsUrl(i));
    ASSERT_EQ(m.exit_code, 0) << c().MetricsUrl(i) << ": " << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_phase{phase=\"ready\"} 1")) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_roster_members 4")) << m.output;
    EXPECT_NE(m.output.find("\ndlagent_ready_seconds "), std::string::npos) << m.output;
    for (const char* service : {"imds", "sqs"}) {  // every node asked instance metadata and the discovery queue
      EXPECT_TRUE(std::regex_search(
          m.output, std::regex(std::string("\ndlagent_aws_requests_total\\{service=\"") + service + "\",outcome=\"ok\"\\} [1-9][0-9]*\n")))
          << service << "\n"
          << m.output;
    }
    EXPECT_TRUE(Has(m.output, "dlagent_members{state=\"alive\"} 4")) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_gpus " + std::to_string(c().gpus(i)))) << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_jobs{state=\"running\"} " + std::string(i == 0 ? "1" : "0"))) << "node 0 coordinates the job\n" << m.output;
    EXPECT_NE(m.output.find("\ndlagent_training_value{job_id=\"" + id + "\",name=\"loss\"} "), std::string::npos) << m.output;
    EXPECT_NE(m.output.find("\ndlagent_training_last_step_timestamp_seconds{job_id=\"" + id + "\"} "), std::string::npos) << m.output;
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
  // The job's loss from every node's ranks, and how long since the last step (what a "stuck trainer" alert
  // would watch).
  const nlohmann::json loss = Query(port, "dlagent_training_value{name=\"loss\",job_id=\"" + id + "\"} < 1");
  EXPECT_EQ(loss.size(), static_cast<size_t>(kNodes)) << "each node's ranks report; the loss falls below 1 after step 1\n" << loss.dump();
  const nlohmann::json age = Query(port, "max(time() - dlagent_training_last_step_timestamp_seconds{job_id=\"" + id + "\"})");
  ASSERT_EQ(age.size(), 1u) << age.dump();
  EXPECT_LT(std::stod(age[0]["value"][1].get<std::string>()), 30) << age.dump();
  const nlohmann::json up = Query(port, "up{job=\"dlagent\"} == 0");
  EXPECT_EQ(up.size(), 0u) << "targets down: " << up.dump();

  // agentctl health: the job reports steps, so it is not stuck; once its ranks stop (SIGSTOP on every node's
  // ranks would do; here a second job reports one step and sleeps) a short --stuck-after calls it stuck.
  EXPECT_EQ(Ctl(c(), 3, {"health", "--stuck-after", "1m"}).exit_code, 0) << Ctl(c(), 3, {"health"}).output;
  RunResult quiet = Ctl(c(), 0,
                        {"run", "--detach", "--name", "quiet", "--env", std::string("PYTHONPATH=") + DLAGENT_PYTHON_DIR, "--", "/usr/bin/python3",
                         "-c", "import dlps, time\ndlps.report(step=1, loss=2.0)\ntime.sleep(120)\n"});
  ASSERT_EQ(quiet.exit_code, 0) << quiet.output;
  const std::string quiet_id = quiet.output.substr(0, quiet.output.find('\n'));
  RunResult health;
  for (const auto until = steady_clock::now() + seconds(30); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(200))) {
    health = Ctl(c(), 3, {"health", "--stuck-after", "1s"});
    if (health.exit_code == 3) break;
  }
  EXPECT_EQ(health.exit_code, 3) << health.output;
  EXPECT_TRUE(HasLine(health.output, "job " + quiet_id + " (quiet) is stuck: its ranks reported no step for", "(last: step 1; --stuck-after 1s)"))
      << health.output;
  EXPECT_FALSE(HasLine(health.output, "job " + id, "is stuck")) << "the busy job still reports\n" << health.output;
  ASSERT_EQ(Ctl(c(), 1, {"kill", id}).exit_code, 0);
  ASSERT_EQ(Ctl(c(), 1, {"kill", quiet_id}).exit_code, 0);
}

}  // namespace
}  // namespace dlagent
