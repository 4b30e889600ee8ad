#include "tests/support/local_cluster.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <thread>

#include <httplib.h>

#include "agent/ctl/control_client.h"
#include "tests/support/free_port.h"

namespace dlagent::testing {
namespace {

using namespace std::chrono;

constexpr char kKeyHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

}  // namespace

std::vector<int> Range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

LocalCluster::LocalCluster(int n, LocalClusterOptions o) : n_(n), o_(std::move(o)) {
  dir_.Write("key", std::string(kKeyHex) + "\n");
  port_ = FreePort();
  subnet_ = 10 + static_cast<int>(std::random_device{}() % 200);  // 127.<subnet>.0.K: clusters running at once do not meet
  std::string error;
  sqs_ = SqsEmulator::Start(dir_.path(), &error);
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
  if (root() && o_.storage) ::mkdir(Shared().c_str(), 0755);
  for (int i = 0; i < n_; ++i) {
    auto imds = ImdsEmulator::Start(nlohmann::json{{"instance-id", Id(i)},
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

LocalCluster::~LocalCluster() {
  for (auto& a : agents_) {
    if (a) a->Signal(SIGKILL);
  }
  agents_.clear();
  proxy_.Stop();
  cfn_.Stop();
}

bool LocalCluster::root() { return ::geteuid() == 0; }
std::string LocalCluster::Id(int i) const { return "i-" + std::string(i < 10 ? "0" : "") + std::to_string(i) + "0000000000000a"; }
std::string LocalCluster::Ip(int i) const { return "127." + std::to_string(subnet_) + "." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1); }
std::string LocalCluster::Sock(int i) const { return dir_.Join("n" + std::to_string(i) + "/agentd.sock"); }
std::string LocalCluster::Root(int i) const { return dir_.Join("n" + std::to_string(i) + "/root"); }
std::string LocalCluster::Mount(int i) const { return dir_.Join("n" + std::to_string(i) + "/mnt"); }
std::string LocalCluster::Shared() const { return dir_.Join("shared"); }
std::string LocalCluster::Log(int i) const { return agents_[i] ? agents_[i]->Output() : ""; }

void LocalCluster::Start(int i, bool master) {
  ::mkdir(dir_.Join("n" + std::to_string(i)).c_str(), 0755);
  std::string cfg = "[agent]\nsocket = \"" + Sock(i) + "\"\n" +
                    "[cluster]\nname = \"formation\"\nexpected_nodes = " + std::to_string(o_.expected) +
                    "\nmin_nodes = " + std::to_string(o_.min) + "\njoin_deadline = \"" + o_.join_deadline +
                    "\"\nreseal_settle = \"" + o_.reseal_settle + "\"\nreseal = \"" + o_.reseal + "\"\nrole = \"" + (master ? "master" : "worker") + "\"\n" +
                    "[gossip]\nkey_file = \"" + dir_.Join("key") + "\"\nbind = \"" + Ip(i) + "\"\nport = " + std::to_string(port_) +
                    "\nprofile = \"fast\"\n" +
                    "[discovery]\nqueue = \"formation-test\"\nhello_interval = \"" + o_.hello_interval + "\"\npoll_wait = \"" +
                    o_.poll_wait + "\"\n" +
                    "[aws]\nregion = \"us-east-1\"\nsqs_endpoint = \"" + sqs_endpoint_ + "\"\nimds_endpoint = \"" + imds_[i]->endpoint() +
                    "\"\ncfn_wait_handle = \"" + cfn_.url("/signal") + "\"\n" +
                    "[node]\ngpus = " + std::to_string(gpus(i)) + "\n" +
                    "[files]\nroot = \"" + Root(i) + "\"\n";
  const bool storage = root() && o_.storage;
  if (storage) cfg += "[storage]\nkind = \"bind\"\nsource = \"" + Shared() + "\"\nmount_point = \"" + Mount(i) + "\"\n";
  const std::string path = "n" + std::to_string(i) + "/agentd.toml";
  dir_.Write(path, cfg);
  std::vector<std::string> argv = {DLAGENT_AGENTD, "--config", dir_.Join(path)};
  // A mount namespace of its own: its mounts go when it exits, whatever happens to the caller. unshare
  // execs the agent, so the pid is the agent's.
  if (storage) argv.insert(argv.begin(), {"/usr/bin/unshare", "--mount", "--propagation", "private"});
  agents_[i] = std::make_unique<Subprocess>(argv, std::vector<std::string>{"AWS_ACCESS_KEY_ID=AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY=secret"},
                                            dir_.Join("n" + std::to_string(i) + "/log"));
}

void LocalCluster::Kill(int i, int sig) {
  agents_[i]->Signal(sig);
  agents_[i]->Wait(seconds(10));
  agents_[i].reset();
}

std::optional<StatusSnapshot> LocalCluster::Status(int i) {
  auto client = ControlClient::Connect(Sock(i), seconds(2));
  if (!client.ok()) return std::nullopt;
  auto s = (*client)->GetStatus();
  if (!s.ok()) return std::nullopt;
  return *s;
}

bool LocalCluster::WaitPhase(const std::vector<int>& nodes, const std::string& phase, duration<double> timeout) {
  const auto until = steady_clock::now() + timeout;
  while (steady_clock::now() < until) {
    bool all = true;
    for (int i : nodes) {
      auto s = Status(i);
      all = all && s && s->phase == phase;
      if (!all) break;
    }
    if (all) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return false;
}

std::string LocalCluster::Describe(const std::vector<int>& nodes) {
  std::string out;
  for (int i : nodes) {
    auto s = Status(i);
    out += "node " + std::to_string(i) + ": " + (s ? s->phase_detail : "no answer") + "\n";
  }
  return out;
}

std::vector<nlohmann::json> LocalCluster::Signals() {
  std::lock_guard<std::mutex> lock(mu_);
  return signals_;
}

std::string LocalCluster::ReadFile(int i, const std::string& path) {
  Result<std::string> s = env_->ReadFile(Root(i) + path, 1 << 20);
  return s.ok() ? *s : "<" + s.status().ToString() + ">";
}

void LocalCluster::StartThrottlingProxy() {
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
    if (r->has_header("x-amzn-query-error")) res.set_header("x-amzn-query-error", r->get_header_value("x-amzn-query-error"));
    res.set_content(r->body, r->get_header_value("Content-Type"));
  });
  if (dlagent::Status st = proxy_.Start(); !st.ok()) error_ = st.ToString();
  sqs_endpoint_ = proxy_.url("");
  throttle_ = true;
}

}  // namespace dlagent::testing
