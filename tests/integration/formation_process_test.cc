// Cluster formation with real agentd processes on loopback (each node on its own 127.0.0.K with its own
// IMDS emulator; fauxqs for SQS; a local endpoint records CloudFormation signals). As root, every agent runs
// in a mount namespace of its own (unshare -m) and bind-mounts one shared directory.
//   - 8 nodes started in random order over 10 s: one roster everywhere, byte-identical workers files,
//     per-node profiles, the shared mount writable from every node, exactly one SUCCESS; a forged HELLO
//     on the queue is refused and counted;
//   - expected 10, 8 started: sealed at the deadline with 8 (min 6), or FAILURE naming 2 missing (min 9);
//   - the master killed before sealing: another leader seals;
//   - an agent restarted after READY: same files, one managed /etc/hosts block, back to READY;
//   - IMDS answering 500 for 5 s and SQS throttling: formation still completes.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "agent/ctl/control_client.h"
#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/discovery/hello.h"
#include "tests/emulators/imds/imds_emulator.h"
#include "tests/support/local_http_server.h"
#include "tests/support/sqs_emulator.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

constexpr char kKeyHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

int FreePort() {
  int t = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(t, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(t, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(t);
  return ntohs(a.sin_port);
}

std::string RawKey() {
  std::string key;
  for (size_t i = 0; i < 64; i += 2) key.push_back(static_cast<char>(std::stoi(std::string(kKeyHex + i, 2), nullptr, 16)));
  return key;
}

struct ClusterOptions {
  int expected = 8;
  int min = 0;
  std::string join_deadline = "60s";
  std::string reseal_settle = "5s";
  bool throttle_sqs = false;  // every other SQS request answered with ThrottlingException
};

class Cluster {
 public:
  Cluster(int n, ClusterOptions o) : n_(n), o_(std::move(o)) {
    dir_.Write("key", std::string(kKeyHex) + "\n");
    port_ = FreePort();
    subnet_ = 10 + static_cast<int>(std::random_device{}() % 200);  // 127.<subnet>.0.K: tests running at once do not meet
    std::string error;
    sqs_ = testing::SqsEmulator::Start(dir_.path(), &error);
    if (!sqs_) {
      error_ = error;
      return;
    }
    http_ = NewCurlHttpClient();
    env_ = NewPosixEnv();
    creds_ = std::make_unique<StaticCredentials>(AwsCredentials{"AKIDEXAMPLE", "secret", "", std::nullopt, "test"});
    sqs_client_ = std::make_unique<SqsClient>(*http_, *creds_, *env_, SqsOptions{sqs_->endpoint(), "us-east-1"});
    Result<std::string> url = sqs_client_->CreateQueue("formation-test");
    if (!url.ok()) {
      error_ = url.status().ToString();
      return;
    }
    queue_url_ = *url;
    sqs_endpoint_ = sqs_->endpoint();
    if (o_.throttle_sqs) StartThrottlingProxy();
    cfn_.server().Put("/signal", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      signals_.push_back(nlohmann::json::parse(req.body, nullptr, false));
      res.status = 200;
    });
    if (dlagent::Status st = cfn_.Start(); !st.ok()) error_ = st.ToString();
    if (root()) ::mkdir(Shared().c_str(), 0755);
    for (int i = 0; i < n_; ++i) {
      auto imds = testing::ImdsEmulator::Start(nlohmann::json{{"instance-id", Id(i)},
                                                              {"instance-type", "p4d.24xlarge"},
                                                              {"local-ipv4", Ip(i)},
                                                              {"mac", "0e:00:00:00:00:0" + std::to_string(i % 10)},
                                                              {"availability-zone", "us-east-1a"},
                                                              {"region", "us-east-1"}}
                                                   .dump());
      if (!imds.ok()) {
        error_ = imds.status().ToString();
        return;
      }
      imds_.push_back(std::move(*imds));
    }
    agents_.resize(n_);
  }
  ~Cluster() {
    for (auto& a : agents_) {
      if (a) a->Signal(SIGKILL);
    }
    agents_.clear();
    proxy_.Stop();
    cfn_.Stop();
  }

  const std::string& error() const { return error_; }
  static bool root() { return ::geteuid() == 0; }
  std::string Id(int i) const { return "i-" + std::string(i < 10 ? "0" : "") + std::to_string(i) + "0000000000000a"; }
  std::string Ip(int i) const { return "127." + std::to_string(subnet_) + ".0." + std::to_string(i + 1); }
  std::string Sock(int i) const { return dir_.Join("n" + std::to_string(i) + "/agentd.sock"); }
  std::string Root(int i) const { return dir_.Join("n" + std::to_string(i) + "/root"); }
  std::string Mount(int i) const { return dir_.Join("n" + std::to_string(i) + "/mnt"); }
  std::string Shared() const { return dir_.Join("shared"); }
  testing::ImdsEmulator& Imds(int i) { return *imds_[i]; }
  const std::string& queue_url() const { return queue_url_; }
  SqsClient& sqs() { return *sqs_client_; }
  int gpus(int i) const { return i % 4 + 1; }

  void Start(int i, bool master = false) {
    ::mkdir(dir_.Join("n" + std::to_string(i)).c_str(), 0755);
    std::string cfg = "[agent]\nsocket = \"" + Sock(i) + "\"\n" +
                      "[cluster]\nname = \"formation\"\nexpected_nodes = " + std::to_string(o_.expected) +
                      "\nmin_nodes = " + std::to_string(o_.min) + "\njoin_deadline = \"" + o_.join_deadline +
                      "\"\nreseal_settle = \"" + o_.reseal_settle + "\"\nrole = \"" + (master ? "master" : "worker") + "\"\n" +
                      "[gossip]\nkey_file = \"" + dir_.Join("key") + "\"\nbind = \"" + Ip(i) + "\"\nport = " + std::to_string(port_) +
                      "\nprofile = \"fast\"\n" +
                      "[discovery]\nqueue = \"formation-test\"\nhello_interval = \"1s\"\npoll_wait = \"5s\"\n" +
                      "[aws]\nregion = \"us-east-1\"\nsqs_endpoint = \"" + sqs_endpoint_ + "\"\nimds_endpoint = \"" + imds_[i]->endpoint() +
                      "\"\ncfn_wait_handle = \"" + cfn_.url("/signal") + "\"\n" +
                      "[node]\ngpus = " + std::to_string(gpus(i)) + "\n" +
                      "[files]\nroot = \"" + Root(i) + "\"\n";
    if (root()) cfg += "[storage]\nkind = \"bind\"\nsource = \"" + Shared() + "\"\nmount_point = \"" + Mount(i) + "\"\n";
    const std::string path = "n" + std::to_string(i) + "/agentd.toml";
    dir_.Write(path, cfg);
    std::vector<std::string> argv = {DLAGENT_AGENTD, "--config", dir_.Join(path)};
    // As root, a mount namespace of its own: its mounts go when it exits, whatever happens to the test.
    if (root()) argv.insert(argv.begin(), {"/usr/bin/unshare", "--mount", "--propagation", "private"});
    agents_[i] = std::make_unique<testing::Subprocess>(
        argv, std::vector<std::string>{"AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=secret"},
        dir_.Join("n" + std::to_string(i) + "/log"));
  }
  void Kill(int i, int sig = SIGKILL) {
    agents_[i]->Signal(sig);
    agents_[i]->Wait(seconds(10));
    agents_[i].reset();
  }
  int Pid(int i) const { return agents_[i]->pid(); }
  std::string Log(int i) const { return agents_[i] ? agents_[i]->Output() : ""; }

  std::optional<StatusSnapshot> Status(int i) {
    auto client = ControlClient::Connect(Sock(i), seconds(2));
    if (!client.ok()) return std::nullopt;
    auto s = (*client)->GetStatus();
    if (!s.ok()) return std::nullopt;
    return *s;
  }
  // Waits until every listed agent's phase is `phase`; false on timeout.
  bool WaitPhase(const std::vector<int>& nodes, const std::string& phase, duration<double> timeout) {
    const auto until = steady_clock::now() + timeout;
    while (steady_clock::now() < until) {
      bool all = true;
      for (int i : nodes) {
        auto s = Status(i);
        all = all && s && s->phase == phase;
      }
      if (all) return true;
      std::this_thread::sleep_for(milliseconds(100));
    }
    return false;
  }
  std::string Describe(const std::vector<int>& nodes) {
    std::string out;
    for (int i : nodes) {
      auto s = Status(i);
      out += "node " + std::to_string(i) + ": " + (s ? s->phase_detail : "no answer") + "\n";
    }
    return out;
  }
  std::vector<nlohmann::json> Signals() {
    std::lock_guard<std::mutex> lock(mu_);
    return signals_;
  }
  std::string ReadFile(int i, const std::string& path) {
    Result<std::string> s = env_->ReadFile(Root(i) + path, 1 << 20);
    return s.ok() ? *s : "<" + s.status().ToString() + ">";
  }
  int throttled() const { return throttled_.load(); }

 private:
  // Forwards SQS requests to the emulator, answering every other one with ThrottlingException.
  void StartThrottlingProxy() {
    const std::string target = sqs_->endpoint();
    proxy_.server().new_task_queue = [] { return new httplib::ThreadPool(32); };
    proxy_.server().Post("/.*", [this, target](const httplib::Request& req, httplib::Response& res) {
      if (throttle_.load() && (forwarded_++ % 2 == 0)) {
        ++throttled_;
        res.status = 400;
        res.set_header("x-amzn-query-error", "ThrottlingException;Sender");
        res.set_content(R"({"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"})", "application/x-amz-json-1.0");
        return;
      }
      httplib::Client client(target);
      client.set_read_timeout(30, 0);
      httplib::Headers headers;
      for (const char* h : {"X-Amz-Target", "Authorization", "X-Amz-Date", "x-amzn-query-mode"}) {
        if (req.has_header(h)) headers.emplace(h, req.get_header_value(h));
      }
      auto r = client.Post(req.path, headers, req.body, req.get_header_value("Content-Type"));
      if (!r) {
        res.status = 502;
        return;
      }
      res.status = r->status;
      for (const auto& [k, v] : r->headers) {
        if (k == "x-amzn-query-error" || k == "x-amzn-RequestId") res.set_header(k, v);
      }
      res.set_content(r->body, r->get_header_value("Content-Type"));
    });
    if (dlagent::Status st = proxy_.Start(); !st.ok()) error_ = st.ToString();
    sqs_endpoint_ = proxy_.url("");
    throttle_ = true;
  }

  const int n_;
  const ClusterOptions o_;
  testing::TempDir dir_;
  int port_ = 0, subnet_ = 0;
  std::string error_;
  std::unique_ptr<testing::SqsEmulator> sqs_;
  std::unique_ptr<HttpClient> http_;
  std::unique_ptr<Env> env_;
  std::unique_ptr<StaticCredentials> creds_;
  std::unique_ptr<SqsClient> sqs_client_;
  std::string queue_url_, sqs_endpoint_;
  testing::LocalHttpServer cfn_, proxy_;
  std::atomic<bool> throttle_{false};
  std::atomic<int> forwarded_{0}, throttled_{0};
  std::mutex mu_;
  std::vector<nlohmann::json> signals_;
  std::vector<std::unique_ptr<testing::ImdsEmulator>> imds_;
  std::vector<std::unique_ptr<testing::Subprocess>> agents_;
};

std::vector<int> Range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

TEST(FormationProcessTest, EightNodesInRandomOrderFormOneCluster) {
  Cluster c(8, {.expected = 8});
  ASSERT_EQ(c.error(), "");
  // A HELLO signed with another key waits on the queue before anyone starts.
  const int64_t now_ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  ASSERT_TRUE(c.sqs().SendMessage(c.queue_url(), SignHello({"formation", "i-0forged", "127.0.0.99", 7946, "master", 8, "", now_ms},
                                                           std::string(32, 'x'))).ok());
  std::vector<int> order = Range(8);
  std::shuffle(order.begin(), order.end(), std::mt19937(std::random_device{}()));
  const auto spread = milliseconds(10000 / 7);
  for (size_t k = 0; k < order.size(); ++k) {
    if (k) std::this_thread::sleep_for(spread);
    c.Start(order[k], order[k] == 0);
  }
  const auto last_start = steady_clock::now();
  ASSERT_TRUE(c.WaitPhase(Range(8), "ready", seconds(20))) << c.Describe(Range(8)) << c.Log(order.back()) << c.Log(0);
  const double ready_s = duration<double>(steady_clock::now() - last_start).count();
  std::printf("all 8 READY %.2f s after the last start\n", ready_s);

  const std::string workers = c.ReadFile(0, "/opt/deeplearning/workers");
  uint64_t refused = 0;
  for (int i = 0; i < 8; ++i) {
    auto s = c.Status(i);
    ASSERT_TRUE(s && s->cluster);
    EXPECT_EQ(s->cluster->generation, 1u);
    EXPECT_EQ(s->cluster->leader, c.Id(0)) << "the master leads";
    ASSERT_EQ(s->cluster->roster.size(), 8u);
    EXPECT_EQ(s->cluster->roster[0].instance_id, c.Id(0)) << "the master is rank 0";
    EXPECT_EQ(s->identity.instance_id, c.Id(i)) << "identity comes from the node's IMDS";
    EXPECT_EQ(c.ReadFile(i, "/opt/deeplearning/workers"), workers) << "node " << i;
    const std::string profile = c.ReadFile(i, "/etc/profile.d/deeplearning.sh");
    EXPECT_NE(profile.find("DEEPLEARNING_WORKERS_COUNT='8'"), std::string::npos) << profile;
    EXPECT_NE(profile.find("DEEPLEARNING_WORKER_GPU_COUNT='" + std::to_string(c.gpus(i)) + "'"), std::string::npos) << profile;
    EXPECT_NE(c.ReadFile(i, "/etc/dlagent/cluster.env").find("DEEPLEARNING_WORKERS_COUNT=\"8\""), std::string::npos);
    EXPECT_NE(c.ReadFile(i, "/etc/hosts").find(c.Ip(0) + " deeplearning-master"), std::string::npos);
    refused += s->cluster->hellos_refused;
    for (const auto& m : s->cluster->roster) EXPECT_NE(m.instance_id, "i-0forged");
  }
  EXPECT_GE(refused, 1u) << "the forged HELLO is counted by whoever read it";
  EXPECT_EQ(workers, "deeplearning-worker1\ndeeplearning-worker2\ndeeplearning-worker3\ndeeplearning-worker4\n"
                     "deeplearning-worker5\ndeeplearning-worker6\ndeeplearning-worker7\ndeeplearning-worker8\n");
  if (Cluster::root()) {
    // Every node writes through its own mount namespace (unshare execs the agent: same pid); all writes
    // land in the one shared directory.
    for (int i = 0; i < 8; ++i) {
      const std::string cmd = "nsenter -t " + std::to_string(c.Pid(i)) + " -m sh -c 'echo " + std::to_string(i) + " > " + c.Mount(i) +
                              "/from-" + std::to_string(i) + "'";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    int seen = 0;
    for (int i = 0; i < 8; ++i) seen += ::access((c.Shared() + "/from-" + std::to_string(i)).c_str(), R_OK) == 0;
    EXPECT_EQ(::access((c.Mount(0) + "/from-0").c_str(), F_OK), -1) << "the mounts live in the agents' namespaces only";
    EXPECT_EQ(seen, 8);
  }
  // Exactly one signal: SUCCESS for generation 1, from the leader. Give a duplicate time to show up.
  std::this_thread::sleep_for(milliseconds(500));
  auto signals = c.Signals();
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0]["Status"], "SUCCESS");
  EXPECT_EQ(signals[0]["UniqueId"], "formation-generation-1");
}

TEST(FormationProcessTest, ShrinksAtTheDeadlineOrFailsBelowMinNodes) {
  for (int min : {6, 9}) {
    Cluster c(8, {.expected = 10, .min = min, .join_deadline = "3s"});
    ASSERT_EQ(c.error(), "");
    for (int i = 0; i < 8; ++i) c.Start(i, i == 0);
    const std::string want = min == 6 ? "ready" : "failed";
    ASSERT_TRUE(c.WaitPhase(Range(8), want, seconds(20))) << "min " << min << "\n" << c.Describe(Range(8));
    auto s = c.Status(3);
    ASSERT_TRUE(s && s->cluster);
    std::this_thread::sleep_for(milliseconds(300));
    auto signals = c.Signals();
    ASSERT_EQ(signals.size(), 1u) << "min " << min;
    if (min == 6) {
      EXPECT_EQ(s->cluster->roster.size(), 8u);
      EXPECT_EQ(signals[0]["Status"], "SUCCESS");
    } else {
      EXPECT_NE(s->cluster->failure.find("2 missing"), std::string::npos) << s->cluster->failure;
      EXPECT_NE(s->cluster->failure.find("8 of 10"), std::string::npos) << s->cluster->failure;
      EXPECT_EQ(signals[0]["Status"], "FAILURE");
      EXPECT_NE(signals[0]["Reason"].get<std::string>().find("2 missing"), std::string::npos);
      EXPECT_EQ(c.ReadFile(3, "/opt/deeplearning/workers").rfind("<", 0), 0u) << "a failed formation writes no files";
    }
  }
}

TEST(FormationProcessTest, AnotherLeaderSealsWhenTheMasterDiesFirst) {
  Cluster c(4, {.expected = 4, .min = 3, .join_deadline = "6s"});
  ASSERT_EQ(c.error(), "");
  c.Start(0, /*master=*/true);
  c.Start(1);
  c.Start(2);
  // They find each other, and wait for a fourth that never comes while the master is alive.
  const auto until = steady_clock::now() + seconds(10);
  while (steady_clock::now() < until) {
    auto s = c.Status(1);
    if (s && s->cluster && s->cluster->alive == 3) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  c.Kill(0);
  c.Start(3);
  ASSERT_TRUE(c.WaitPhase({1, 2, 3}, "ready", seconds(25))) << c.Describe({1, 2, 3});
  auto s = c.Status(2);
  ASSERT_TRUE(s && s->cluster);
  EXPECT_EQ(s->cluster->leader, c.Id(1)) << "the lowest instance id leads without a master";
  ASSERT_EQ(s->cluster->roster.size(), 3u);
  for (const auto& m : s->cluster->roster) EXPECT_NE(m.instance_id, c.Id(0));
}

TEST(FormationProcessTest, RestartAfterReadyRejoinsWithTheSameFiles) {
  Cluster c(4, {.expected = 4});
  ASSERT_EQ(c.error(), "");
  for (int i = 0; i < 4; ++i) c.Start(i, i == 0);
  ASSERT_TRUE(c.WaitPhase(Range(4), "ready", seconds(20))) << c.Describe(Range(4));
  const std::string hosts = c.ReadFile(2, "/etc/hosts"), workers = c.ReadFile(2, "/opt/deeplearning/workers");
  c.Kill(2, SIGTERM);
  c.Start(2);
  ASSERT_TRUE(c.WaitPhase(Range(4), "ready", seconds(20))) << c.Describe(Range(4)) << c.Log(2);
  EXPECT_EQ(c.ReadFile(2, "/etc/hosts"), hosts);
  EXPECT_EQ(c.ReadFile(2, "/opt/deeplearning/workers"), workers);
  const std::string after = c.ReadFile(2, "/etc/hosts");
  size_t blocks = 0;
  for (size_t p = after.find("# BEGIN dlagent"); p != std::string::npos; p = after.find("# BEGIN dlagent", p + 1)) ++blocks;
  EXPECT_EQ(blocks, 1u);
  auto s = c.Status(2);
  ASSERT_TRUE(s && s->cluster);
  EXPECT_EQ(s->cluster->generation, 1u) << "back within the settle time: no reseal";
  EXPECT_NE(c.Log(2).find("rejoining the 4 members"), std::string::npos) << c.Log(2);
}

TEST(FormationProcessTest, FormsThroughImdsErrorsAndSqsThrottling) {
  Cluster c(4, {.expected = 4, .throttle_sqs = true});
  ASSERT_EQ(c.error(), "");
  for (int i = 0; i < 4; ++i) c.Imds(i).SetFault(testing::ImdsFault::kError500, -1);
  for (int i = 0; i < 4; ++i) c.Start(i, i == 0);
  std::this_thread::sleep_for(seconds(5));
  for (int i = 0; i < 4; ++i) {
    auto s = c.Status(i);
    ASSERT_TRUE(s) << "the control socket serves while IMDS fails";
    EXPECT_EQ(s->phase, "identify") << s->phase_detail;
    c.Imds(i).SetFault(testing::ImdsFault::kNone, 0);
  }
  ASSERT_TRUE(c.WaitPhase(Range(4), "ready", seconds(30))) << c.Describe(Range(4));
  EXPECT_GT(c.throttled(), 0);
}

}  // namespace
}  // namespace dlagent
