#pragma once
// PsServer: a Shard served over gRPC (proto/dlps.proto). DlpsControl through the generated callback service;
// DlpsData (Push, Pull) through the generic callback API with the hand encoding of agent/ps/wire.h, so that
// a pull is answered with a slice over the shard's snapshot, not a protobuf copy of it.
//
// Thread safety: Start and the destructor from one thread; the server runs on gRPC's and the shard's threads.

#include <memory>
#include <string>

#include "agent/ps/shard.h"
#include "bootstrap/common/status.h"

namespace grpc {
class Server;
}

namespace dlagent::ps {

// Messages carry chunks of at most 4 MiB (agent/ps/partition.h); this leaves room for larger chunk settings.
inline constexpr int kMaxMessageBytes = 64 << 20;

struct ServerOptions {
  std::string listen = "0.0.0.0:7070";  // host:port; port 0 picks a free one
  ShardOptions shard;
};

class PsServer {
 public:
  static Result<std::unique_ptr<PsServer>> Start(const ServerOptions& options);
  ~PsServer();  // stops serving; calls in progress end with Unavailable

  int port() const { return port_; }
  Shard& shard() { return *shard_; }

 private:
  struct Services;
  PsServer() = default;
  std::unique_ptr<Shard> shard_;
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace dlagent::ps
