#pragma once
// HttpServer: the agent's own small HTTP listener for /metrics and the status page (docs/operations.md). One
// thread polls every connection: a request head is read (at most max_head_bytes, within timeout), the handler
// answers it, the reply is written (within timeout), and the connection is closed. Only GET and HEAD are
// served (405 otherwise); a client that is slow, sends too much or too many connections at once is cut off
// and counted, and never holds up another for longer than timeout.
//
// Thread safety: Start and the destructor from one thread; stats() from any. The handler runs on the server's
// thread, one request at a time: it must answer from memory and not block.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "agent/metrics/http_request.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/status.h"

namespace dlagent::metrics {

struct HttpServerOptions {
  std::string listen;                          // REQUIRED: host:port; port 0 picks a free one
  size_t max_connections = 16;                 // Default: 16 open at once; more are closed unread
  Duration timeout = std::chrono::seconds(5);  // Default: 5 s to send the head, 5 s more to take the reply
  size_t max_head_bytes = 8192;                // Default: 8 KiB; more is answered 431
  std::shared_ptr<Heartbeat> heartbeat;        // Default: none. Beaten every turn of the loop (at least each second)
};

struct HttpServerStats {
  uint64_t requests = 0;      // answered with the handler's reply
  uint64_t bad_requests = 0;  // answered 400, 405 or 431
  uint64_t timeouts = 0;      // closed when timeout passed
  uint64_t refused = 0;       // closed unread: max_connections were open
};

// The server's own counters come with each request, for a handler that reports them.
using HttpHandler = std::function<HttpReply(const HttpRequest&, const HttpServerStats&)>;

class HttpServer {
 public:
  // Binds and starts the thread. env must outlive the server. Unavailable names the address when it cannot
  // be bound (in use, not this host's).
  static Result<std::unique_ptr<HttpServer>> Start(Env& env, HttpServerOptions options, HttpHandler handler);
  ~HttpServer();  // stops the thread and closes every connection
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  uint16_t port() const { return port_; }
  HttpServerStats stats() const;

 private:
  struct Conn;
  HttpServer(Env& env, HttpServerOptions options, HttpHandler handler, int listen_fd, int wake_fd, uint16_t port);
  void Loop();
  // Reads what the connection has; once the head is whole, puts the reply in its output.
  bool Read(Conn& c);
  // Writes what the socket takes; true while more is left.
  bool Write(Conn& c);
  HttpReply Answer(std::string_view head, bool* head_only);
  static constexpr int kAcceptsPerTurn = 64;

  Env& env_;
  const HttpServerOptions o_;
  const HttpHandler handler_;
  const int listen_fd_;
  const int wake_fd_;
  const uint16_t port_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> requests_{0}, bad_requests_{0}, timeouts_{0}, refused_{0};
  std::thread thread_;
};

}  // namespace dlagent::metrics
