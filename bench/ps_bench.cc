// Parameter-server throughput (docs/ps.md), each figure beside the limits measured in the same run:
//   - raw TCP over loopback (1 MiB writes) and memcpy of the same bytes;
//   - push, pull and push+pull of 4 MB and 40 MB, 1 worker and 1 dlps-server process;
//   - sync mode, 40 MB: 2 workers and 1 server, 2 workers and 2 servers;
//   - minor page faults per steady-state step, in the worker and in the server;
//   - the server's aggregation plus SGD per core, beside memcpy;
//   - authentication (docs/ps.md): 40 MB push and pull against an in-process shard that asks for the job's
//     token (as agentd's) and one that does not, alternating, in the same run (goal: within 3%); and what
//     integrity protection of every frame would cost: HMAC-SHA256 and AES-256-GCM over 40 MB.
// Goals (issue 6): 40 MB push and pull >= 2.5 GB/s, a 40 MB push+pull <= 32 ms, a 4 MB push <= 2.5 ms; sync
// 2x1 push+pull <= 40 ms; 2x2 >= 1.6 GB/s per worker; aggregation + SGD >= 10 GB/s per core.
//
// Usage: ps_bench [--steps N]   (default 20 timed steps per figure, after 3 warm-up steps)
//        ps_bench --compare-server PATH [--steps N]: only the 40 MB push+pull of 1 worker, against the build's
//        dlps-server and against PATH (another build of it, e.g. the portable package's), alternating 4 times.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <openssl/evp.h>

#include "agent/ps/client.h"
#include "agent/ps/frame.h"
#include "agent/ps/optimizer.h"
#include "agent/ps/server.h"
#include "bootstrap/common/crypto.h"
#include "tests/support/dlps_job.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace std::chrono;
using dlagent::Status;
using dlagent::ps::OptimizerConfig;
using dlagent::ps::PsClient;
using dlagent::ps::PsClientOptions;
using dlagent::ps::Ticket;
using dlagent::testing::Subprocess;

int steps = 20;
constexpr int kWarmup = 3;
constexpr size_t kBig = 10'000'000, kSmall = 1'000'000;  // floats: 40 MB and 4 MB

double Gbs(size_t bytes, double seconds) { return static_cast<double>(bytes) / seconds / 1e9; }

long MinorFaults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

long MinorFaults(int pid) {  // field 10 of /proc/<pid>/stat
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  for (int i = 3; i <= 10 && rest >> field; ++i) {
    if (i == 10) return std::stol(field);
  }
  return 0;
}

void Check(const Status& st);

// Loopback TCP moving `bytes` with 1 MiB writes, in GB/s.
double RawTcp(size_t bytes) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Check(Status::FromErrno("ps_bench", "listen on 127.0.0.1 for the raw TCP baseline", errno));
  }
  int w = socket(AF_INET, SOCK_STREAM, 0);
  if (w < 0 || connect(w, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Check(Status::FromErrno("ps_bench", "connect for the raw TCP baseline", errno));
  }
  std::thread reader([&] {
    int c = accept(listener, nullptr, nullptr);
    std::vector<char> buf(1 << 20);
    size_t total = 0;
    while (total < bytes * (steps + kWarmup)) {
      ssize_t n = read(c, buf.data(), buf.size());
      if (n <= 0) break;
      total += static_cast<size_t>(n);
    }
    close(c);
  });
  std::vector<char> src(bytes, 1);
  auto send_all = [&] {
    for (size_t off = 0; off < bytes;) {
      ssize_t n = write(w, src.data() + off, std::min<size_t>(1 << 20, bytes - off));
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  };
  for (int i = 0; i < kWarmup; ++i) send_all();
  const auto t0 = steady_clock::now();
  for (int i = 0; i < steps; ++i) send_all();
  close(w);
  reader.join();
  close(listener);
  return Gbs(bytes * steps, duration<double>(steady_clock::now() - t0).count());
}

double Memcpy(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  for (int i = 0; i < kWarmup; ++i) std::memcpy(b.data(), a.data(), bytes);
  const auto t0 = steady_clock::now();
  for (int i = 0; i < steps; ++i) std::memcpy(b.data(), a.data(), bytes);
  return Gbs(bytes * steps, duration<double>(steady_clock::now() - t0).count());
}

std::unique_ptr<PsClient> Connect(const std::vector<std::string>& servers, uint32_t rank, uint32_t workers) {
  PsClientOptions o;
  o.servers = servers;
  o.rank = rank;
  o.num_workers = workers;
  auto c = PsClient::Connect(o);
  if (!c.ok()) {
    std::fprintf(stderr, "ps_bench: %s\n", c.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(*c);
}

void Check(const Status& st) {
  if (!st.ok()) {
    std::fprintf(stderr, "ps_bench: %s\n", st.ToString().c_str());
    std::exit(1);
  }
}

// Seconds per call of op over `steps` steps after warm-up; also the minor faults per step of this process
// and of the server.
struct Timing {
  double seconds = 0;
  double faults = 0, server_faults = 0;
};

template <typename Op>
Timing Time(Op op, int server_pid) {
  for (int i = 0; i < kWarmup; ++i) op();
  const long f0 = MinorFaults(), s0 = MinorFaults(server_pid);
  const auto t0 = steady_clock::now();
  for (int i = 0; i < steps; ++i) op();
  Timing t;
  t.seconds = duration<double>(steady_clock::now() - t0).count() / steps;
  t.faults = static_cast<double>(MinorFaults() - f0) / steps;
  t.server_faults = static_cast<double>(MinorFaults(server_pid) - s0) / steps;
  return t;
}

void OneWorker(double tcp) {
  dlagent::testing::TempDir dir;
  dlagent::testing::DlpsServers server(dir, 1, 1);
  if (!server.ok()) Check(Status::Unavailable("ps_bench", "dlps-server did not start: " + server.procs[0]->Output()));
  auto c = Connect(server.addresses, 0, 1);
  const int server_pid = server.procs[0]->pid();
  const OptimizerConfig sgd{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 1e-6f};
  for (size_t n : {kSmall, kBig}) {
    std::vector<float> w(n, 1.0f), g(n, 1e-3f);
    Check(c->Init(n, n, w.data(), sgd));
    const size_t bytes = n * sizeof(float);
    // With one worker every push completes its round, so pushes may follow each other without pulls.
    Timing push = Time([&] { Check(c->Wait(c->PushNoCopy(n, g.data(), n))); }, server_pid);
    Timing copy_push = Time([&] { Check(c->Wait(c->Push(n, g.data(), n))); }, server_pid);
    Timing pull = Time([&] { Check(c->Wait(c->Pull(n, w.data(), n))); }, server_pid);
    Timing pp = Time([&] { Check(c->Wait(c->PushPull(n, g.data(), w.data(), n))); }, server_pid);
    std::printf(
        "  %2zu MB, 1 worker, 1 server: push %.2f ms (%.2f GB/s; Push, which copies first: %.2f ms), pull %.2f ms (%.2f GB/s), "
        "push+pull %.2f ms; raw TCP %.2f ms for the same bytes; minor faults per push+pull step: worker %.1f, server %.1f\n",
        bytes / 1000000, push.seconds * 1e3, Gbs(bytes, push.seconds), copy_push.seconds * 1e3, pull.seconds * 1e3, Gbs(bytes, pull.seconds),
        pp.seconds * 1e3, bytes / tcp * 1e3, pp.faults, pp.server_faults);
  }
}

void SyncWorkers(int workers, int servers, double tcp) {
  dlagent::testing::TempDir dir;
  dlagent::testing::DlpsServers procs(dir, servers, static_cast<uint32_t>(workers));
  if (!procs.ok()) Check(Status::Unavailable("ps_bench", "a dlps-server did not start"));
  const std::vector<std::string>& addresses = procs.addresses;
  std::vector<double> seconds(workers);
  std::vector<std::thread> threads;
  for (int r = 0; r < workers; ++r) {
    threads.emplace_back([&, r] {
      auto c = Connect(addresses, static_cast<uint32_t>(r), static_cast<uint32_t>(workers));
      std::vector<float> w(kBig, 1.0f), g(kBig, 1e-3f);
      Check(c->Init(1, kBig, w.data(), {.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 1e-6f}));
      for (int i = 0; i < kWarmup; ++i) Check(c->Wait(c->PushPull(1, g.data(), w.data(), kBig)));
      Check(c->Barrier());
      const auto t0 = steady_clock::now();
      for (int i = 0; i < steps; ++i) Check(c->Wait(c->PushPull(1, g.data(), w.data(), kBig)));
      seconds[r] = duration<double>(steady_clock::now() - t0).count() / steps;
    });
  }
  for (auto& t : threads) t.join();
  const double step = *std::max_element(seconds.begin(), seconds.end());
  std::printf(
      "  40 MB sync, %d workers, %d server%s: push+pull step %.1f ms, %.2f GB/s per worker (pushed and pulled); raw TCP "
      "moves both directions' bytes in %.1f ms\n",
      workers, servers, servers > 1 ? "s" : "", step * 1e3, Gbs(2 * kBig * sizeof(float), step), 2 * kBig * sizeof(float) / tcp * 1e3);
}

void Aggregation(double memcpy_gbs, int workers, unsigned threads, size_t floats = kBig) {
  // What the server does when a round of a slice completes: sum the workers' gradients and apply SGD with
  // momentum in one pass, from the current weights into the other buffer (as Shard does), on one thread or
  // spread over `threads` (ApplyUpdate starts them for the round, as the shard's apply_threads does).
  std::vector<float> w_a(floats, 1.0f), w_b(floats, 1.0f);
  std::vector<std::vector<float>> g(workers, std::vector<float>(floats, 1e-3f));
  std::vector<const float*> grads;
  for (auto& x : g) grads.push_back(x.data());
  dlagent::ps::OptimizerState state;
  const OptimizerConfig sgd{.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 1e-6f, .momentum = 0.9f};
  auto round = [&](int i) {
    const bool even = i % 2 == 0;
    dlagent::ps::ApplyUpdate(sgd, even ? w_a.data() : w_b.data(), even ? w_b.data() : w_a.data(), grads, floats, &state, threads);
  };
  for (int i = 0; i < kWarmup; ++i) round(i);
  const auto t0 = steady_clock::now();
  for (int i = 0; i < steps; ++i) round(i);
  const double s = duration<double>(steady_clock::now() - t0).count() / steps;
  const size_t bytes = floats * sizeof(float) * workers;
  std::printf(
      "  server sum of %d gradients + SGD with momentum, %zu MB, %u thread%s: %.2f GB/s of gradient (memcpy of the same bytes: %.2f "
      "GB/s, ratio %.2f)\n",
      workers, floats * sizeof(float) / 1000000, threads, threads > 1 ? "s" : "", Gbs(bytes, s), memcpy_gbs, Gbs(bytes, s) / memcpy_gbs);
}

// Seconds to seal `bytes` with AES-256-GCM (what per-frame integrity and privacy would cost the sender; the
// receiver pays as much again to open).
double AesGcm(const std::vector<unsigned char>& in) {
  std::vector<unsigned char> out(in.size() + 16);
  const unsigned char key[32] = {1}, iv[12] = {2};
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  auto seal = [&] {
    int n = 0;
    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key, iv);
    EVP_EncryptUpdate(ctx, out.data(), &n, in.data(), static_cast<int>(in.size()));
    EVP_EncryptFinal_ex(ctx, out.data() + n, &n);
    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out.data() + in.size());
  };
  for (int i = 0; i < kWarmup; ++i) seal();
  const auto t0 = steady_clock::now();
  for (int i = 0; i < steps; ++i) seal();
  EVP_CIPHER_CTX_free(ctx);
  return duration<double>(steady_clock::now() - t0).count() / steps;
}

void Authentication() {
  const std::string key(32, 'k'), job = "j-000000000001";
  std::unique_ptr<dlagent::ps::PsServer> servers[2];
  std::unique_ptr<PsClient> clients[2];
  for (int i = 0; i < 2; ++i) {
    dlagent::ps::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.shard.num_workers = 0;  // as agentd: each job sized by its workers
    if (i == 0) o.job_keys = [key] { return std::vector<std::string>{key}; };
    auto s = dlagent::ps::PsServer::Start(o);
    Check(s.status());
    servers[i] = std::move(*s);
    PsClientOptions c;
    c.servers = {"127.0.0.1:" + std::to_string(servers[i]->port())};
    c.num_workers = 1;
    if (i == 0) c.job = job, c.token = dlagent::HexEncode(dlagent::ps::DlpsJobToken(key, job));
    auto connected = PsClient::Connect(c);
    Check(connected.status());
    clients[i] = std::move(*connected);
  }
  std::vector<float> w(kBig, 1.0f), g(kBig, 1e-3f);
  const OptimizerConfig sum{};
  for (auto& c : clients) Check(c->Init(1, kBig, w.data(), sum));
  // Alternating steps, first one then the other, so that both see the same machine: push, then pull, of 40 MB
  // each. Medians: a step the machine stole time from counts for no more than any other.
  std::vector<double> pushes[2], pulls[2];
  for (int i = 0; i < kWarmup + 2 * steps; ++i) {
    for (int j = 0; j < 2; ++j) {
      const int k = (i + j) % 2;
      const auto t0 = steady_clock::now();
      Check(clients[k]->Wait(clients[k]->PushNoCopy(1, g.data(), kBig)));
      const auto t1 = steady_clock::now();
      Check(clients[k]->Wait(clients[k]->Pull(1, w.data(), kBig)));
      if (i >= kWarmup) {
        pushes[k].push_back(duration<double>(t1 - t0).count());
        pulls[k].push_back(duration<double>(steady_clock::now() - t1).count());
      }
    }
  }
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  const double push[2] = {median(pushes[0]), median(pushes[1])}, pull[2] = {median(pulls[0]), median(pulls[1])};
  const size_t bytes = kBig * sizeof(float);
  std::printf(
      "  40 MB, 1 worker, in-process shard, medians of %d alternating steps: push %.2f ms authenticated vs %.2f ms not (ratio %.3f), "
      "pull %.2f ms vs %.2f ms "
      "(ratio %.3f); the job's token is checked once, in the Hello\n",
      2 * steps, push[0] * 1e3, push[1] * 1e3, push[0] / push[1], pull[0] * 1e3, pull[1] * 1e3, pull[0] / pull[1]);
  const std::string data(bytes, 'x');
  for (int i = 0; i < kWarmup; ++i) (void)dlagent::HmacSha256(key, data);
  auto t0 = steady_clock::now();
  for (int i = 0; i < steps; ++i) (void)dlagent::HmacSha256(key, data);
  const double hmac = duration<double>(steady_clock::now() - t0).count() / steps;
  const double gcm = AesGcm(std::vector<unsigned char>(bytes, 7));
  std::printf(
      "  integrity of every frame would add, per 40 MB and per side: HMAC-SHA256 %.2f ms, AES-256-GCM %.2f ms, against a push "
      "of %.2f ms (x%.1f and x%.1f)\n",
      hmac * 1e3, gcm * 1e3, push[1] * 1e3, 1 + hmac / push[1], 1 + gcm / push[1]);
}

// The 40 MB push+pull of one worker against two dlps-server binaries, alternating: the median step of each.
void CompareServers(const std::string& other) {
  std::vector<double> times[2];
  for (int round = 0; round < 4; ++round) {
    for (int which = 0; which < 2; ++which) {
      dlagent::testing::TempDir dir;
      dlagent::testing::DlpsServers server(dir, 1, 1, "sync", "", which == 0 ? "" : other);
      if (!server.ok()) Check(Status::Unavailable("ps_bench", "dlps-server did not start: " + server.procs[0]->Output()));
      auto c = Connect(server.addresses, 0, 1);
      std::vector<float> w(kBig, 1.0f), g(kBig, 1e-3f);
      Check(c->Init(1, kBig, w.data(), {.kind = OptimizerConfig::Kind::kSgd, .learning_rate = 1e-6f}));
      times[which].push_back(Time([&] { Check(c->Wait(c->PushPull(1, g.data(), w.data(), kBig))); }, server.procs[0]->pid()).seconds);
    }
  }
  for (auto& t : times) std::sort(t.begin(), t.end());
  const double base = (times[0][1] + times[0][2]) / 2, alt = (times[1][1] + times[1][2]) / 2;
  std::printf(
      "40 MB push+pull, 1 worker, 1 server (median of 4 alternating runs of %d steps): build's dlps-server %.2f ms, %s %.2f ms, "
      "ratio %.2f\n",
      steps, base * 1e3, other.c_str(), alt * 1e3, alt / base);
}

}  // namespace

int main(int argc, char** argv) {
  std::string compare;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) {
      steps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--compare-server") && i + 1 < argc) {
      compare = argv[++i];
    } else {
      std::fprintf(stderr, "usage: ps_bench [--steps N] [--compare-server DLPS_SERVER]\n");
      return 2;
    }
  }
  if (!compare.empty()) {
    CompareServers(compare);
    return 0;
  }
  const size_t bytes = kBig * sizeof(float);
  const double tcp = RawTcp(bytes) * 1e9, mem = Memcpy(bytes);
  std::printf("limits: raw TCP over loopback %.2f GB/s (1 MiB writes), memcpy %.2f GB/s (40 MB)\n", tcp / 1e9, mem);
  OneWorker(tcp);
  SyncWorkers(2, 1, tcp);
  SyncWorkers(2, 2, tcp);
  // A round's update on one core, then cut over two (40 MB at once, and a 4 MB slice: the most a round holds).
  for (unsigned threads : {1u, 2u}) {
    Aggregation(mem, 1, threads);
    Aggregation(mem, 2, threads);
  }
  for (unsigned threads : {1u, 2u}) Aggregation(mem, 2, threads, kSmall);
  Authentication();
  return 0;
}
