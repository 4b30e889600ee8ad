#include "agent/ps/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "agent/ps/data_conn.h"
#include "agent/ps/frame.h"
#include "bootstrap/common/accept.h"

namespace dlagent::ps {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kFirstBytesTimeout = std::chrono::seconds(10);  // a connection that has not said who it is by then is closed
// Bounds on what peers can make the server hold (each refused connection is closed at once):
constexpr size_t kMaxUndecided = 256;                        // connections that have not sent their first bytes yet
constexpr size_t kMaxDataConnections = kMaxJobWorkers + 64;  // workers' data connections (two threads each)

// Dead peers are found even when nothing is being sent: keepalive probes after
// 10 s idle, and unacknowledged data gives up after 30 s.
void TuneSocket(int fd) {
  const int one = 1, idle = 10, interval = 5, count = 3, user_timeout_ms = 30000;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

}  // namespace

struct PsServer::Impl {
  Jobs jobs;
  const std::string checkpoint_dir;
  int listen_fd = -1;
  int wake_fd = -1;
  int finished_fd = -1;  // data connections that ended signal it, so that their fds are closed at once
  int port = 0;
  std::atomic<bool> stopping{false};
  std::thread accept_thread;
  std::vector<std::unique_ptr<DataConnection>> conns;  // owned by the accept thread until it ends

  std::shared_ptr<Heartbeat> heartbeat;

  explicit Impl(const ServerOptions& o)
      : jobs(o.shard, o.job_keys, o.job_live, o.job_owner), checkpoint_dir(o.checkpoint_dir), heartbeat(o.heartbeat) {}

  // Accepts connections and hands each to a DataConn once its Hello is here.
  void AcceptLoop() {
    struct Undecided {
      int fd;
      Clock::time_point since;
      bool partial;  // some bytes came, fewer than four: look again shortly (poll would report them at once)
    };
    std::vector<Undecided> undecided;
    Clock::time_point last_evict_check{};
    for (;;) {
      if (Clock::now() - last_evict_check >= std::chrono::seconds(1)) {
        last_evict_check = Clock::now();
        EvictEnded();
      }
      std::vector<pollfd> fds = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}, {finished_fd, POLLIN, 0}};
      bool partial = false;
      for (const auto& u : undecided) {
        fds.push_back({u.fd, static_cast<short>(u.partial ? 0 : POLLIN), 0});
        partial = partial || u.partial;
      }
      if (heartbeat) heartbeat->Beat();
      if (::poll(fds.data(), fds.size(), partial ? 10 : 1000) < 0 && errno != EINTR) return;  // 1 s at most: the heartbeat
      if (fds[1].revents) break;
      if (fds[2].revents) {
        uint64_t n;
        (void)!::read(finished_fd, &n, sizeof n);
        std::erase_if(conns, [](const auto& c) { return c->finished(); });
      }
      if (fds[0].revents & POLLIN) {
        const int fd = AcceptOne(listen_fd);  // out of fds: it backs off
        if (fd >= 0) {
          if (undecided.size() >= kMaxUndecided) {  // the oldest of the silent goes: a worker's Hello comes at once
            ::close(undecided.front().fd);
            undecided.erase(undecided.begin());
          }
          TuneSocket(fd);
          undecided.push_back({fd, Clock::now(), false});
        }
      }
      for (size_t i = 0; i < undecided.size();) {
        Undecided& u = undecided[i];
        // A data connection is decided once its whole Hello is here, so that no thread waits on a silent peer.
        Hello hello;
        const ssize_t got = ::recv(u.fd, &hello, sizeof hello, MSG_PEEK);
        const bool waited_too_long = Clock::now() - u.since > kFirstBytesTimeout;
        const bool is_dlps = got >= 4 && hello.magic == kHelloMagic;
        if (is_dlps && got == sizeof hello) {
          (void)!::recv(u.fd, &hello, sizeof hello, 0);
          ::fcntl(u.fd, F_SETFL, ::fcntl(u.fd, F_GETFL) & ~O_NONBLOCK);
          StartDataConn(u.fd, hello);
        } else if (got == 0 || (got >= 4 && !is_dlps) || (got < 0 && errno != EAGAIN) || waited_too_long) {
          ::close(u.fd);  // closed, not dlps, broken, or silent
        } else {
          u.partial = got > 0;
          ++i;
          continue;
        }
        undecided.erase(undecided.begin() + static_cast<long>(i));
      }
    }
    for (const auto& u : undecided) ::close(u.fd);
  }

  // A served job that no longer lives on this node holds nothing: its shard goes, with its connections and
  // the calls waiting on it.
  void EvictEnded() {
    Result<std::shared_ptr<Shard>> shard = jobs.Served();
    const std::string job = jobs.EvictEnded();
    if (job.empty()) return;
    const size_t dropped = std::erase_if(conns, [&](const auto& c) { return c->job() == job; });
    spdlog::warn("dlps: job {} no longer runs on this node; its shard and {} connection{} dropped", job, dropped, dropped == 1 ? "" : "s");
    if (shard.ok()) (*shard)->FailPending(Status::Unavailable("dlps-server", "job " + job + " ended on this node"));
  }

  void StartDataConn(int fd, const Hello& hello) {
    if (conns.size() >= kMaxDataConnections) {
      ::close(fd);
      return;
    }
    try {
      conns.push_back(StartDataConnection(jobs, checkpoint_dir, fd, hello, stopping, finished_fd));
    } catch (const std::system_error&) {
      ::close(fd);  // no thread to serve it: the worker sees the connection close and its retry or error
    }
  }
};

PsServer::PsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

int PsServer::port() const { return impl_->port; }

const PsStats& PsServer::stats() const { return impl_->jobs.stats(); }

Result<std::unique_ptr<PsServer>> PsServer::Start(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  Result<int> fd = ListenTcp(options.listen, &impl->port);
  if (!fd.ok()) return fd.status().Annotate("cannot serve (in use, or not an address of this host)");
  impl->listen_fd = *fd;
  impl->wake_fd = ::eventfd(0, EFD_CLOEXEC);
  impl->finished_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (impl->wake_fd < 0 || impl->finished_fd < 0) {
    ::close(impl->listen_fd);
    if (impl->wake_fd >= 0) ::close(impl->wake_fd);
    if (impl->finished_fd >= 0) ::close(impl->finished_fd);
    return Status::FromErrno("dlps-server", "eventfd", errno);
  }
  Impl* raw = impl.get();
  impl->accept_thread = std::thread([raw] { raw->AcceptLoop(); });
  return std::unique_ptr<PsServer>(new PsServer(std::move(impl)));
}

PsServer::~PsServer() {
  Impl& s = *impl_;
  s.stopping = true;
  uint64_t one = 1;
  (void)!::write(s.wake_fd, &one, sizeof one);
  s.accept_thread.join();
  ::close(s.listen_fd);
  ::close(s.wake_fd);
  s.conns.clear();  // ends every data connection
  ::close(s.finished_fd);
  // Waiting barriers and pulls hold callbacks: fail them (their connections are gone, so nothing is sent).
  if (auto shard = s.jobs.Served(); shard.ok()) (*shard)->FailPending(Status::Unavailable("dlps-server", "the server is shutting down"));
}

}  // namespace dlagent::ps
