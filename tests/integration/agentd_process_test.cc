// agentd as a process: sd_notify protocol, agentctl, SIGHUP reloads, SIGTERM, permissions.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/dlps_job.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;
using testing::RunCommand;
using testing::Subprocess;

// A datagram socket bound where NOTIFY_SOCKET points, as systemd does.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ADD_FAILURE() << "bind " << path;
  }
  ~NotifySocket() { ::close(fd_); }
  // Waits for a message containing `want`; returns every message seen until then (or until timeout).
  bool WaitFor(const std::string& want, milliseconds timeout, std::vector<std::string>* seen = nullptr) {
    const auto deadline = steady_clock::now() + timeout;
    while (steady_clock::now() < deadline) {
      auto left = duration_cast<microseconds>(deadline - steady_clock::now());
      timeval tv{static_cast<time_t>(left.count() / 1000000), static_cast<suseconds_t>(left.count() % 1000000)};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) continue;
      std::string msg(buf, static_cast<size_t>(n));
      messages.push_back(msg);
      if (seen) seen->push_back(msg);
      if (msg.find(want) != std::string::npos) return true;
    }
    return false;
  }
  std::vector<std::string> messages;

 private:
  std::string path_;
  int fd_;
};

class AgentdProcessTest : public ::testing::Test {
 protected:
  void WriteConfig(const std::string& cluster, const std::string& extra = "") {
    dir_.Write("agentd.toml", "[agent]\nsocket = \"" + sock_ + "\"\n" + extra + "[cluster]\nname = \"" + cluster +
                                  "\"\n[ps]\nport = 0\nauthenticate = false\n"  // no cluster key here
                                  "[metrics]\nport = 0\n");
  }
  std::unique_ptr<Subprocess> StartAgent(std::vector<std::string> env = {}) {
    env.push_back("NOTIFY_SOCKET=" + notify_path_);
    return std::make_unique<Subprocess>(std::vector<std::string>{DLAGENT_AGENTD, "--config", dir_.Join("agentd.toml")}, env, dir_.Join("agentd.log"));
  }
  testing::RunResult Ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {DLAGENT_AGENTCTL, "--socket", sock_});
    return RunCommand(args);
  }

  testing::TempDir dir_;
  std::string sock_ = dir_.Join("run/agentd.sock");
  std::string notify_path_ = dir_.Join("notify");
  NotifySocket notify_{notify_path_};
};

// /metrics of a real agent whose node has NVML (the fake driver library, found as libnvidia-ml.so.1 on
// LD_LIBRARY_PATH as the real one would be): the GPU figures are there, and only GET and HEAD are served.
TEST_F(AgentdProcessTest, MetricsServeTheGpusNvmlFigures) {
  WriteConfig("gpus");
  ASSERT_EQ(::symlink(DLAGENT_FAKE_NVML, dir_.Join("libnvidia-ml.so.1").c_str()), 0);
  auto agent = StartAgent({"LD_LIBRARY_PATH=" + dir_.path()});
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
  testing::RunResult status = Ctl({"status", "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  const std::string url = nlohmann::json::parse(status.output).at("metrics_url");
  ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << url;
  testing::RunResult page;
  for (const auto until = steady_clock::now() + seconds(10); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(50))) {
    page = RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", url});
    if (page.output.find("dlagent_gpu_stats_timestamp_seconds") != std::string::npos) break;  // NVML's first read is in
  }
  EXPECT_NE(page.output.find("\ndlagent_gpu_utilization_ratio{gpu=\"1\"} 0.9\n"), std::string::npos) << page.output;
  EXPECT_NE(page.output.find("\ndlagent_gpu_memory_total_bytes{gpu=\"0\"} 85899345920\n"), std::string::npos) << page.output;
  EXPECT_NE(page.output.find("\ndlagent_gpu_ecc_errors_total{gpu=\"0\",type=\"corrected\"} 7\n"), std::string::npos) << page.output;
  EXPECT_NE(page.output.find("\ndlagent_phase{phase=\"serving\"} 1\n"), std::string::npos) << page.output;
  testing::RunResult post = RunCommand({"/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--max-time", "5", url});
  EXPECT_EQ(post.output, "405");
  agent->Signal(SIGTERM);
  EXPECT_TRUE(agent->Wait(seconds(10)).has_value());
}

// agentctl page: the status page's URL with the page token, which only the agent's user can read, and which
// each start replaces (a token read before a restart no longer shows the output of jobs).
TEST_F(AgentdProcessTest, PagePrintsTheUrlWithATokenEachStartReplaces) {
  WriteConfig("page");
  std::string first_token;
  for (int start = 0; start < 2; ++start) {
    auto agent = StartAgent();
    ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
    struct stat st {};
    ASSERT_EQ(::stat(dir_.Join("run/page.token").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    testing::RunResult page = Ctl({"page"});
    ASSERT_EQ(page.exit_code, 0) << page.output;
    const std::regex url("^(http://127\\.0\\.0\\.1:[0-9]+/)#token=([0-9a-f]{32})\n$");
    std::smatch m;
    ASSERT_TRUE(std::regex_match(page.output, m, url)) << page.output;
    const std::string base = m[1], token = m[2];
    const testing::RunResult logs =
        RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", "-H", "Authorization: Bearer " + token, base + "api/logs?job=j-1"});
    EXPECT_NE(logs.output.find("\"job\":\"j-1\""), std::string::npos) << logs.output;
    if (start == 0) {
      first_token = token;
    } else {
      EXPECT_NE(token, first_token);
      const testing::RunResult old =
          RunCommand({"/usr/bin/curl", "-sS", "--max-time", "5", "-H", "Authorization: Bearer " + first_token, base + "api/logs?job=j-1"});
      EXPECT_NE(old.output.find("needs the page token"), std::string::npos) << old.output;
    }
    agent->Signal(SIGTERM);
    ASSERT_TRUE(agent->Wait(seconds(10)).has_value());
    notify_.messages.clear();
  }
  // No page without the metrics listener: agentctl says why.
  dir_.Write("agentd.toml", "[agent]\nsocket = \"" + sock_ + "\"\n[ps]\nenabled = false\n[metrics]\nenabled = false\n");
  auto agent = StartAgent();
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
  testing::RunResult none = Ctl({"page"});
  EXPECT_EQ(none.exit_code, 1) << none.output;
  EXPECT_NE(none.output.find("serves no status page yet (metrics.enabled = false"), std::string::npos) << none.output;
}

TEST_F(AgentdProcessTest, ReadyServesStatusAndStopsCleanlyOnSigterm) {
  WriteConfig("alpha");
  auto agent = StartAgent();
  std::vector<std::string> seen;
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10), &seen)) << agent->Output();
  EXPECT_NE(seen.back().find("STATUS=serving agentctl on " + sock_), std::string::npos) << seen.back();

  // READY=1 is sent only once the socket serves: agentctl works at once.
  testing::RunResult status = Ctl({"status", "--json"});
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("\"cluster_name\": \"alpha\""), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("\"phase\": \"serving\""), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("\"pid\": " + std::to_string(agent->pid())), std::string::npos) << status.output;
  {  // memory: the heap in use is part of what is resident, and both are there
    const nlohmann::json j = nlohmann::json::parse(status.output);
    const uint64_t rss = j.at("rss_bytes"), heap = j.at("heap_in_use_bytes");
#if !defined(__SANITIZE_ADDRESS__)  // ASan's allocator answers mallinfo2 with zeros
    EXPECT_GT(heap, 0u);
#endif
    EXPECT_GT(rss, heap);
    EXPECT_LT(rss, uint64_t{1} << 30) << "an idle agent is not a gigabyte";
  }
  testing::RunResult text = Ctl({"status"});
  EXPECT_EQ(text.exit_code, 0);
  EXPECT_NE(text.output.find("cluster:   alpha"), std::string::npos) << text.output;
  EXPECT_NE(text.output.find("MiB of heap in use"), std::string::npos) << text.output;
  testing::RunResult version = Ctl({"version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.output.find("agentd 0."), std::string::npos) << version.output;

  const auto stop_start = steady_clock::now();
  agent->Signal(SIGTERM);
  EXPECT_TRUE(notify_.WaitFor("STOPPING=1", seconds(5))) << agent->Output();
  std::optional<int> st = agent->Wait(seconds(5));
  ASSERT_TRUE(st.has_value()) << "agentd did not exit within 5 s of SIGTERM";
  EXPECT_LT(steady_clock::now() - stop_start, seconds(5));
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << agent->Output();
  EXPECT_NE(::access(sock_.c_str(), F_OK), 0) << "socket left behind";

  testing::RunResult gone = Ctl({"status"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_EQ(gone.output, "agentctl: agentd is not running: no socket at " + sock_ + "\n");
}

TEST_F(AgentdProcessTest, ServesAParameterServerShardToOneJobAfterAnother) {
  WriteConfig("ps");
  auto agent = StartAgent();
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
  const std::string marker = "parameter-server shard serving on 0.0.0.0:";
  const size_t at = agent->Output().find(marker);
  ASSERT_NE(at, std::string::npos) << agent->Output();
  const std::string server = "127.0.0.1:" + std::to_string(std::stoi(agent->Output().substr(at + marker.size())));
  for (int workers : {1, 2}) {
    auto ranks = testing::StartTrainers(dir_, server, workers, {"--samples", "2000", "--features", "10", "--epochs", "2", "--verify"},
                                        "train" + std::to_string(workers) + "-");
    for (int r = 0; r < workers; ++r) EXPECT_EQ(ranks[r]->Wait(seconds(60)), 0) << ranks[r]->Output();
    EXPECT_NE(ranks[0]->Output().find("tolerance 1e-05): ok"), std::string::npos) << ranks[0]->Output();
  }
  agent->Signal(SIGTERM);
  EXPECT_EQ(agent->Wait(seconds(10)), 0) << agent->Output();
}

TEST_F(AgentdProcessTest, WatchdogIsPettedAtHalfTheInterval) {
  WriteConfig("alpha");
  auto agent = StartAgent({"WATCHDOG_USEC=400000"});  // 400 ms: pets every 200 ms
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
  const size_t before = notify_.messages.size();
  notify_.WaitFor("never", milliseconds(1100));
  int pets = 0;
  for (size_t i = before; i < notify_.messages.size(); ++i) pets += notify_.messages[i] == "WATCHDOG=1";
  EXPECT_GE(pets, 4) << "expected a WATCHDOG=1 about every 200 ms";
  EXPECT_LE(pets, 7);
}

// WATCHDOG=1 vouches for the loops: one that hangs stops the pets (and systemd restarts the agent).
TEST_F(AgentdProcessTest, AHungLoopStopsTheWatchdog) {
  WriteConfig("alpha");
  auto agent = StartAgent({"WATCHDOG_USEC=400000", "DLAGENT_TEST_HANG=ps"});  // the shard's accept loop hangs
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
  ASSERT_TRUE(notify_.WaitFor("WATCHDOG=1", seconds(2))) << "pets while the hang is younger than 3 s";
  std::this_thread::sleep_for(milliseconds(4000));
  notify_.WaitFor("never", milliseconds(300));  // what was sent meanwhile
  const size_t before = notify_.messages.size();
  notify_.WaitFor("never", milliseconds(1200));
  int pets = 0;
  for (size_t i = before; i < notify_.messages.size(); ++i) pets += notify_.messages[i] == "WATCHDOG=1";
  EXPECT_EQ(pets, 0) << "no WATCHDOG=1 once the ps loop has not turned for 3 s";
  EXPECT_NE(agent->Output().find("watchdog: the ps loop made no progress for 3s; withholding WATCHDOG=1"), std::string::npos) << agent->Output();
  EXPECT_EQ(Ctl({"status"}).exit_code, 0) << "the rest of the agent still answers";
}

// A stop that cannot finish (here the shard's loop is hung, so its thread is never joined) ends the process
// once agent.stop_timeout has passed, saying so: systemd never waits out its TimeoutStopSec on a hung agent.
TEST_F(AgentdProcessTest, AStopThatHangsEndsTheProcessOnceItsBudgetHasPassed) {
  WriteConfig("alpha", "stop_timeout = \"1s\"\n");
  auto agent = StartAgent({"DLAGENT_TEST_HANG=ps"});
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();
  const auto asked = steady_clock::now();
  agent->Signal(SIGTERM);
  const std::optional<int> status = agent->Wait(seconds(20));
  ASSERT_TRUE(status.has_value()) << "agentd did not end after SIGTERM: " << agent->Output();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << *status;
  EXPECT_GE(steady_clock::now() - asked, milliseconds(900));
  EXPECT_NE(agent->Output().find("agentd: stopping took longer than agent.stop_timeout (1s): a part or a call in flight did not end"),
            std::string::npos)
      << agent->Output();
}

TEST_F(AgentdProcessTest, SighupAppliesAGoodConfigAndRefusesABadOne) {
  WriteConfig("alpha");
  auto agent = StartAgent();
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10))) << agent->Output();

  WriteConfig("beta", "log_level = \"debug\"\n");
  agent->Signal(SIGHUP);
  EXPECT_TRUE(notify_.WaitFor("RELOADING=1", seconds(5)));
  EXPECT_TRUE(notify_.WaitFor("READY=1", seconds(5)));
  testing::RunResult s = Ctl({"status", "--json"});
  EXPECT_NE(s.output.find("\"cluster_name\": \"beta\""), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("\"config_generation\": 2"), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("\"log_level\": \"debug\""), std::string::npos) << s.output;

  dir_.Write("agentd.toml", "[cluster]\nname = 42\n");
  agent->Signal(SIGHUP);
  EXPECT_TRUE(notify_.WaitFor("READY=1", seconds(5)));
  s = Ctl({"status", "--json"});
  EXPECT_EQ(s.exit_code, 0) << "agent must keep serving after a bad reload";
  EXPECT_NE(s.output.find("\"cluster_name\": \"beta\""), std::string::npos) << s.output;
  EXPECT_NE(s.output.find("\"config_generation\": 2"), std::string::npos) << s.output;
  const std::string log = agent->Output();
  EXPECT_NE(log.find("reload refused"), std::string::npos) << log;
  EXPECT_NE(log.find("agentd.toml:2:8: cluster.name: expected a string"), std::string::npos) << log;
}

TEST_F(AgentdProcessTest, SecondAgentOnTheSameSocketExitsWithAClearError) {
  WriteConfig("alpha");
  auto first = StartAgent();
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10)));
  testing::RunResult second = RunCommand({DLAGENT_AGENTD, "--config", dir_.Join("agentd.toml")});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.output.find("another agentd is already serving on " + sock_), std::string::npos) << second.output;
  EXPECT_EQ(Ctl({"status"}).exit_code, 0);
}

TEST_F(AgentdProcessTest, CheckConfigExitCodes) {
  WriteConfig("alpha");
  testing::RunResult ok = RunCommand({DLAGENT_AGENTD, "--config", dir_.Join("agentd.toml"), "--check-config"});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("valid"), std::string::npos);
  dir_.Write("bad.toml", "[agent]\nlog_level = \"loud\"\n");
  testing::RunResult bad = RunCommand({DLAGENT_AGENTD, "--config", dir_.Join("bad.toml"), "--check-config"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("bad.toml:2:13: agent.log_level: \"loud\" is not one of"), std::string::npos) << bad.output;
  testing::RunResult missing = RunCommand({DLAGENT_AGENTD, "--config", dir_.Join("nope.toml"), "--check-config"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("cannot read"), std::string::npos) << missing.output;
  testing::RunResult level = RunCommand({DLAGENT_AGENTD, "--config", dir_.Join("agentd.toml"), "--log-level", "loud"});
  EXPECT_EQ(level.exit_code, 1);
  EXPECT_NE(level.output.find("unknown log level \"loud\""), std::string::npos) << level.output;
}

TEST_F(AgentdProcessTest, HelpOnEveryCommand) {
  for (std::vector<std::string> args : {std::vector<std::string>{DLAGENT_AGENTD, "--help"},
                                        {DLAGENT_AGENTCTL, "--help"},
                                        {DLAGENT_AGENTCTL, "status", "--help"},
                                        {DLAGENT_AGENTCTL, "version", "--help"}}) {
    testing::RunResult r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 0) << args.back();
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << r.output;
  }
  testing::RunResult none = RunCommand({DLAGENT_AGENTCTL});
  EXPECT_EQ(none.exit_code, 2) << none.output;
  testing::RunResult bogus = RunCommand({DLAGENT_AGENTCTL, "frobnicate"});
  EXPECT_EQ(bogus.exit_code, 2) << bogus.output;
  // The command's own options after "--" are the command's, also after agentctl's repeatable options.
  testing::RunResult run = RunCommand(
      {DLAGENT_AGENTCTL, "-s", dir_.Join("none.sock"), "run", "--env", "A=1", "-e", "B=2", "--nodes", "0", "--nodes", "1", "--", "sh", "-c", "true"});
  EXPECT_EQ(run.exit_code, 1) << "parsed, then no agent to ask\n" << run.output;
  EXPECT_NE(run.output.find("agentd is not running"), std::string::npos) << run.output;
}

// Runs agentctl as user nobody (needs root and setpriv).
testing::RunResult CtlAsNobody(const std::string& sock) {
  return RunCommand({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", DLAGENT_AGENTCTL, "--socket", sock, "status"});
}

TEST_F(AgentdProcessTest, OtherUsersAreRefused) {
  if (::geteuid() != 0 || RunCommand({"setpriv", "--version"}).exit_code != 0) GTEST_SKIP() << "needs root and setpriv";
  WriteConfig("alpha");
  auto agent = StartAgent();
  ASSERT_TRUE(notify_.WaitFor("READY=1", seconds(10)));

  // The file system says no: agentctl names the socket and what to do.
  ::chmod(dir_.path().c_str(), 0755);
  testing::RunResult denied = CtlAsNobody(sock_);
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_NE(denied.output.find("permission denied on " + sock_), std::string::npos) << denied.output;
  EXPECT_NE(denied.output.find("group dlagent"), std::string::npos) << denied.output;

  // With the file system opened up, the agent's peer-credential check still refuses.
  ::chmod(dir_.Join("run").c_str(), 0777);
  ::chmod(sock_.c_str(), 0777);
  testing::RunResult refused = CtlAsNobody(sock_);
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.output.find("closed the connection"), std::string::npos) << refused.output;
  EXPECT_NE(agent->Output().find("refused a connection from uid 65534"), std::string::npos) << agent->Output();
  EXPECT_EQ(Ctl({"status"}).exit_code, 0);
}

}  // namespace
}  // namespace dlagent
