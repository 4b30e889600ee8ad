// /metrics on a local cluster of 4 real agents, read by the real tools (Debian's prometheus package):
// promtool checks every node's output, and a Prometheus server scrapes all four while a job runs and answers
// PromQL about every node's phase, the job's ranks and the loss its ranks report (dlps.report, the Python
// helper the package ships).
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "jobs_process.h"
#include "tests/support/free_port.h"
#include "tests/support/local_cluster.h"
#include "tests/support/png.h"

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

class MetricsProcessTest : public JobsProcessTest {
 protected:
  // The status page of node 0 while job `id` runs: its JSON with and without the token, then the page itself in
  // headless Chromium (the DOM after its script ran, and a screenshot that is not blank).
  void CheckStatusPage(const std::string& id, testing::TempDir& dir);
};

// GET with the page token (none: "").
RunResult CurlWith(const std::string& url, const std::string& token) {
  std::vector<std::string> argv = {"/usr/bin/curl", "-sS", "--max-time", "5"};
  if (!token.empty()) argv.insert(argv.end(), {"-H", "Authorization: Bearer " + token});
  argv.push_back(url);
  return RunCommand(argv, seconds(10));
}

void MetricsProcessTest::CheckStatusPage(const std::string& id, testing::TempDir& dir) {
  if (::access("/usr/bin/chromium", X_OK) != 0) GTEST_SKIP() << "/usr/bin/chromium is not installed (scripts/deps.sh installs it)";
  // agentctl page: the URL, with the token for root (this test runs as root).
  const RunResult page = Ctl(c(), 0, {"page"});
  ASSERT_EQ(page.exit_code, 0) << page.output;
  const std::string prefix = "http://" + c().Ip(0) + ":7071/#token=";
  ASSERT_EQ(page.output.rfind(prefix, 0), 0u) << page.output;
  const std::string token = page.output.substr(prefix.size(), page.output.find('\n') - prefix.size());
  ASSERT_EQ(token.size(), 32u) << page.output;
  const std::string base = "http://" + c().Ip(0) + ":7071/";

  // The page's own thread asks the cluster once someone looks: wait for the job and a chart's worth of steps,
  // and for its output to be followed.
  nlohmann::json status, job;
  for (const auto until = steady_clock::now() + seconds(30); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(200))) {
    status = nlohmann::json::parse(CurlWith(base + "api/status", "").output, nullptr, false);
    job = nlohmann::json();
    if (status.is_object() && status["jobs"].is_object() && status["jobs"]["list"].is_array()) {
      for (const auto& j : status["jobs"]["list"]) {
        if (j["id"] == id) job = j;
      }
    }
    if (job.is_object() && job["history"].size() >= 3) break;
  }
  ASSERT_TRUE(job.is_object()) << status.dump();
  EXPECT_EQ(job["state"], "running") << job.dump();
  EXPECT_GE(job["history"].size(), 3u) << "a point a second at most\n" << job.dump();
  EXPECT_EQ(job["ranks_per_node"].size(), static_cast<size_t>(kNodes)) << job.dump();
  EXPECT_FALSE(job.contains("argv")) << "no command line without the token\n" << job.dump();
  EXPECT_FALSE(status["logs"].get<bool>());
  EXPECT_EQ(status["members"].size(), static_cast<size_t>(kNodes)) << status.dump();
  EXPECT_EQ(status["roster"]["nodes"].size(), static_cast<size_t>(kNodes)) << status.dump();
  EXPECT_EQ(status["timeline"].back()["phase"], "ready") << status.dump();
  const nlohmann::json with_token = nlohmann::json::parse(CurlWith(base + "api/status", token).output, nullptr, false);
  ASSERT_TRUE(with_token.is_object());
  EXPECT_TRUE(with_token["logs"].get<bool>());
  const RunResult refused = CurlWith(base + "api/logs?job=" + id, "");
  EXPECT_NE(refused.output.find("needs the page token"), std::string::npos) << refused.output;
  const RunResult wrong = CurlWith(base + "api/logs?job=" + id, std::string(32, '0'));
  EXPECT_NE(wrong.output.find("needs the page token"), std::string::npos) << wrong.output;
  nlohmann::json logs;
  for (const auto until = steady_clock::now() + seconds(30); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(200))) {
    logs = nlohmann::json::parse(CurlWith(base + "api/logs?job=" + id, token).output, nullptr, false);
    if (logs.is_object() && logs["lines"].is_array() && !logs["lines"].empty()) break;
  }
  ASSERT_TRUE(logs.is_object() && !logs["lines"].empty()) << logs.dump();
  EXPECT_NE(logs["lines"][0]["text"].get<std::string>().find("step "), std::string::npos) << logs.dump();

  // Chromium: the page as a browser draws it.
  const std::vector<std::string> chromium = {"/usr/bin/chromium",
                                             "--headless",
                                             "--no-sandbox",
                                             "--disable-gpu",
                                             "--user-data-dir=" + dir.Join("chromium"),
                                             "--virtual-time-budget=3000",
                                             "--window-size=1280,1500"};
  std::vector<std::string> argv = chromium;
  argv.insert(argv.end(), {"--dump-dom", page.output.substr(0, page.output.find('\n'))});
  const RunResult dom = RunCommand(argv, seconds(60));
  ASSERT_EQ(dom.exit_code, 0) << dom.output;
  const std::string& html = dom.output;
  EXPECT_NE(html.find("<body data-loaded=\"1\">"), std::string::npos) << "the script ran and drew /api/status\n" << html;
  for (int i : testing::Range(kNodes)) {
    EXPECT_NE(html.find("data-member=\"" + c().Id(i) + "\" data-state=\"alive\""), std::string::npos) << c().Id(i) << "\n" << html;
    EXPECT_NE(html.find("data-rank=\"" + std::to_string(i) + "\""), std::string::npos) << html;
  }
  EXPECT_TRUE(std::regex_search(html, std::regex("id=\"roster-note\"[^>]*data-generation=\"[1-9]"))) << html;
  EXPECT_NE(html.find("data-job=\"" + id + "\" data-state=\"running\""), std::string::npos) << html;
  const size_t chart = html.find("data-chart=\"" + id + " \xc2\xb7 loss\"");
  ASSERT_NE(chart, std::string::npos) << html;
  EXPECT_NE(html.find("<polyline points=", chart), std::string::npos) << "the loss is drawn\n" << html;
  const size_t log = html.find("data-log=\"" + id + "\"");
  ASSERT_NE(log, std::string::npos) << html;
  EXPECT_NE(html.find("step ", log), std::string::npos) << "the job's output shows\n" << html;
  EXPECT_NE(html.find("data-phase=\"ready\""), std::string::npos) << html;

  // A screenshot; with DLAGENT_UPDATE_SCREENSHOT=1 it replaces docs/status-page.png (the README shows it).
  argv = chromium;
  const std::string png = dir.Join("status-page.png");
  argv.insert(argv.end(), {"--hide-scrollbars", "--screenshot=" + png, page.output.substr(0, page.output.find('\n'))});
  const RunResult shot = RunCommand(argv, seconds(60));
  ASSERT_EQ(shot.exit_code, 0) << shot.output;
  std::ifstream in(png, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Result<testing::PngStats> stats = testing::ReadPngStats(bytes);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->width, 1280u);
  EXPECT_GE(stats->colours, 16u) << "a blank page has one or two colours";
  EXPECT_LT(stats->commonest_share, 0.95) << "the commonest colour covers " << stats->commonest_share;
  if (const char* update = std::getenv("DLAGENT_UPDATE_SCREENSHOT"); update != nullptr && std::string(update) == "1") {
    std::ofstream(std::string(DLAGENT_SOURCE_DIR) + "/docs/status-page.png", std::ios::binary) << bytes;
  }
}

TEST_F(MetricsProcessTest, EveryNodeServesMetricsThatPromtoolAcceptsAndPrometheusScrapes) {
  for (const char* tool : {"/usr/bin/prometheus", "/usr/bin/promtool", "/usr/bin/curl"}) {
    if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " is not installed (scripts/deps.sh installs it)";
  }
  Form();
  // Each rank reports its step and a loss that falls with it, ten times a second, and prints every tenth step.
  const std::string program =
      "import dlps, time\nfor step in range(1, 100000):\n    dlps.report(step=step, loss=1.0 / step)\n"
      "    if step % 10 == 0: print('step', step, flush=True)\n    time.sleep(0.1)\n";
  RunResult d = Ctl(c(), 0, {"run", "--detach", "--env", std::string("PYTHONPATH=") + DLAGENT_PYTHON_DIR, "--", "/usr/bin/python3", "-c", program});
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
    // Each agent checks its storage again once READY (in the background): wait for that check.
    RunResult m;
    for (const auto until = steady_clock::now() + seconds(10); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(100))) {
      m = Curl(c().MetricsUrl(i));
      if (Has(m.output, "dlagent_storage_mounted 1")) break;
    }
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
    EXPECT_TRUE(Has(m.output, "dlagent_storage_mounted 1")) << "the formation mounted the shared directory before READY\n" << m.output;
    EXPECT_TRUE(Has(m.output, "dlagent_storage_probe_ok 1")) << m.output;
    EXPECT_NE(m.output.find("\ndlagent_storage_probe_duration_seconds "), std::string::npos) << m.output;
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

  CheckStatusPage(id, dir);

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
