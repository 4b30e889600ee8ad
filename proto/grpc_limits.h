#pragma once
// The bounds of every gRPC server the agent runs (the cluster port, the control socket, dlps's port), so that
// a caller who opens connections, or calls whose messages never finish, holds a bounded amount of memory and
// cannot shut others out (docs/reliability.md, "Bounds").
//
// gRPC bounds a call's message, the calls at once on one connection and, loosely, its buffers (the resource
// quota). But to receive a message it must let the sender send all of it, so one connection can make the
// server hold max_streams x max_message_bytes. The number of connections is what bounds the rest, and gRPC
// 1.51 has no setting for it: our accept loops count them (ConnectionGate) before handing them to gRPC.
//
// Thread safety: ApplyServerLimits is a function; a ConnectionGate is used by one thread (an accept loop).

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <vector>

#include <grpcpp/server_builder.h>

namespace dlagent {

struct GrpcServerLimits {
  const char* name = "dlagent";     // REQUIRED: the quota's name in gRPC's own log lines
  size_t memory_bytes = 64 << 20;   // Default: 64 MiB, the resource quota of every connection and call
  int max_streams = 4;              // Default: calls at once on one connection; the client queues more
  int max_message_bytes = 1 << 20;  // Default: 1 MiB, the largest message received
  int idle_timeout_ms = 5 * 60000;  // Default: 5 min; a connection without calls for as long is closed
};

// Sets the builder's resource quota, streams per connection, largest message, idle timeout, keepalive pings
// (a peer that vanished is noticed within 2 minutes) and a deadline for a connection's handshake.
void ApplyServerLimits(grpc::ServerBuilder& builder, const GrpcServerLimits& limits);

// Counts the connections handed to a gRPC server by key (a peer's address, or a local user's uid) and in all,
// and refuses one past either bound. gRPC closes connections on its own, without telling: a connection counts
// until its fd no longer names the socket it was accepted as (checked by device and inode when a bound would
// be passed, so a reused fd number is not mistaken for it).
class ConnectionGate {
 public:
  ConnectionGate(size_t per_key, size_t total) : per_key_(per_key), total_(total) {}

  // True when the accepted fd may be handed to gRPC (it is counted from now on). False, with why, when it would
  // pass a bound; the caller closes it. An exempt connection (root on the control socket) passes both bounds
  // and is not counted, so that others can never shut it out.
  bool Admit(int fd, const std::string& key, bool exempt, std::string* why);

  size_t open() const { return conns_.size(); }  // counted connections, as of the last check

 private:
  struct Conn {
    int fd;
    dev_t dev;
    ino_t ino;
    std::string key;
  };
  void Sweep();  // forgets the connections gRPC has closed

  size_t per_key_, total_;
  std::vector<Conn> conns_;
};

// The peer of an accepted TCP connection as a key ("10.0.1.7"), or "" when it cannot be told.
std::string PeerAddress(int fd);

}  // namespace dlagent
