#include "tests/support/local_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <list>
#include <mutex>

namespace dlagent::testing {

namespace {

bool SendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k, n -= static_cast<size_t>(k);
  }
  return true;
}

// The value of header `name` (case-insensitive) in a request head, or "" when it has none.
std::string HeaderValue(const std::string& head, const std::string& name) {
  std::string lower(head);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  const size_t at = lower.find("\r\n" + name + ":");
  if (at == std::string::npos) return "";
  const size_t from = head.find_first_not_of(" \t", at + name.size() + 3), to = head.find("\r\n", at + 2);
  return from == std::string::npos || from >= to ? "" : head.substr(from, to - from);
}

}  // namespace

// One thread accepts; each connection has a thread that reads requests (heads fixed, bodies as they come)
// and one that copies the answers back. Stop() shuts every socket down and joins every thread.
class LocalHttpServer::Front {
 public:
  ~Front() { Stop(); }

  Status Start(const std::string& host, int port, int backend_port) {
    backend_port_ = backend_port;
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int yes = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // not SO_REUSEPORT: a port in use is an error
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 64) != 0) {
      ::close(listen_fd_);
      return Status::Unavailable("http-server", "cannot listen on " + host + ":" + std::to_string(port));
    }
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    accept_ = std::thread([this] { Accept(); });
    return Status::Ok();
  }
  int port() const { return port_; }

  void Stop() {
    if (!accept_.joinable()) return;
    const uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
    accept_.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (Conn& c : conns_) {
      ::shutdown(c.client, SHUT_RDWR);
      ::shutdown(c.backend, SHUT_RDWR);
    }
    for (Conn& c : conns_) {
      c.up.join();
      c.down.join();
      ::close(c.client);
      ::close(c.backend);
    }
    conns_.clear();
    ::close(listen_fd_);
    ::close(stop_fd_);
  }

 private:
  struct Conn {
    int client = -1, backend = -1;
    std::thread up, down;
    std::atomic<int> ended{0};  // threads done: at 2 the connection is reaped at the next accept
  };

  void Accept() {
    for (;;) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (::poll(p, 2, -1) < 0 || p[1].revents) return;
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      const int backend = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in b{};
      b.sin_family = AF_INET;
      b.sin_port = htons(static_cast<uint16_t>(backend_port_));
      b.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const int yes = 1;
      ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
      ::setsockopt(backend, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
      if (::connect(backend, reinterpret_cast<sockaddr*>(&b), sizeof b) != 0) {
        ::close(client);
        ::close(backend);
        continue;
      }
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = conns_.begin(); it != conns_.end();) {  // ended connections: threads joined, fds closed
        if (it->ended.load() < 2) {
          ++it;
          continue;
        }
        it->up.join();
        it->down.join();
        ::close(it->client);
        ::close(it->backend);
        it = conns_.erase(it);
      }
      Conn& c = conns_.emplace_back();
      c.client = client, c.backend = backend;
      c.up = std::thread([&c, client, backend] {
        Up(client, backend);
        ++c.ended;
      });
      c.down = std::thread([&c, client, backend] {
        Down(client, backend);
        ++c.ended;
      });
    }
  }

  // Requests, client to httplib: each head passed on with "Content-Length: 0" added where a body-less
  // request lacks a length, then its body (Content-Length bytes); anything else (chunked) is passed as it is.
  static void Up(int client, int backend) {
    std::string buf;
    char chunk[16384];
    uint64_t body_left = 0;
    bool raw = false;
    for (;;) {
      const ssize_t n = ::recv(client, chunk, sizeof chunk, 0);
      if (n <= 0) break;
      buf.append(chunk, static_cast<size_t>(n));
      bool ok = true;
      while (ok && !buf.empty()) {
        if (raw || body_left > 0) {
          const size_t take = raw ? buf.size() : static_cast<size_t>(std::min<uint64_t>(body_left, buf.size()));
          ok = SendAll(backend, buf.data(), take);
          buf.erase(0, take);
          if (!raw) body_left -= take;
          continue;
        }
        const size_t end = buf.find("\r\n\r\n");
        if (end == std::string::npos) break;  // the rest of the head is still to come
        std::string head = buf.substr(0, end + 2);
        buf.erase(0, end + 4);
        const std::string length = HeaderValue(head, "content-length");
        if (!HeaderValue(head, "transfer-encoding").empty()) {
          raw = true;
        } else if (length.empty()) {
          head += "Content-Length: 0\r\n";
        } else {
          body_left = std::strtoull(length.c_str(), nullptr, 10);
        }
        head += "\r\n";
        ok = SendAll(backend, head.data(), head.size());
      }
      if (!ok) break;
    }
    ::shutdown(backend, SHUT_WR);
  }

  static void Down(int client, int backend) {
    char chunk[16384];
    for (;;) {
      const ssize_t n = ::recv(backend, chunk, sizeof chunk, 0);
      if (n <= 0 || !SendAll(client, chunk, static_cast<size_t>(n))) break;
    }
    ::shutdown(client, SHUT_RDWR);
  }

  int listen_fd_ = -1, stop_fd_ = -1, port_ = 0, backend_port_ = 0;
  std::thread accept_;
  std::mutex mu_;
  std::list<Conn> conns_;  // protected by mu_; joined by Stop()
};

LocalHttpServer::LocalHttpServer() = default;
LocalHttpServer::~LocalHttpServer() { Stop(); }

Status LocalHttpServer::Start(const std::string& host, int port, bool bodyless_without_length) {
  if (bodyless_without_length) {  // httplib on an internal port, the front on the public one
    if (Status st = Start("127.0.0.1", 0, false); !st.ok()) return st;
    front_ = std::make_unique<Front>();
    if (Status st = front_->Start(host, port, port_); !st.ok()) {
      Stop();
      return st;
    }
    host_ = host;
    return Status::Ok();
  }
  // Headers and body go out in two writes: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
  server_.set_tcp_nodelay(true);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets a second server bind a port in use
  // and take half its connections, where a real service would fail to start.
  server_.set_socket_options([](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  port_ = port == 0 ? server_.bind_to_any_port(host.c_str()) : (server_.bind_to_port(host.c_str(), port) ? port : -1);
  if (port_ <= 0) return Status::Unavailable("http-server", "cannot listen on " + host + ":" + std::to_string(port));
  host_ = host;
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  for (int i = 0; i < 500 && !server_.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (!server_.is_running()) return Status::Unavailable("http-server", "did not start on " + url());
  return Status::Ok();
}

void LocalHttpServer::Stop() {
  if (front_) front_->Stop();
  if (!thread_.joinable()) return;
  server_.stop();
  thread_.join();
}

int LocalHttpServer::port() const { return front_ ? front_->port() : port_; }

std::string LocalHttpServer::url(const std::string& path) const { return "http://" + host_ + ":" + std::to_string(port()) + path; }

}  // namespace dlagent::testing
