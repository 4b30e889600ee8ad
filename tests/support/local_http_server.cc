#include "tests/support/local_http_server.h"

#include <sys/socket.h>

#include <chrono>

namespace dlagent::testing {

LocalHttpServer::~LocalHttpServer() { Stop(); }

Status LocalHttpServer::Start(const std::string& host, int port) {
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
  if (!thread_.joinable()) return;
  server_.stop();
  thread_.join();
}

std::string LocalHttpServer::url(const std::string& path) const {
  return "http://" + host_ + ":" + std::to_string(port_) + path;
}

}  // namespace dlagent::testing
