#pragma once
// The parts of bench/chaos (docs/reliability.md): what it counts and how it prints it, the faults that need
// more than a command (each a class whose destructor undoes it), and readings of the agents' processes.
//
// Thread safety: Counters is shared (under its mu); every other object belongs to the thread that made it.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dlagent::testing {
class LocalCluster;
}

namespace dlagent::chaos {

// Faults, jobs and checks by kind, and every violation of an invariant (the first 20 in full).
struct Counters {
  std::mutex mu;
  std::map<std::string, int> faults;      // by kind
  std::map<std::string, int> jobs;        // by outcome
  std::map<std::string, int> floods;      // output floods: started, refused
  std::map<std::string, int> violations;  // by invariant
  std::vector<std::string> examples;      // the first few violations, in full
  uint64_t status_checks = 0, file_checks = 0, roster_checks = 0, health_checks = 0, delay_checks = 0;
  std::vector<std::pair<int64_t, int64_t>> delay_rtt_ms;  // (delay each way, health round trip) per delay fault
  bool twice_sealed = false;                              // some generation had two sealers (--verbose then prints the agents' roster lines)
  void Violation(const std::string& kind, const std::string& what) {
    std::lock_guard<std::mutex> lock(mu);
    ++violations[kind];
    if (examples.size() < 20) examples.push_back(kind + ": " + what);
  }
  // The summary: faults, jobs, checks, each invariant's violations, the delays measured, the examples.
  // REQUIRES: mu held.
  void Print() const;
};

// Every fault kind, as --faults names them (with '-' for ' ').
extern const std::vector<std::string> kAllFaults;
// "all", "none" (no fault: the soak) or a list such as "storage-hang,delay"; nullopt names no known fault.
std::optional<std::vector<std::string>> ParseFaults(const std::string& text);

// The command line (--help lists it).
struct ChaosArgs {
  int nodes = 4;
  std::vector<std::string> faults;
  uint64_t seed = 0;  // random unless --seed
  std::chrono::milliseconds duration{0}, recover{0};
  bool verbose = false;
};
// Fills args; an exit code when the program should end here (0 after --help, 2 for bad usage, said on stderr).
std::optional<int> ParseChaosArgs(int argc, char** argv, ChaosArgs& args);

// What an agent's log says about rosters and deaths, a line each ("chaos:   agent I: ...").
void PrintRosterLines(int agent, const std::string& log);

// A fault's command (ip, nft, dd, tc), bounded in time like every command the tests run.
bool Sh(const std::string& cmd);
long RssKb(int pid);   // -1 when gone
int OpenFds(int pid);  // -1 when gone
// A workers file is whole: "deeplearning-worker1".."N", one a line, each line ended.
bool WorkersWhole(const std::string& text);

// Probes of `agentctl health`, asked of agent `asker` about `node`; `settled`: whether node's agent has run
// 10 s since its last start (an agent still starting after a SIGKILL fault is not judged).
// While node's links are delayed by `delay` each way: its health round trip must be at least twice that.
void CheckDelay(testing::LocalCluster& c, int node, int asker, std::chrono::milliseconds delay, const std::function<bool()>& settled,
                Counters& counters);
// Hangs node's shared storage (HungMount) for `hold`, asking meanwhile: the answer must come within 15 s and
// name the hung storage, not an unreachable agent.
void CheckHungStorage(testing::LocalCluster& c, int node, int asker, std::chrono::milliseconds hold, const std::function<bool()>& settled,
                      Counters& counters);

// Network delay without netem (not in these machines' kernel): node K's link (`port`, in the bridge's
// namespace `netns`) is taken off the bridge by the caller and this relays its frames to and from `relay`, one
// end of a new veth pair whose other end is on the bridge, each frame held `delay` first. PACKET_VNET_HDR keeps
// the veths' offloaded (GSO) frames whole through the relay.
class DelayedLink {
 public:
  DelayedLink(const std::string& netns, const std::string& port, const std::string& relay, std::chrono::milliseconds delay);
  ~DelayedLink();
  bool ok() const { return ok_; }

 private:
  void Relay(const std::string& netns, const std::string& port, const std::string& relay, std::chrono::milliseconds delay);

  std::atomic<bool> stop_{false};
  std::atomic<bool> ok_{true};
  std::thread thread_;
};

// Shared storage that stops answering: a FUSE file system whose server (a child holding /dev/fuse) never
// answers, mounted over `target` inside the mount namespace of process `agent`. Every access there blocks
// (killably), as on a hard NFS mount whose server is gone. The destructor kills the child (the connection
// aborts: blocked calls fail) and unmounts it lazily.
class HungMount {
 public:
  HungMount(pid_t agent, std::string target);
  ~HungMount();
  HungMount(const HungMount&) = delete;
  HungMount& operator=(const HungMount&) = delete;
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

 private:
  const pid_t agent_;
  const std::string target_;
  pid_t holder_ = -1;
  std::string error_;
};

}  // namespace dlagent::chaos
