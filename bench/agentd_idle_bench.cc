// agentd at rest and agentctl status latency.
// Usage: agentd_idle_bench [--seconds N] (default 60: the idle window for RSS and CPU)
//        agentd_idle_bench --compare AGENTD: the build's agentd against another build of it (e.g. the portable
//        package's), alternating 4 times: the time from exec to a served control socket, and the RSS 5 s later.
//
// Figures and same-run baselines:
//   idle RSS                 vs the RSS of `sleep` (the floor of any process here)
//   idle CPU                 vs the CPU of `sleep` over the same window (goal < 0.2 % of one core)
//   status RPC, kept channel vs a raw Unix-socket echo round trip
//   status RPC, new client   vs a raw connect + echo
//   `agentctl status`        vs exec of /bin/true (what a process start costs here)
//   CPU with a /metrics scrape each second, over a window as long as the idle one
//                            vs the idle CPU (goal: the scrapes add < 1 % of one core)
//   GET /metrics             vs a raw loopback TCP connect (what any request costs before its answer)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "agent/ctl/control_client.h"
#include "bootstrap/common/env.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace std::chrono;
using dlagent::testing::CpuSeconds;
using dlagent::testing::Subprocess;

double RssMb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

struct Stats {
  double p50, p99;
};

template <typename F>
Stats Time(int n, F f) {
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    auto t0 = steady_clock::now();
    f();
    ms.push_back(duration<double, std::milli>(steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms[ms.size() * 99 / 100]};
}

// A raw Unix-socket echo server: the floor for any request/response on this machine.
class EchoServer {
 public:
  explicit EchoServer(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 64) != 0) {
      std::fprintf(stderr, "agentd_idle_bench: cannot serve the echo baseline on %s: %s\n", path.c_str(), std::strerror(errno));
      std::exit(1);
    }
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        std::thread([c] {
          char b[256];
          ssize_t n;
          while ((n = ::read(c, b, sizeof b)) > 0) (void)!::write(c, b, static_cast<size_t>(n));
          ::close(c);
        }).detach();
      }
    });
  }
  ~EchoServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int Connect() {
    int c = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
    if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::fprintf(stderr, "agentd_idle_bench: cannot connect to the echo baseline on %s: %s\n", path_.c_str(), std::strerror(errno));
      std::exit(1);
    }
    return c;
  }
  static void RoundTrip(int c) {
    char b[64] = "status";
    (void)!::write(c, b, 64);
    size_t got = 0;
    while (got < 64) got += static_cast<size_t>(std::max<ssize_t>(0, ::read(c, b, 64 - got)));
  }

 private:
  std::string path_;
  int fd_;
  std::thread thread_;
};

// One agentd binary: milliseconds from its exec to the first answered status request on its control socket,
// and its RSS `settle` later.
std::pair<double, double> StartAndRss(const std::string& agentd, seconds settle) {
  dlagent::testing::TempDir dir;
  const std::string sock = dir.Join("agentd.sock");
  dir.Write("agentd.toml", "[agent]\nsocket = \"" + sock + "\"\nlog_level = \"warn\"\n[metrics]\nport = 0\n");
  const auto t0 = steady_clock::now();
  Subprocess agent({agentd, "--config", dir.Join("agentd.toml")}, {}, dir.Join("agentd.log"));
  double start_ms = -1;
  while (steady_clock::now() - t0 < seconds(10)) {
    auto c = dlagent::ControlClient::Connect(sock, seconds(1));
    if (c.ok() && (*c)->GetStatus().ok()) {
      start_ms = duration<double, std::milli>(steady_clock::now() - t0).count();
      break;
    }
    std::this_thread::sleep_for(milliseconds(1));
  }
  if (start_ms < 0) {
    std::fprintf(stderr, "%s did not serve its control socket:\n%s\n", agentd.c_str(), agent.Output().c_str());
    std::exit(1);
  }
  std::this_thread::sleep_for(settle);
  return {start_ms, RssMb(agent.pid())};
}

int Compare(const std::string& other) {
  std::vector<double> start[2], rss[2];
  for (int round = 0; round < 4; ++round) {
    for (int which = 0; which < 2; ++which) {
      auto [ms, mb] = StartAndRss(which == 0 ? std::string(DLAGENT_AGENTD) : other, seconds(5));
      start[which].push_back(ms);
      rss[which].push_back(mb);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return (v[1] + v[2]) / 2;
  };
  std::printf("%-44s %14s %14s %8s\n", "agentd (median of 4 alternating starts)", "build's", "other", "ratio");
  std::printf("%-44s %11.1f ms %11.1f ms %8.2f\n", "exec to a served control socket", median(start[0]), median(start[1]),
              median(start[1]) / median(start[0]));
  std::printf("%-44s %11.1f MB %11.1f MB %8.2f   (goal < 20 MB)\n", "RSS 5 s after the start", median(rss[0]), median(rss[1]),
              median(rss[1]) / median(rss[0]));
  std::printf("other: %s\n", other.c_str());
  return 0;
}

}  // namespace

// GET /metrics on 127.0.0.1:port, read to the end; the bytes of the reply.
size_t Scrape(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  size_t total = 0;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    (void)!::send(fd, req, sizeof req - 1, MSG_NOSIGNAL);
    char buf[16384];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) total += static_cast<size_t>(n);
  }
  ::close(fd);
  return total;
}

// A raw loopback TCP connect to a listener of our own, accepted and closed: the floor of any HTTP request.
Stats TcpConnect(int n) {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 16) != 0 ||
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::perror("loopback listener");
    std::exit(1);
  }
  Stats s = Time(n, [&] {
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) ::close(::accept(l, nullptr, nullptr));
    ::close(c);
  });
  ::close(l);
  return s;
}

int main(int argc, char** argv) {
  int seconds_window = 60;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--seconds") seconds_window = std::atoi(argv[i + 1]);
    if (std::string(argv[i]) == "--compare") return Compare(argv[i + 1]);
  }
  dlagent::testing::TempDir dir;
  const std::string sock = dir.Join("agentd.sock");
  dir.Write("agentd.toml", "[agent]\nsocket = \"" + sock + "\"\nlog_level = \"warn\"\n[metrics]\nport = 0\n");
  Subprocess agent({DLAGENT_AGENTD, "--config", dir.Join("agentd.toml")}, {}, dir.Join("agentd.log"));
  Subprocess floor({"/bin/sleep", "600"}, {}, dir.Join("sleep.log"));
  std::unique_ptr<dlagent::ControlClient> client;
  for (int i = 0; i < 200 && !client; ++i) {
    auto c = dlagent::ControlClient::Connect(sock, seconds(5));
    if (c.ok())
      client = std::move(*c);
    else
      std::this_thread::sleep_for(milliseconds(25));
  }
  if (!client) {
    std::fprintf(stderr, "agentd did not start:\n%s\n", agent.Output().c_str());
    return 1;
  }

  // Latency first, then leave the agent alone for the idle window.
  EchoServer echo(dir.Join("echo.sock"));
  int kept = echo.Connect();
  Stats echo_kept = Time(2000, [&] { EchoServer::RoundTrip(kept); });
  Stats echo_new = Time(500, [&] {
    int c = echo.Connect();
    EchoServer::RoundTrip(c);
    ::close(c);
  });
  Stats rpc_kept = Time(2000, [&] { (void)client->GetStatus(); });
  Stats rpc_new = Time(300, [&] { (void)(*dlagent::ControlClient::Connect(sock, seconds(5)))->GetStatus(); });
  Stats proc_true = Time(30, [&] { dlagent::testing::RunCommand({"/bin/true"}); });
  Stats proc_ctl = Time(30, [&] { dlagent::testing::RunCommand({DLAGENT_AGENTCTL, "--socket", sock, "status"}); });
  const std::string url = client->GetStatus().ok() ? client->GetStatus()->metrics_url : "";
  const int metrics_port = url.empty() ? 0 : std::atoi(url.c_str() + url.rfind(':') + 1);
  size_t scrape_bytes = 0;
  Stats scrape = Time(300, [&] { scrape_bytes = Scrape(metrics_port); });
  Stats tcp = TcpConnect(300);
  client.reset();

  const double rss_start = RssMb(agent.pid());
  const double cpu_start = CpuSeconds(agent.pid()), floor_cpu_start = CpuSeconds(floor.pid());
  std::this_thread::sleep_for(seconds(seconds_window));
  const double cpu_pct = (CpuSeconds(agent.pid()) - cpu_start) / seconds_window * 100.0;
  const double floor_cpu_pct = (CpuSeconds(floor.pid()) - floor_cpu_start) / seconds_window * 100.0;
  const double rss_end = RssMb(agent.pid());
  // The same window again with a scrape each second, as a Prometheus server with scrape_interval: 1s would.
  const double scrape_cpu_start = CpuSeconds(agent.pid());
  for (int i = 0; i < seconds_window; ++i) {
    const auto next = steady_clock::now() + seconds(1);
    Scrape(metrics_port);
    std::this_thread::sleep_until(next);
  }
  const double scrape_cpu_pct = (CpuSeconds(agent.pid()) - scrape_cpu_start) / seconds_window * 100.0;

  std::printf("agentd idle and agentctl status (idle window %d s)\n", seconds_window);
  std::printf("%-34s %12s   %-34s %8s   %s\n", "figure", "measured", "baseline (same run)", "ratio", "goal");
  std::printf("%-34s %9.1f MB   %-25s %5.1f MB %7.1fx   < 20 MB\n", "idle RSS (end of window)", rss_end, "sleep(1) RSS", RssMb(floor.pid()),
              rss_end / RssMb(floor.pid()));
  std::printf("%-34s %9.1f MB\n", "RSS after the latency runs", rss_start);
  std::printf("%-34s %10.3f %%   %-25s %6.3f %% %8s   < 0.2 %%\n", "idle CPU (one core)", cpu_pct, "sleep(1) CPU", floor_cpu_pct, "-");
  std::printf("%-34s %10.3f %%   %-25s %6.3f %% %+7.3f   < +1 %% (%zu-byte page)\n", "CPU with /metrics scraped each 1 s", scrape_cpu_pct,
              "idle CPU (above)", cpu_pct, scrape_cpu_pct - cpu_pct, scrape_bytes);
  auto row = [](const char* name, Stats s, const char* base_name, Stats b, const char* goal) {
    std::printf("%-34s %6.3f/%6.3f ms  %-24s %6.3f/%6.3f ms %6.1fx   %s\n", name, s.p50, s.p99, base_name, b.p50, b.p99, s.p50 / b.p50, goal);
  };
  std::printf("latency as p50/p99:\n");
  row("status RPC, kept channel", rpc_kept, "unix echo, kept", echo_kept, "< 5 ms");
  row("status RPC, new client", rpc_new, "unix connect+echo", echo_new, "< 5 ms");
  row("agentctl status (whole process)", proc_ctl, "exec /bin/true", proc_true, "");
  row("GET /metrics (new connection)", scrape, "loopback TCP connect", tcp, "< 5 ms");
  return 0;
}
