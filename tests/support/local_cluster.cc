#include "tests/support/local_cluster.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <random>
#include <sstream>
#include <thread>

#include <httplib.h>

#include "agent/ctl/control_client.h"
#include "tests/support/free_port.h"

namespace dlagent::testing {
namespace {

using namespace std::chrono;

const std::string kNetnsScript = std::string(DLAGENT_SOURCE_DIR) + "/scripts/netns";

Status EnterNetns(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("netns", "open " + path, errno);
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? Status::Ok() : Status::FromErrno("netns", "enter " + path, err);
}

// Runs fn on a thread inside network namespace `ns`: the sockets it opens and the threads it starts stay
// there after it returns.
Status RunInNetns(const std::string& ns, const std::function<Status()>& fn) {
  Status result = Status::Ok();
  std::thread([&] {
    result = EnterNetns("/run/netns/" + ns);
    if (result.ok()) result = fn();
  }).join();
  return result;
}

// Namespaces named dlt<pid>-* whose process is gone: a test killed before its cluster's destructor ran.
void RemoveStaleNamespaces() {
  DIR* d = ::opendir("/run/netns");
  if (!d) return;
  std::vector<std::string> stale;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("dlt", 0) != 0) continue;
    const int pid = std::atoi(name.c_str() + 3);
    const size_t dash = name.find('-', name.find('-') + 1);
    if (pid > 0 && dash != std::string::npos && ::kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(name.substr(0, dash));
  }
  ::closedir(d);
  for (const std::string& prefix : stale) RunCommand({kNetnsScript, "down", prefix});
}

}  // namespace

std::vector<int> Range(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

LocalCluster::LocalCluster(int n, LocalClusterOptions o) : n_(n), o_(std::move(o)) {
  dir_.Write("key", std::string(kLocalClusterKeyHex) + "\n");
  subnet_ = 10 + static_cast<int>(std::random_device{}() % 200);  // 127.<subnet>.0.K: clusters running at once do not meet
  if (root() && o_.netns && !MakeNamespaces()) return;
  port_ = FreePort();
  const std::string services_ip = netns_.empty() ? "127.0.0.1" : "10." + std::to_string(subnet_) + ".255.254";
  std::string error;
  sqs_ = SqsEmulator::Start(dir_.path(), &error, services_ip);
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
  if (o_.throttle_sqs) StartThrottlingProxy(services_ip);
  cfn_.server().Put("/signal", [this](const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      signals_.push_back(nlohmann::json::parse(req.body, nullptr, false));
    }
    signalled_.notify_all();
    res.status = 200;
  });
  if (dlagent::Status st = cfn_.Start(services_ip); !st.ok()) error_ = st.ToString();
  if (o_.keys_from_aws) {
    secrets_ = std::make_unique<SecretsEmulator>(AwsCredentials{"AKIDEXAMPLE", kLocalClusterAwsSecret, "", std::nullopt, "test"}, "us-east-1");
    secrets_->PutSecret("dlagent/cluster-key", std::string(kLocalClusterKeyHex) + "\n");
    secrets_->PutParameter("/dlagent/cluster-key", std::string(kLocalClusterKeyHex) + "\n");
    if (dlagent::Status st = secrets_->Start(services_ip); !st.ok()) error_ = st.ToString();
  }
  if (root() && o_.storage) ::mkdir(Shared().c_str(), 0755);
  imds_.resize(n_);
  for (int i = 0; i < n_ && error_.empty(); ++i) {
    if (dlagent::Status st = StartImds(i); !st.ok()) error_ = st.ToString();
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
  imds_.clear();
  sqs_.reset();
  if (home_netns_ >= 0) {
    ::setns(home_netns_, CLONE_NEWNET);
    ::close(home_netns_);
  }
  if (!netns_.empty()) RunCommand({kNetnsScript, "down", netns_});
}

bool LocalCluster::MakeNamespaces() {
  RemoveStaleNamespaces();
  // The way back first: without it this thread could not leave the services namespace.
  home_netns_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home_netns_ < 0) {
    error_ = dlagent::Status::FromErrno("netns", "open /proc/thread-self/ns/net", errno).ToString();
    return false;
  }
  const std::string name = "dlt" + std::to_string(::getpid()) + "-" + std::to_string(subnet_);
  RunResult made = RunCommand({kNetnsScript, "up", name, std::to_string(subnet_), std::to_string(n_)}, seconds(60));
  if (made.exit_code != 0) {
    error_ = "cannot make network namespaces (scripts/netns up " + name + "): " + made.output;
    return false;  // `up` removed what it had made
  }
  netns_ = name;  // from here on the destructor deletes them
  if (dlagent::Status st = EnterNetns("/run/netns/" + name + "-s"); !st.ok()) {
    error_ = st.ToString();
    return false;
  }
  return true;
}

dlagent::Status LocalCluster::StartImds(int i) {
  const std::string metadata = nlohmann::json{
      {"instance-id", Id(i)},
      {"instance-type", "p4d.24xlarge"},
      {"local-ipv4", Ip(i)},
      {"mac", "0e:00:00:00:00:0" + std::to_string(i % 10)},
      {"availability-zone", "us-east-1a"},
      {"region", "us-east-1"}}.dump();
  auto start = [&]() -> dlagent::Status {
    // In a node's namespace the emulator takes the real metadata address, so the agent runs with its default.
    auto imds = netns_.empty() ? ImdsEmulator::Start(metadata) : ImdsEmulator::Start(metadata, "169.254.169.254", 80);
    if (!imds.ok()) return imds.status();
    imds_[i] = std::move(*imds);
    return dlagent::Status::Ok();
  };
  return netns_.empty() ? start() : RunInNetns(Netns(i), start);
}

bool LocalCluster::root() { return ::geteuid() == 0; }
std::string LocalCluster::Id(int i) const { return "i-" + std::string(i < 10 ? "0" : "") + std::to_string(i) + "0000000000000a"; }
std::string LocalCluster::Ip(int i) const {
  return (netns_.empty() ? "127." : "10.") + std::to_string(subnet_) + "." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
}
std::string LocalCluster::Sock(int i) const { return dir_.Join("n" + std::to_string(i) + "/agentd.sock"); }
std::string LocalCluster::Root(int i) const { return dir_.Join("n" + std::to_string(i) + "/root"); }
std::string LocalCluster::Mount(int i) const { return dir_.Join("n" + std::to_string(i) + "/mnt"); }
std::string LocalCluster::Shared() const { return dir_.Join("shared"); }
std::string LocalCluster::Log(int i) const { return agents_[i] ? agents_[i]->Output() : ""; }

void LocalCluster::Start(int i, bool master) {
  ::mkdir(dir_.Join("n" + std::to_string(i)).c_str(), 0755);
  if (!o_.socket_group.empty()) ::chmod(dir_.Join("").c_str(), 0711);  // others may pass through to the sockets
  std::string cfg =
      "[agent]\nsocket = \"" + Sock(i) + "\"\n" + (o_.socket_group.empty() ? std::string() : "socket_group = \"" + o_.socket_group + "\"\n") +
      "[cluster]\nname = \"formation\"\nexpected_nodes = " + std::to_string(o_.expected) + "\nmin_nodes = " + std::to_string(o_.min) +
      "\njoin_deadline = \"" + o_.join_deadline + "\"\nreseal_settle = \"" + o_.reseal_settle + "\"\nreseal = \"" + o_.reseal +
      "\"\nleave_before_maintenance = \"" + o_.leave_before_maintenance + "\"\nrole = \"" +
      (master                                                ? "master"
       : std::count(o_.servers.begin(), o_.servers.end(), i) ? "server"
                                                             : "worker") +
      "\"\n" + "[gossip]\n" +
      (!o_.keys_from_aws ? "key_file = \"" + dir_.Join("key") + "\""
       : i % 2 == 0      ? std::string("key_source = \"secretsmanager:dlagent/cluster-key\"")
                         : std::string("key_source = \"ssm:/dlagent/cluster-key\"")) +
      "\nbind = \"" + Ip(i) + "\"\nport = " + std::to_string(port_) + "\nprofile = \"fast\"\n" +
      "[discovery]\nqueue = \"formation-test\"\nhello_interval = \"" + o_.hello_interval + "\"\npoll_wait = \"" + o_.poll_wait + "\"\n" +
      "[aws]\nregion = \"us-east-1\"\nsqs_endpoint = \"" + sqs_endpoint_ + (netns_.empty() ? "\"\nimds_endpoint = \"" + imds_[i]->endpoint() : "") +
      "\"\ncfn_wait_handle = \"" + cfn_.url("/signal") + "\"\n" +
      (secrets_ ? "secretsmanager_endpoint = \"" + secrets_->url() + "\"\nssm_endpoint = \"" + secrets_->url() + "\"\n" : std::string()) +
      "[node]\ngpus = " + std::to_string(gpus(i)) + "\n" + "[files]\nroot = \"" + Root(i) + "\"\n" + "[jobs]\nagentctl = \"" + DLAGENT_AGENTCTL +
      "\"\n" +
      // In namespaces every node serves its shard on 7070, as on EC2; on loopback a shard would only take
      // an ephemeral port that a port chosen for the next agent's gossip may turn out to be.
      (netns_.empty() ? std::string("[ps]\nenabled = false\n") : "[ps]\nbind = \"" + Ip(i) + "\"\n") +
      // Each node serves /metrics on its own address, as IMDS gives it (MetricsUrl).
      "[metrics]\nbind = \"node\"\n";
  const bool storage = root() && o_.storage;
  if (storage) cfg += "[storage]\nkind = \"bind\"\nsource = \"" + Shared() + "\"\nmount_point = \"" + Mount(i) + "\"\n";
  const std::string path = "n" + std::to_string(i) + "/agentd.toml";
  dir_.Write(path, cfg);
  std::vector<std::string> argv = {DLAGENT_AGENTD, "--config", dir_.Join(path)};
  // A mount namespace of its own: its mounts go when it exits, whatever happens to the caller. In network
  // namespaces, a host name of its own too (node-K), as a real node has: programs that key files on the host
  // name (Open MPI's session directories under /tmp) would otherwise collide between nodes. unshare and sh
  // exec the agent, so the pid is the agent's.
  if (!netns_.empty()) {
    argv.insert(argv.begin(), {"/bin/sh", "-c", "hostname \"$0\" && exec \"$@\"", "node-" + std::to_string(i)});
  }
  if (storage || !netns_.empty()) {
    std::vector<std::string> unshare = {"/usr/bin/unshare"};
    if (storage) unshare.insert(unshare.end(), {"--mount", "--propagation", "private"});
    if (!netns_.empty()) unshare.push_back("--uts");
    argv.insert(argv.begin(), unshare.begin(), unshare.end());
  }
  if (!netns_.empty()) argv.insert(argv.begin(), {"/usr/bin/nsenter", "--net=/run/netns/" + Netns(i)});
  agents_[i] = std::make_unique<Subprocess>(
      argv, std::vector<std::string>{"AWS_ACCESS_KEY_ID=AKIDEXAMPLE", std::string("AWS_SECRET_ACCESS_KEY=") + kLocalClusterAwsSecret},
      dir_.Join("n" + std::to_string(i) + "/log"));
}

void LocalCluster::Kill(int i, int sig) {
  agents_[i]->Signal(sig);
  agents_[i]->Wait(seconds(10));
  agents_[i].reset();
}

void LocalCluster::PowerOff(int i) {
  if (!Netns(i).empty()) {
    std::istringstream pids(RunCommand({"ip", "netns", "pids", Netns(i)}).output);
    for (pid_t pid; pids >> pid;) ::kill(pid, SIGKILL);
  }
  Kill(i, SIGKILL);
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
      all = all && s && AgentPhaseName(s->phase) == phase;
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

std::vector<nlohmann::json> LocalCluster::WaitSignals(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  signalled_.wait_for(lock, timeout, [&] { return signals_.size() >= n; });
  return signals_;
}

std::string LocalCluster::ReadFile(int i, const std::string& path) {
  Result<std::string> s = env_->ReadFile(Root(i) + path, 1 << 20);
  return s.ok() ? *s : "<" + s.status().ToString() + ">";
}

void LocalCluster::StartThrottlingProxy(const std::string& host) {
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
  if (dlagent::Status st = proxy_.Start(host); !st.ok()) error_ = st.ToString();
  sqs_endpoint_ = proxy_.url("");
  throttle_ = true;
}

}  // namespace dlagent::testing
