#include "agent/metrics/http_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <spdlog/spdlog.h>
#include "agent/ps/frame.h"
#include "bootstrap/common/accept.h"

namespace dlagent::metrics {

struct HttpServer::Conn {
  int fd = -1;
  MonoTime deadline;
  std::string in;
  std::string out;
  size_t sent = 0;
  bool writing = false;
};

Result<std::unique_ptr<HttpServer>> HttpServer::Start(Env& env, HttpServerOptions options, HttpHandler handler) {
  int port = 0;
  auto fd = ps::ListenTcp(options.listen, &port);
  if (!fd.ok()) return Status::Unavailable("metrics", "cannot serve on " + options.listen + ": " + std::string(fd.status().message()));
  ::fcntl(*fd, F_SETFL, ::fcntl(*fd, F_GETFL) | O_NONBLOCK);  // AcceptOne's contract
  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    ::close(*fd);
    return Status::Unavailable("metrics", "eventfd failed");
  }
  return std::unique_ptr<HttpServer>(new HttpServer(env, std::move(options), std::move(handler), *fd, wake, static_cast<uint16_t>(port)));
}

HttpServer::HttpServer(Env& env, HttpServerOptions options, HttpHandler handler, int listen_fd, int wake_fd, uint16_t port)
    : env_(env), o_(std::move(options)), handler_(std::move(handler)), listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port) {
  thread_ = std::thread([this] { Loop(); });
}

HttpServer::~HttpServer() {
  stop_ = true;
  const uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

HttpServerStats HttpServer::stats() const { return {requests_.load(), bad_requests_.load(), timeouts_.load(), refused_.load()}; }

HttpReply HttpServer::Answer(std::string_view head, bool* head_only) {
  auto req = ParseRequestHead(head);
  if (!req.ok()) {
    ++bad_requests_;
    return {400, "text/plain; charset=utf-8", std::string(req.status().message()) + "\n", ""};
  }
  *head_only = req->method == "HEAD";
  if (req->method != "GET" && req->method != "HEAD") {
    ++bad_requests_;
    return {405, "text/plain; charset=utf-8", "only GET and HEAD are served\n", "GET, HEAD"};
  }
  ++requests_;
  return handler_(*req, stats());
}

bool HttpServer::Read(Conn& c) {
  char buf[4096];
  while (true) {
    const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
    if (n == 0) return false;  // the client gave up before its head was whole
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c.in.append(buf, static_cast<size_t>(n));
    const size_t end = RequestHeadEnd(c.in);
    if (end == 0 && c.in.size() <= o_.max_head_bytes) continue;
    bool head_only = false;
    HttpReply reply;
    if (end == 0 || end > o_.max_head_bytes) {
      ++bad_requests_;
      reply = {431, "text/plain; charset=utf-8", "the request head is over " + std::to_string(o_.max_head_bytes) + " bytes\n", ""};
    } else {
      reply = Answer(std::string_view(c.in).substr(0, end), &head_only);
    }
    c.out = FormatReply(reply, head_only);
    c.in.clear();
    c.writing = true;
    c.deadline = env_.NowMono() + o_.timeout;
    return true;
  }
}

bool HttpServer::Write(Conn& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c.sent += static_cast<size_t>(n);
  }
  ::shutdown(c.fd, SHUT_WR);
  return false;
}

void HttpServer::Loop() {
  std::vector<Conn> conns;
  std::vector<pollfd> fds;
  while (!stop_) {
    if (o_.heartbeat) o_.heartbeat->Beat();
    const MonoTime now = env_.NowMono();
    Duration wait = std::chrono::seconds(1);
    fds.assign({{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}});
    for (const Conn& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.writing ? POLLOUT : POLLIN), 0});
      wait = std::min(wait, std::max(Duration::zero(), std::chrono::duration_cast<Duration>(c.deadline - now)));
    }
    const int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()) + 1;
    if (::poll(fds.data(), fds.size(), ms) < 0 && errno != EINTR) {
      spdlog::warn("metrics: poll failed: errno {}", errno);
      env_.SleepFor(std::chrono::milliseconds(100));
      continue;
    }
    // fds[i + 2] is conns[i]: handle them before accepting, which grows conns.
    const MonoTime after = env_.NowMono();
    std::vector<Conn> kept;
    kept.reserve(conns.size());
    for (size_t i = 0; i < conns.size(); ++i) {
      Conn& c = conns[i];
      const short ev = fds[i + 2].revents;
      bool keep = true;
      if (ev != 0) keep = c.writing ? Write(c) : Read(c) && (!c.writing || Write(c));
      if (keep && after >= c.deadline) {
        ++timeouts_;
        keep = false;
      }
      if (keep) {
        kept.push_back(std::move(c));
      } else {
        ::close(c.fd);
      }
    }
    conns.swap(kept);
    if ((fds[1].revents & POLLIN) != 0) {
      // At most kAcceptsPerTurn a turn: a flood of connections cannot keep the loop from the ones it holds.
      for (int accepted = 0; accepted < kAcceptsPerTurn; ++accepted) {
        std::string error;
        const int fd = AcceptOne(listen_fd_, &error);
        if (!error.empty()) spdlog::warn("metrics: {}", error);
        if (fd < 0) break;
        if (conns.size() >= o_.max_connections) {
          ++refused_;
          ::close(fd);
          continue;
        }
        conns.push_back({fd, after + o_.timeout, {}, {}, 0, false});
      }
    }
  }
  for (const Conn& c : conns) ::close(c.fd);
}

}  // namespace dlagent::metrics
