// Membership with real agentd processes on loopback: 12 agents form a cluster; one killed with SIGKILL is
// declared dead by every other; restarted, it rejoins with a higher incarnation; an agent with the wrong
// cluster key never joins. 12 agents rotate their key with SIGHUP (add, make primary, remove the old one)
// with no member suspected or declared dead. As root: packets captured off the wire of a live cluster and
// replayed change nothing.
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "agent/ctl/control_client.h"
#include "tests/support/free_port.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

using testing::FreePort;

class GossipCluster {
 public:
  explicit GossipCluster(int n) {
    dir_.Write("key", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
    dir_.Write("wrong.key", "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210\n");
    for (int i = 0; i < n; ++i) ports_.push_back(FreePort());
  }
  std::string Sock(int i) const { return dir_.Join("s" + std::to_string(i) + ".sock"); }
  std::string Name(int i) const { return "node-" + std::to_string(i); }

  void Start(int i, const std::string& key = "key") {
    const std::string cfg = "c" + std::to_string(i) + ".toml";
    dir_.Write(cfg, "[agent]\nsocket = \"" + Sock(i) + "\"\n[cluster]\nname = \"gossip-test\"\nrole = \"" +
                        std::string(i == 0 ? "master" : "worker") + "\"\n[gossip]\nkey_file = \"" + dir_.Join(key) + "\"\nname = \"" + Name(i) +
                        "\"\nbind = \"127.0.0.1\"\nport = " + std::to_string(ports_[i]) + "\nseeds = [\"127.0.0.1:" + std::to_string(ports_[0]) +
                        "\", \"127.0.0.1:" + std::to_string(ports_[1]) +
                        "\"]\nprofile = \"fast\"\n[ps]\nenabled = false\n[metrics]\nenabled = false\n");  // its ephemeral port could be the next
                                                                                                          // agent's gossip port
    agents_[i] = std::make_unique<testing::Subprocess>(std::vector<std::string>{DLAGENT_AGENTD, "--config", dir_.Join(cfg)},
                                                       std::vector<std::string>{}, dir_.Join("log" + std::to_string(i)));
  }
  void Hup(int i) { agents_[i]->Signal(SIGHUP); }
  void Kill(int i) {
    agents_[i]->Signal(SIGKILL);
    agents_[i]->Wait(seconds(5));
  }
  std::string Log(int i) { return agents_[i]->Output(); }

  // name -> (status, incarnation) as agent i sees it; empty when it does not answer.
  std::map<std::string, std::pair<std::string, uint32_t>> View(int i) {
    std::map<std::string, std::pair<std::string, uint32_t>> out;
    auto client = ControlClient::Connect(Sock(i), seconds(2));
    if (!client.ok()) return out;
    auto list = (*client)->ListMembers();
    if (!list.ok()) return out;
    for (const auto& m : list->members) out[m.name] = {m.status, m.incarnation};
    return out;
  }

  // Waits until pred holds, polling every 100 ms; returns the time taken or nullopt.
  std::optional<milliseconds> WaitFor(const std::function<bool()>& pred, milliseconds limit) {
    const auto start = steady_clock::now();
    while (steady_clock::now() - start < limit) {
      if (pred()) return duration_cast<milliseconds>(steady_clock::now() - start);
      std::this_thread::sleep_for(milliseconds(100));
    }
    return std::nullopt;
  }

  testing::TempDir dir_;
  std::vector<int> ports_;
  std::map<int, std::unique_ptr<testing::Subprocess>> agents_;
};

TEST(GossipProcessTest, TwelveAgentsDetectAKillRejoinAndRefuseAWrongKey) {
  constexpr int kAgents = 12;
  GossipCluster c(kAgents + 1);
  for (int i = 0; i < kAgents; ++i) c.Start(i);

  auto everyone_sees = [&](int subject, const std::string& status, const std::vector<int>& observers) {
    for (int o : observers) {
      auto v = c.View(o);
      auto it = v.find(c.Name(subject));
      if (it == v.end() || it->second.first != status) return false;
    }
    return true;
  };
  std::vector<int> all;
  for (int i = 0; i < kAgents; ++i) all.push_back(i);
  auto formed = c.WaitFor(
      [&] {
        for (int o : all) {
          auto v = c.View(o);
          int alive = 0;
          for (auto& [name, s] : v) alive += s.first == "alive";
          if (alive != kAgents) return false;
        }
        return true;
      },
      seconds(30));
  ASSERT_TRUE(formed.has_value()) << "12 agents did not form a cluster in 30 s; agent 5 log:\n" << c.Log(5);

  // kill -9 one agent: every other marks it dead.
  const int victim = 5;
  c.Kill(victim);
  std::vector<int> others;
  for (int i : all)
    if (i != victim) others.push_back(i);
  auto detected = c.WaitFor([&] { return everyone_sees(victim, "dead", others); }, seconds(20));
  ASSERT_TRUE(detected.has_value()) << "not every agent declared the killed one dead within 20 s";
  EXPECT_LT(*detected, seconds(12)) << "fast profile: detection should take well under 12 s";
  const uint32_t dead_incarnation = c.View(0)[c.Name(victim)].second;
  // Operators see it in the log (the journal, under systemd), suspicion first.
  const std::string log0 = c.Log(0);
  const size_t suspect_at = log0.find("member node-5 is suspect"), dead_at = log0.find("member node-5 is dead");
  EXPECT_NE(suspect_at, std::string::npos) << log0;
  EXPECT_NE(dead_at, std::string::npos) << log0;
  EXPECT_LT(suspect_at, dead_at);
  EXPECT_NE(log0.find("peer=node-5"), std::string::npos) << "the peer is a structured field";

  // Restarted, it rejoins with a higher incarnation.
  c.Start(victim);
  auto back = c.WaitFor([&] { return everyone_sees(victim, "alive", all); }, seconds(20));
  ASSERT_TRUE(back.has_value()) << "restarted agent did not rejoin within 20 s:\n" << c.Log(victim);
  EXPECT_GT(c.View(0)[c.Name(victim)].second, dead_incarnation);

  // An agent with another key never joins, and never learns the members.
  const int stranger = kAgents;
  c.Start(stranger, "wrong.key");
  std::this_thread::sleep_for(seconds(4));
  for (int o : all) {
    auto v = c.View(o);
    EXPECT_EQ(v.count(c.Name(stranger)), 0u) << "agent " << o << " admitted the wrong-key agent";
  }
  std::printf("12 agents: formed in %lld ms, kill detected by all in %lld ms, restart rejoined in %lld ms\n", static_cast<long long>(formed->count()),
              static_cast<long long>(detected->count()), static_cast<long long>(back->count()));
  auto stranger_view = c.View(stranger);
  EXPECT_EQ(stranger_view.size(), 1u) << "the wrong-key agent learned of members";
}

TEST(GossipProcessTest, TwelveAgentsRotateTheirKeyWithoutADeath) {
  constexpr int kAgents = 12;
  GossipCluster c(kAgents + 1);
  const std::string old_key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  const std::string new_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
  c.dir_.Write("old.key", old_key + "\n");
  for (int i = 0; i < kAgents; ++i) c.Start(i);
  auto all_alive = [&](int o) {
    int alive = 0;
    for (auto& [name, s] : c.View(o)) alive += s.first == "alive";
    return alive == kAgents;
  };
  ASSERT_TRUE(c.WaitFor(
      [&] {
        for (int o = 0; o < kAgents; ++o)
          if (!all_alive(o)) return false;
        return true;
      },
      seconds(30)))
      << c.Log(3);
  int troubled = 0;  // views, all along, in which a member was not alive
  auto phase = [&](const std::string& file, const std::string& logged, int times) {
    c.dir_.Write("key", file);
    for (int i = 0; i < kAgents; ++i) c.Hup(i);
    const auto until = std::chrono::steady_clock::now() + seconds(3);
    while (std::chrono::steady_clock::now() < until) {
      for (int o = 0; o < kAgents; ++o) troubled += !all_alive(o);
      std::this_thread::sleep_for(milliseconds(100));
    }
    for (int i = 0; i < kAgents; ++i) {
      const std::string log = c.Log(i);
      int n = 0;
      for (size_t p = log.find(logged); p != std::string::npos; p = log.find(logged, p + 1)) ++n;
      EXPECT_EQ(n, times) << "agent " << i << " did not take the keys: " << log;
    }
  };
  phase(old_key + "\n" + new_key + "\n", "2 keys in force", 1);  // the new key installed everywhere
  phase(new_key + "\n" + old_key + "\n", "2 keys in force", 2);  // then primary everywhere
  phase(new_key + "\n", "1 key in force", 1);                    // then the old one removed
  EXPECT_EQ(troubled, 0) << "a member was suspected or declared dead during the rotation";
  // The old key opens nothing any more: an agent that has only it never joins.
  c.Start(kAgents, "old.key");
  std::this_thread::sleep_for(seconds(3));
  for (int o = 0; o < kAgents; ++o) EXPECT_EQ(c.View(o).count(c.Name(kAgents)), 0u) << "agent " << o;
}

}  // namespace
}  // namespace dlagent

namespace dlagent {
namespace {

// The UDP payloads sent to `port` on loopback during `how_long` (an AF_PACKET socket on lo: root only).
std::vector<std::string> CaptureUdpTo(int port, milliseconds how_long) {
  std::vector<std::string> out;
  const int fd = ::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_IP));
  if (fd < 0) return out;
  sockaddr_ll where{};
  where.sll_family = AF_PACKET;
  where.sll_protocol = htons(ETH_P_IP);
  where.sll_ifindex = static_cast<int>(::if_nametoindex("lo"));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&where), sizeof where) != 0) {
    ::close(fd);
    return out;
  }
  const auto until = steady_clock::now() + how_long;
  std::vector<unsigned char> buf(65536);
  while (steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    sockaddr_ll from{};
    socklen_t len = sizeof from;
    const ssize_t n = ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < static_cast<ssize_t>(sizeof(iphdr) + sizeof(udphdr)) || from.sll_pkttype != PACKET_HOST) continue;  // each once: as received
    const auto* ip = reinterpret_cast<const iphdr*>(buf.data());
    const size_t ihl = ip->ihl * 4u;
    if (ip->protocol != IPPROTO_UDP || n < static_cast<ssize_t>(ihl + sizeof(udphdr))) continue;
    const auto* udp = reinterpret_cast<const udphdr*>(buf.data() + ihl);
    if (ntohs(udp->dest) != port) continue;
    out.emplace_back(reinterpret_cast<const char*>(buf.data()) + ihl + sizeof(udphdr), n - ihl - sizeof(udphdr));
  }
  ::close(fd);
  return out;
}

TEST(GossipProcessTest, CapturedPacketsReplayedChangeNothing) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a raw socket on lo to capture the cluster's packets)";
  constexpr int kAgents = 4, kTarget = 1, kLeaver = 3, kTimes = 50;
  GossipCluster c(kAgents);
  for (int i = 0; i < kAgents; ++i) c.Start(i);
  auto counters = [&](int i) -> std::optional<GossipCounters> {
    auto client = ControlClient::Connect(c.Sock(i), seconds(2));
    if (!client.ok()) return std::nullopt;
    auto list = (*client)->ListMembers();
    if (!list.ok()) return std::nullopt;
    return list->counters;
  };
  ASSERT_TRUE(c.WaitFor(
      [&] {
        int alive = 0;
        for (auto& [name, s] : c.View(kTarget)) alive += s.first == "alive";
        return alive == kAgents;
      },
      seconds(30)))
      << c.Log(kTarget);

  // What the target received during 6 s, as anyone on the network could record it.
  const std::vector<std::string> captured = CaptureUdpTo(c.ports_[kTarget], milliseconds(6000));
  ASSERT_GE(captured.size(), 12u) << "too few packets captured to replay";
  // A member leaves: the captured packets still say it is alive.
  c.agents_[kLeaver]->Signal(SIGTERM);
  ASSERT_TRUE(c.WaitFor([&] { return c.View(kTarget)[c.Name(kLeaver)].first == "left"; }, seconds(10))) << c.Log(kTarget);
  const auto view_before = c.View(kTarget);

  // The target's own sending rate, quiet, then during the replay (as long as it lasts).
  auto before = counters(kTarget);
  ASSERT_TRUE(before.has_value());
  const auto quiet_start = steady_clock::now();
  std::this_thread::sleep_for(milliseconds(1500));
  auto quiet = counters(kTarget);
  const double quiet_rate = (quiet->packets_out - before->packets_out) / duration<double>(steady_clock::now() - quiet_start).count();

  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(c.ports_[kTarget]));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto replay_start = steady_clock::now();
  size_t sent = 0;
  for (int round = 0; round < kTimes; ++round) {
    for (const std::string& p : captured) {
      sent += ::sendto(fd, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) == static_cast<ssize_t>(p.size());
    }
    std::this_thread::sleep_for(milliseconds(30));  // about 1.5 s in all: within the 60 s replay window
  }
  ::close(fd);
  std::this_thread::sleep_for(milliseconds(300));  // the last ones read
  auto after = counters(kTarget);
  ASSERT_TRUE(after.has_value());
  const double replay_seconds = duration<double>(steady_clock::now() - replay_start).count();
  const double replay_rate = (after->packets_out - quiet->packets_out) / replay_seconds;

  // Every replayed packet was dropped unread and counted; nothing was answered; nobody came back or changed.
  EXPECT_EQ(sent, captured.size() * kTimes);
  EXPECT_GE(after->replays - quiet->replays, sent * 99 / 100) << "replays counted";
  EXPECT_EQ(after->malformed, before->malformed);
  EXPECT_LT(replay_rate, 2 * quiet_rate + 10) << "the target answered replayed packets: " << replay_rate << " packets/s against " << quiet_rate
                                              << " quiet";
  const auto view_after = c.View(kTarget);
  EXPECT_EQ(view_after.at(c.Name(kLeaver)).first, "left") << "a replayed Alive brought a member that left back";
  for (const auto& [name, s] : view_before) {
    EXPECT_EQ(view_after.at(name), s) << name << ": its status or incarnation changed";
  }
  std::printf(
      "captured %zu packets, replayed each %d times (%zu): %llu counted as replays; the target sent %.0f packets/s during the "
      "replay, %.0f quiet\n",
      captured.size(), kTimes, sent, static_cast<unsigned long long>(after->replays - quiet->replays), replay_rate, quiet_rate);
}

}  // namespace
}  // namespace dlagent
