#include "agent/rpc/cluster_service.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <thread>

#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>
#include <spdlog/spdlog.h>

#include "bootstrap/common/accept.h"
#include "bootstrap/common/mutex.h"
#include "proto/cluster.grpc.pb.h"
#include "proto/grpc_limits.h"
#include "proto/grpc_status.h"

namespace dlagent {
namespace {

namespace pb = ::dlagent::cluster::v1;

// Sealed states are at most a few MB (20,000 members); refuse larger ones.
constexpr int kMaxStateBytes = 8 << 20;

class ClusterService final : public pb::Cluster::CallbackService {
 public:
  explicit ClusterService(ClusterHandlers handlers) : handlers_(std::move(handlers)) {}
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* ctx, const pb::SealedState* req, pb::SealedState* reply) override {
    return Serve(ctx, handlers_.push_pull, req, reply);
  }
  grpc::ServerUnaryReactor* FetchRoster(grpc::CallbackServerContext* ctx, const pb::SealedState* req, pb::SealedState* reply) override {
    return Serve(ctx, handlers_.fetch_roster, req, reply);
  }
  grpc::ServerUnaryReactor* Job(grpc::CallbackServerContext* ctx, const pb::SealedState* req, pb::SealedState* reply) override {
    return Serve(ctx, handlers_.job, req, reply);
  }

 private:
  static grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, const std::function<Result<std::string>(std::string_view)>& handler,
                                         const pb::SealedState* req, pb::SealedState* reply) {
    auto* reactor = ctx->DefaultReactor();
    if (!handler) {
      reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "not served by this agent"));
      return reactor;
    }
    Result<std::string> ours = handler(req->sealed());
    if (!ours.ok()) {
      reactor->Finish(ToGrpcStatus(ours.status()));
      return reactor;
    }
    reply->set_sealed(std::move(*ours));
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  ClusterHandlers handlers_;
};

// The connection preamble: "DLAC", the sealed packet's length (2 bytes, big-endian), the packet. Its
// plaintext says what it is for, so that no other sealed packet of the cluster passes for one.
constexpr char kPreambleMagic[4] = {'D', 'L', 'A', 'C'};
constexpr std::string_view kPreamblePurpose = "dlagent cluster connection";
constexpr size_t kPreambleMax = 6 + 256;
constexpr Duration kPreambleTimeout = std::chrono::seconds(2);

std::string Preamble(const swim::Keyring& ring) {
  const std::string sealed = ring.Seal(kPreamblePurpose, swim::NowUnixMs());
  std::string out(kPreambleMagic, sizeof kPreambleMagic);
  out += static_cast<char>(sealed.size() >> 8);
  out += static_cast<char>(sealed.size() & 0xff);
  return out + sealed;
}

// The gRPC server behind an accept loop of ours: it reads each connection's preamble and counts connections
// (ConnectionGate) before handing them to gRPC, which bounds neither.
class GrpcClusterServer final : public ClusterServer {
 public:
  GrpcClusterServer(std::unique_ptr<ClusterService> service, std::unique_ptr<grpc::Server> server, int listen_fd, int wake_fd, ConnectionKeyring keys,
                    const ClusterServerLimits& limits)
      : service_(std::move(service)),
        server_(std::move(server)),
        listen_fd_(listen_fd),
        wake_fd_(wake_fd),
        keys_(std::move(keys)),
        limits_(limits),
        gate_(limits.max_connections, limits.max_connections) {
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }
  ~GrpcClusterServer() override { Shutdown(Duration(0)); }

  void Shutdown(Duration grace) override {
    if (!server_) return;
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    accept_thread_.join();
    ::close(listen_fd_);
    ::close(wake_fd_);
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(grace));
    server_->Wait();
    server_.reset();
  }

 private:
  struct Pending {
    int fd;
    MonoTime since;
    std::string peer;
  };

  void AcceptLoop() {
    for (;;) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      for (const Pending& p : pending_) fds.push_back({p.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), pending_.empty() ? -1 : 100) < 0) {
        if (errno == EINTR) continue;
        spdlog::error("cluster port: poll failed: {}", std::strerror(errno));
        break;
      }
      if (fds[1].revents) break;
      if (fds[0].revents & POLLIN) Take();
      const MonoTime now = std::chrono::steady_clock::now();
      for (size_t i = 0; i < pending_.size();) {
        const Pending& p = pending_[i];
        std::string why;
        const int done = ReadPreamble(p.fd, &why);
        if (done == 0 && now - p.since < kPreambleTimeout) {
          ++i;
          continue;
        }
        if (done > 0) {
          Hand(p.fd, p.peer);
        } else {
          Refuse(p.fd, p.peer, done == 0 ? "no preamble within 2 s" : why);
        }
        pending_.erase(pending_.begin() + static_cast<long>(i));
      }
    }
    for (const Pending& p : pending_) ::close(p.fd);
  }

  void Take() {
    std::string error;
    const int fd = AcceptOne(listen_fd_, &error);
    if (fd < 0) {
      if (!error.empty()) spdlog::warn("cluster port: {}", error);
      return;
    }
    const std::string peer = PeerAddress(fd);
    if (!keys_) return Hand(fd, peer);
    if (pending_.size() >= limits_.max_unproven) {  // the oldest goes: an agent's preamble comes at once
      Refuse(pending_.front().fd, pending_.front().peer, "too many connections without a preamble");
      pending_.erase(pending_.begin());
    }
    pending_.push_back({fd, std::chrono::steady_clock::now(), peer});
  }

  // 1: a valid preamble was read (and only it); 0: not all of it has come; -1: refused (*why says why).
  int ReadPreamble(int fd, std::string* why) {
    char buf[kPreambleMax];
    const ssize_t got = ::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (got <= 0) {
      *why = "closed before its preamble";
      return -1;
    }
    const size_t n = static_cast<size_t>(got);
    if (std::memcmp(buf, kPreambleMagic, std::min(n, sizeof kPreambleMagic)) != 0) {
      *why = "no preamble: not an agent of this version, or not an agent";
      return -1;
    }
    if (n < 6) return 0;
    const size_t len = static_cast<size_t>(static_cast<unsigned char>(buf[4])) << 8 | static_cast<unsigned char>(buf[5]);
    if (6 + len > kPreambleMax) {
      *why = "a preamble of " + std::to_string(len) + " bytes";
      return -1;
    }
    if (n < 6 + len) return 0;
    (void)!::recv(fd, buf, 6 + len, MSG_DONTWAIT);  // what follows is gRPC's
    std::shared_ptr<const swim::Keyring> ring = keys_();
    if (!ring) {
      *why = "no keyring yet";
      return -1;
    }
    Result<swim::Keyring::Opened> opened = ring->Open(std::string_view(buf + 6, len));
    if (!opened.ok() || opened->plaintext != kPreamblePurpose) {
      *why = "its preamble is not sealed with the cluster key";
      return -1;
    }
    if (Status fresh = replays_.Admit(*opened, swim::NowUnixMs()); !fresh.ok()) {
      *why = "its preamble: " + std::string(fresh.message());
      return -1;
    }
    return 1;
  }

  void Hand(int fd, const std::string& peer) {
    std::string why;
    if (!gate_.Admit(fd, peer, false, &why)) return Refuse(fd, peer, why);
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    grpc::AddInsecureChannelFromFd(server_.get(), fd);
  }

  void Refuse(int fd, const std::string& peer, const std::string& why) {
    ::close(fd);
    ++refused_;
    // At most one line a second: a flood of refusals must not flood the journal.
    if (const MonoTime now = std::chrono::steady_clock::now(); now - last_warning_ >= std::chrono::seconds(1)) {
      last_warning_ = now;
      spdlog::warn("cluster port: refused a connection from {}: {} ({} refused in all)", peer, why, refused_);
    }
  }

  std::unique_ptr<ClusterService> service_;
  std::unique_ptr<grpc::Server> server_;
  int listen_fd_, wake_fd_;
  const ConnectionKeyring keys_;
  const ClusterServerLimits limits_;
  // The accept thread's:
  ConnectionGate gate_;
  swim::ReplayWindow replays_;
  std::vector<Pending> pending_;
  MonoTime last_warning_{};
  uint64_t refused_ = 0;
  std::thread accept_thread_;
};

// A non-blocking listening TCP socket on host:port (IPv4).
Result<int> Listen(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return Status::InvalidArgument("gossip", host + " is not an IPv4 address");
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno("gossip", "socket", errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 1024) != 0) {
    const int e = errno;
    ::close(fd);
    return Status::FromErrno("gossip", "listen on TCP " + host + ":" + std::to_string(port) + " (port in use?)", e);
  }
  return fd;
}

// A TCP connection to "ip:port" (IPv4) within the deadline, blocking again once connected.
Result<int> Connect(const std::string& addr, MonoTime deadline) {
  const size_t colon = addr.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  int port = 0;
  if (colon == std::string::npos || ::inet_pton(AF_INET, addr.substr(0, colon).c_str(), &a.sin_addr) != 1 ||
      (port = std::atoi(addr.c_str() + colon + 1)) <= 0 || port > 65535) {
    return Status::InvalidArgument("gossip", addr + " is not an IPv4 address and port");
  }
  a.sin_port = htons(static_cast<uint16_t>(port));
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno("gossip", "socket", errno);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    const int e = errno;
    ::close(fd);
    return Status::FromErrno("gossip", "connect", e);
  }
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    pollfd p{fd, POLLOUT, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 0)));
    if (ready < 0 && errno == EINTR) continue;
    int err = 0;
    socklen_t len = sizeof err;
    if (ready == 1) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (ready == 1 && err == 0) break;
    ::close(fd);
    if (ready == 0) return Status::DeadlineExceeded("gossip", "connect: no answer in time");
    return Status::FromErrno("gossip", "connect", ready < 0 ? errno : err);
  }
  return fd;
}

class GrpcClusterClient final : public ClusterClient {
 public:
  explicit GrpcClusterClient(Duration deadline) : deadline_(deadline) {}
  Result<std::string> Exchange(const std::string& addr, const std::string& sealed) override {
    return Call(addr, sealed, "push-pull", &pb::Cluster::Stub::PushPull);
  }
  Result<std::string> FetchRoster(const std::string& addr, const std::string& sealed) override {
    return Call(addr, sealed, "roster fetch", &pb::Cluster::Stub::FetchRoster);
  }
  Result<std::string> Job(const std::string& addr, const std::string& sealed) override {
    return Call(addr, sealed, "job call", &pb::Cluster::Stub::Job);
  }
  void SetKeyring(std::shared_ptr<const swim::Keyring> keyring) override {
    MutexLock lock(mu_);
    keyring_ = std::move(keyring);
  }

 private:
  // A channel on a connection of our own that opened with the preamble. gRPC does not reconnect such a
  // channel: a peer whose connection failed gets a new one at its next call.
  struct Peer {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::Cluster::Stub> stub;
    // A second descriptor of the connection (-1: a channel of gRPC's own): gRPC cannot say whether a channel
    // made on a descriptor is still connected, but this shows when the peer has closed it.
    int watch_fd = -1;
    ~Peer() {
      if (watch_fd >= 0) ::close(watch_fd);
    }
    bool Closed() const {
      pollfd p{watch_fd, POLLRDHUP, 0};
      return watch_fd >= 0 && ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
    }
  };
  using Method = grpc::Status (pb::Cluster::Stub::*)(grpc::ClientContext*, const pb::SealedState&, pb::SealedState*);

  Result<std::string> Call(const std::string& addr, const std::string& sealed, const char* what, Method method) {
    const MonoTime deadline = std::chrono::steady_clock::now() + deadline_;
    pb::SealedState req, reply;
    req.set_sealed(sealed);
    // Never sent twice: a sealed request is refused as a replay the second time.
    Result<std::shared_ptr<Peer>> peer = PeerFor(addr, deadline);
    if (!peer.ok()) return peer.status().Annotate(std::string(what) + " with " + addr);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::duration_cast<std::chrono::system_clock::duration>(deadline - std::chrono::steady_clock::now()));
    grpc::Status st = ((*peer)->stub.get()->*method)(&ctx, req, &reply);
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE) Forget(addr, *peer);  // the next call connects again
    if (!st.ok()) return FromGrpcStatus(st, "gossip", std::string(what) + " with " + addr);
    return reply.sealed();
  }

  Result<std::shared_ptr<Peer>> PeerFor(const std::string& addr, MonoTime deadline) {
    std::shared_ptr<const swim::Keyring> ring;
    {
      MutexLock lock(mu_);
      // Kept until the peer closes it (idle, or restarted) or a call on it fails as unavailable.
      if (auto it = peers_.find(addr); it != peers_.end()) {
        if (!it->second->Closed()) return it->second;
        peers_.erase(it);
      }
      ring = keyring_;
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxStateBytes);
    args.SetMaxSendMessageSize(kMaxStateBytes);
    auto peer = std::make_shared<Peer>();
    if (!ring) {
      peer->channel = grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
    } else {
      // Connected outside the lock: a slow peer does not hold up calls to the others.
      ASSIGN_OR_RETURN(const int fd, Connect(addr, deadline));
      const std::string preamble = Preamble(*ring);
      if (::send(fd, preamble.data(), preamble.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(preamble.size())) {
        const int e = errno;
        ::close(fd);
        return Status::FromErrno("gossip", "send the preamble", e);
      }
      peer->watch_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
      peer->channel = grpc::CreateCustomInsecureChannelFromFd(addr, fd, args);
    }
    peer->stub = pb::Cluster::NewStub(peer->channel);
    MutexLock lock(mu_);
    // Connections the peers closed go when a new one comes, so that those of members not called again do not
    // pile up (their descriptors with them).
    std::erase_if(peers_, [](const auto& kv) { return kv.second->Closed(); });
    auto [it, fresh] = peers_.emplace(addr, peer);
    return it->second;  // another thread's, when it connected first (ours then closes with its last reference)
  }

  void Forget(const std::string& addr, const std::shared_ptr<Peer>& peer) {
    MutexLock lock(mu_);
    auto it = peers_.find(addr);
    if (it != peers_.end() && it->second == peer) peers_.erase(it);
  }

  Duration deadline_;
  Mutex mu_;
  std::shared_ptr<const swim::Keyring> keyring_ GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Peer>> peers_ GUARDED_BY(mu_);  // one connection per member while it works
};

}  // namespace

Result<std::unique_ptr<ClusterServer>> StartClusterServer(const std::string& host, int port, ClusterHandlers handlers, ConnectionKeyring keys,
                                                          const ClusterServerLimits& limits) {
  if (limits.max_connections < 1 || limits.max_unproven < 1) {
    return Status::InvalidArgument("gossip", "the cluster port's connection limits must be at least 1");
  }
  ASSIGN_OR_RETURN(const int listen_fd, Listen(host, port));
  const int wake_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  auto service = std::make_unique<ClusterService>(std::move(handlers));
  grpc::ServerBuilder builder;
  GrpcServerLimits l;
  l.name = "cluster";
  l.max_message_bytes = kMaxStateBytes;
  ApplyServerLimits(builder, l);
  builder.RegisterService(service.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || wake_fd < 0) {
    ::close(listen_fd);
    if (wake_fd >= 0) ::close(wake_fd);
    return Status::Internal("gossip", "the gRPC server of the cluster port failed to start; see the log lines above it");
  }
  return std::unique_ptr<ClusterServer>(
      std::make_unique<GrpcClusterServer>(std::move(service), std::move(server), listen_fd, wake_fd, std::move(keys), limits));
}

std::unique_ptr<ClusterClient> NewGrpcClusterClient(Duration deadline) { return std::make_unique<GrpcClusterClient>(deadline); }

}  // namespace dlagent
