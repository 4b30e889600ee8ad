#include "bench/chaos_parts.h"

#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bootstrap/common/duration.h"
#include "tests/support/local_cluster.h"

namespace dlagent::chaos {

using namespace std::chrono;
using testing::RunCommand;
using testing::RunResult;

const std::vector<std::string> kAllFaults = {"sigkill",   "sigstop",   "partition node", "partition half",   "loss 30%",    "delay",
                                             "slow link", "disk full", "storage hang",   "coordinator kill", "output flood"};

std::optional<std::vector<std::string>> ParseFaults(const std::string& text) {
  if (text == "all") return kAllFaults;
  if (text == "none") return std::vector<std::string>{};
  std::vector<std::string> kinds;
  std::istringstream list(text);
  for (std::string k; std::getline(list, k, ',');) {
    std::replace(k.begin(), k.end(), '-', ' ');
    if (k == "loss") k = "loss 30%";
    if (std::find(kAllFaults.begin(), kAllFaults.end(), k) == kAllFaults.end()) return std::nullopt;
    kinds.push_back(k);
  }
  if (kinds.empty()) return std::nullopt;
  return kinds;
}

void Counters::Print() const {
  std::printf("chaos: faults injected:");
  for (auto& [k, v] : faults) std::printf(" %s %d;", k.c_str(), v);
  std::printf("\nchaos: jobs:");
  for (auto& [k, v] : jobs) std::printf(" %s %d;", k.c_str(), v);
  if (!floods.empty()) {
    std::printf("\nchaos: output floods:");
    for (auto& [k, v] : floods) std::printf(" %s %d;", k.c_str(), v);
  }
  std::printf("\nchaos: checks: %llu status calls, %llu node file reads, %llu roster views, %llu health calls while storage hung\n",
              static_cast<unsigned long long>(status_checks), static_cast<unsigned long long>(file_checks),
              static_cast<unsigned long long>(roster_checks), static_cast<unsigned long long>(health_checks));
  for (const char* inv : {"one sealer per generation", "one roster per seal", "one roster once healed", "node files whole", "status within 1 s",
                          "a failed job names why", "no job hangs", "health within 15 s", "health names hung storage", "delay applied (harness)",
                          "ready again", "no rank left running", "fd growth", "rss growth", "coordinator rss flat"}) {
    std::printf("chaos: invariant %-26s violated %d times\n", inv, violations.count(inv) ? violations.at(inv) : 0);
  }
  if (!delay_rtt_ms.empty()) {
    std::printf("chaos: delay faults, delay each way -> health round trip (ms):");
    for (const auto& [d, rtt] : delay_rtt_ms) std::printf(" %lld->%lld", static_cast<long long>(d), static_cast<long long>(rtt));
    std::printf("\n");
  }
  for (const std::string& e : examples) std::printf("chaos: VIOLATION %s\n", e.c_str());
}

void PrintRosterLines(int agent, const std::string& log) {
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("roster generation") != std::string::npos || line.find("formation failed") != std::string::npos ||
        line.find("is dead") != std::string::npos || line.find("is alive") != std::string::npos) {
      std::printf("chaos:   agent %d: %s\n", agent, line.c_str());
    }
  }
}

bool Sh(const std::string& cmd) { return RunCommand({"/bin/sh", "-c", cmd}, seconds(30)).exit_code == 0; }

long RssKb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

int OpenFds(int pid) {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return ec ? -1 : n;
}

bool WorkersWhole(const std::string& text) {
  if (text.empty() || text.back() != '\n') return false;
  std::istringstream lines(text);
  int k = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line != "deeplearning-worker" + std::to_string(++k)) return false;
  }
  return k > 0;
}

namespace {

struct Held {
  steady_clock::time_point due;
  std::string bytes;  // virtio_net_hdr + frame
};

int OpenPacketSocket(const std::string& ifname) {
  const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) return -1;
  const int one = 1;
  sockaddr_ll addr{};
  addr.sll_family = AF_PACKET;
  addr.sll_protocol = htons(ETH_P_ALL);
  addr.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
  if (addr.sll_ifindex == 0 || ::setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

DelayedLink::DelayedLink(const std::string& netns, const std::string& port, const std::string& relay, milliseconds delay)
    : thread_([=, this] { Relay(netns, port, relay, delay); }) {}

DelayedLink::~DelayedLink() {
  stop_ = true;
  thread_.join();
}

void DelayedLink::Relay(const std::string& netns, const std::string& port, const std::string& relay, milliseconds delay) {
  const int ns = ::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
  const bool entered = ns >= 0 && ::setns(ns, CLONE_NEWNET) == 0;  // this thread only
  if (ns >= 0) ::close(ns);
  int fds[2] = {entered ? OpenPacketSocket(port) : -1, entered ? OpenPacketSocket(relay) : -1};
  ok_ = fds[0] >= 0 && fds[1] >= 0;
  std::deque<Held> held[2];  // by the socket they go out of
  std::string buf(1 << 17, '\0');
  while (ok_ && !stop_) {
    auto now = steady_clock::now();
    for (int out : {0, 1}) {
      while (!held[out].empty() && held[out].front().due <= now) {
        (void)!::send(fds[out], held[out].front().bytes.data(), held[out].front().bytes.size(), 0);
        held[out].pop_front();
      }
    }
    auto next = now + milliseconds(50);  // and look at stop_ that often
    for (int out : {0, 1}) {
      if (!held[out].empty()) next = std::min(next, held[out].front().due);
    }
    pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
    if (::poll(p, 2, static_cast<int>(duration_cast<milliseconds>(next - now).count()) + 1) <= 0) continue;
    for (int in : {0, 1}) {
      if (!(p[in].revents & POLLIN)) continue;
      sockaddr_ll from{};
      socklen_t len = sizeof from;
      const ssize_t n = ::recvfrom(fds[in], buf.data(), buf.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
      if (n <= 0 || from.sll_pkttype == PACKET_OUTGOING) continue;  // what this relay sent itself
      held[1 - in].push_back({steady_clock::now() + delay, buf.substr(0, static_cast<size_t>(n))});
    }
  }
  for (int fd : fds) {
    if (fd >= 0) ::close(fd);
  }
}

HungMount::HungMount(pid_t agent, std::string target) : agent_(agent), target_(std::move(target)) {
  const std::string ns = "/proc/" + std::to_string(agent) + "/ns/mnt";
  const int fuse = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  const std::string opts = "fd=" + std::to_string(fuse) + ",rootmode=40000,user_id=0,group_id=0";
  int ready[2];
  if (fuse < 0 || ::pipe2(ready, O_CLOEXEC) != 0) {
    error_ = std::string("cannot open /dev/fuse: ") + std::strerror(errno);
    if (fuse >= 0) ::close(fuse);
    return;
  }
  holder_ = ::fork();  // the child makes system calls only, and keeps the fuse fd open
  if (holder_ == 0) {
    const int mnt = ::open(ns.c_str(), O_RDONLY | O_CLOEXEC);
    char ok = mnt >= 0 && ::setns(mnt, CLONE_NEWNS) == 0 &&
              ::mount("chaos-hang", target_.c_str(), "fuse.chaos-hang", MS_NOSUID | MS_NODEV, opts.c_str()) == 0;
    (void)!::write(ready[1], &ok, 1);
    if (!ok) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  ::close(fuse);  // the child's is the last: killing it aborts the connection
  char ok = 0;
  const bool mounted = holder_ > 0 && ::read(ready[0], &ok, 1) == 1 && ok;
  ::close(ready[0]);
  if (!mounted) {
    error_ = "cannot mount a hanging FUSE file system at " + target_ + " in the mount namespace of " + std::to_string(agent);
    if (holder_ > 0) ::waitpid(holder_, nullptr, 0);
    holder_ = -1;
  }
}

HungMount::~HungMount() {
  if (holder_ <= 0) return;
  ::kill(holder_, SIGKILL);
  ::waitpid(holder_, nullptr, 0);
  Sh("nsenter -t " + std::to_string(agent_) + " -m umount -l " + target_);
}

std::optional<int> ParseChaosArgs(int argc, char** argv, ChaosArgs& args) {
  CLI::App app{"chaos: faults at random into a forming, training cluster of agents, its invariants checked (docs/reliability.md); as root"};
  std::string duration = "2m", recover = "90s", faults = "all";
  args.seed = std::random_device{}();
  app.add_option("--nodes", args.nodes, "Agents, each in a network namespace")->check(CLI::Range(4, 32))->capture_default_str();
  app.add_option("--duration", duration, "How long faults are injected, e.g. 2m")->capture_default_str();
  app.add_option("--recover", recover, "How long the cluster then has to be READY again")->capture_default_str();
  app.add_option("--seed", args.seed, "The random seed (printed, to replay a run)");
  app.add_option("--faults", faults,
                 "all, none, or a list of: sigkill, sigstop, partition-node, partition-half, loss, delay, slow-link, "
                 "disk-full, storage-hang, coordinator-kill (the agent coordinating the running job), output-flood (a job "
                 "whose ranks write 16 MB without a newline)")
      ->capture_default_str();
  app.add_flag("--verbose", args.verbose, "Print every fault and check");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;  // bad usage, as agentctl's
  }
  const std::optional<std::vector<std::string>> kinds = ParseFaults(faults);
  const auto d = dlagent::ParseDuration(duration), r = dlagent::ParseDuration(recover);
  if (!d.ok() || !r.ok() || !kinds) {
    std::fprintf(stderr, "chaos: bad arguments: durations like 2m or 90s; --faults all, none or a list of the kinds in --help\n");
    return 2;
  }
  args.faults = *kinds;
  args.duration = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  args.recover = std::chrono::duration_cast<std::chrono::milliseconds>(*r);
  return std::nullopt;
}

void CheckDelay(testing::LocalCluster& c, int node, int asker, milliseconds delay, const std::function<bool()>& settled, Counters& counters) {
  RunResult r = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(asker), "health", "--json"}, seconds(30));
  int64_t rtt_us = -1;
  try {
    const nlohmann::json report = nlohmann::json::parse(r.output);  // named: a range-for over a temporary's member dangles
    for (const auto& n : report.at("nodes")) {
      if (n.at("ip").get<std::string>() == c.Ip(node)) rtt_us = n.at("round_trip_us").get<int64_t>();
    }
  } catch (const std::exception& e) {
    r.output = std::string("unreadable: ") + e.what() + "\n" + r.output;
  }
  const bool settled_now = settled();
  std::lock_guard<std::mutex> lock(counters.mu);
  ++counters.delay_checks;
  if (rtt_us < 0 && !settled_now) return;                                    // its agent is still starting after a SIGKILL fault
  if (r.output.find("\"" + c.Ip(node) + "\"") == std::string::npos) return;  // not a roster member now
  if (rtt_us < 2 * duration_cast<microseconds>(delay).count()) {
    ++counters.violations["delay applied (harness)"];
    counters.examples.push_back("delay applied (harness): " + std::to_string(delay.count()) + " ms each way on agent " + std::to_string(node) +
                                ", but a health round trip took " + std::to_string(rtt_us) + " us (agentctl exit " + std::to_string(r.exit_code) +
                                "):\n" + r.output.substr(0, 3000));
  } else {
    counters.delay_rtt_ms.push_back({delay.count(), rtt_us / 1000});
  }
}

void CheckHungStorage(testing::LocalCluster& c, int node, int asker, milliseconds hold, const std::function<bool()>& settled, Counters& counters) {
  HungMount hung(c.Pid(node), c.Mount(node));
  if (!hung.ok()) {
    std::fprintf(stderr, "chaos: %s\n", hung.error().c_str());
    std::this_thread::sleep_for(hold);
    return;
  }
  const auto t0 = steady_clock::now();
  RunResult r = RunCommand({DLAGENT_AGENTCTL, "-s", c.Sock(asker), "health"}, seconds(30));
  const auto took = duration_cast<milliseconds>(steady_clock::now() - t0);
  {
    std::lock_guard<std::mutex> lock(counters.mu);
    ++counters.health_checks;
  }
  // Asked of roster members only, and not of an agent still starting after a SIGKILL fault.
  const bool asked = r.output.find(c.Ip(node) + " ") != std::string::npos && settled();
  if (took > seconds(15)) {
    counters.Violation("health within 15 s", "agentctl health on agent " + std::to_string(asker) + " took " + std::to_string(took.count()) +
                                                 " ms while agent " + std::to_string(node) + "'s storage hung:\n" + r.output.substr(0, 2000));
  } else if (asked && (r.output.find("shared storage: ") == std::string::npos || r.output.find("did not answer") == std::string::npos)) {
    // The node's agent answers; its storage does not (not "agent unreachable": that is a wrong diagnosis).
    counters.Violation("health names hung storage", "agentctl health on agent " + std::to_string(asker) + " while agent " + std::to_string(node) +
                                                        "'s storage hung:\n" + r.output.substr(0, 2000));
  }
  if (took < hold) std::this_thread::sleep_for(hold - took);
}  // ~HungMount: the storage answers again

}  // namespace dlagent::chaos
