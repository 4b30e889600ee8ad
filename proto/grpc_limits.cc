#include "proto/grpc_limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>

#include <grpcpp/resource_quota.h>

namespace dlagent {

void ApplyServerLimits(grpc::ServerBuilder& builder, const GrpcServerLimits& limits) {
  grpc::ResourceQuota quota(limits.name);
  quota.Resize(limits.memory_bytes);
  builder.SetResourceQuota(quota);
  builder.SetMaxReceiveMessageSize(limits.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_streams);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, limits.idle_timeout_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 90000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10000);
  // Windows no larger than a message needs: without BDP probing a stream's window does not grow past what the
  // message being received declares.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
}

bool ConnectionGate::Admit(int fd, const std::string& key, bool exempt, std::string* why) {
  if (exempt) return true;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *why = "cannot stat the connection";
    return false;
  }
  auto count = [&] { return static_cast<size_t>(std::count_if(conns_.begin(), conns_.end(), [&](const Conn& c) { return c.key == key; })); };
  if (conns_.size() >= total_ || count() >= per_key_) Sweep();
  if (conns_.size() >= total_) {
    *why = std::to_string(conns_.size()) + " connections are open, the most this server takes";
    return false;
  }
  if (const size_t n = count(); n >= per_key_) {
    *why = key + " has " + std::to_string(n) + " connections open, the most one peer may";
    return false;
  }
  conns_.push_back({fd, st.st_dev, st.st_ino, key});
  return true;
}

void ConnectionGate::Sweep() {
  std::erase_if(conns_, [](const Conn& c) {
    struct stat st {};
    return ::fstat(c.fd, &st) != 0 || st.st_dev != c.dev || st.st_ino != c.ino;
  });
}

std::string PeerAddress(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) return "";
  char text[INET6_ADDRSTRLEN] = "";
  if (a.ss_family == AF_INET) ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&a)->sin_addr, text, sizeof text);
  if (a.ss_family == AF_INET6) ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&a)->sin6_addr, text, sizeof text);
  return text;
}

}  // namespace dlagent
