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
#include <deque>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>

#include "agent/ps/checkpoint.h"
#include "agent/ps/frame.h"
#include "proto/dlps.grpc.pb.h"

namespace dlagent::ps {
namespace {

namespace pb = ::dlps::v1;
using Clock = std::chrono::steady_clock;

constexpr auto kFirstBytesTimeout = std::chrono::seconds(10);  // a connection that has not said who it is by then is closed
// Bounds on what peers can make the server hold (each refused connection is closed at once):
constexpr size_t kMaxUndecided = 256;                      // connections that have not sent their first bytes yet
constexpr size_t kMaxDataConnections = kMaxJobWorkers + 64;  // workers' data connections (two threads each)
constexpr size_t kMaxInFlight = 16384;  // requests of one connection not yet answered; past it the server stops reading

grpc::Status ToGrpc(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (s.code()) {
    case StatusCode::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case StatusCode::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case StatusCode::kFailedPrecondition: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case StatusCode::kUnavailable: code = grpc::StatusCode::UNAVAILABLE; break;
    case StatusCode::kCancelled: code = grpc::StatusCode::CANCELLED; break;
    case StatusCode::kDeadlineExceeded: code = grpc::StatusCode::DEADLINE_EXCEEDED; break;
    default: break;
  }
  return grpc::Status(code, s.ToString());
}

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

// The shard of the job being served. With a fixed job size (ShardOptions::num_workers > 0) one shard for
// the server's life; with 0 (agentd), a job's shard is made when its first worker connects, sized by its
// Hello, and dropped when its last worker has gone, so that the next job starts clean. One job at a time.
class Jobs {
 public:
  explicit Jobs(const ShardOptions& o) : options_(o) {
    if (o.num_workers > 0) shard_ = std::make_shared<Shard>(o);
  }

  // A worker's data connection, after its Hello: the shard it works on, or why it is refused.
  Result<std::shared_ptr<Shard>> Join(const Hello& h) {
    std::lock_guard<std::mutex> lock(mu_);
    if (h.num_workers > kMaxJobWorkers) {
      return Status::InvalidArgument("dlps-server", "a job of " + std::to_string(h.num_workers) + " workers is over the limit of " +
                                                        std::to_string(kMaxJobWorkers));
    }
    if (h.num_workers == 0 || h.rank >= h.num_workers) {
      return Status::InvalidArgument("dlps-server", "rank " + std::to_string(h.rank) + " is outside the job of " + std::to_string(h.num_workers) + " workers");
    }
    if (!shard_) {
      ShardOptions o = options_;
      o.num_workers = h.num_workers;
      shard_ = std::make_shared<Shard>(o);
    }
    const uint32_t size = shard_->options().num_workers;
    if (h.num_workers != size) {
      return Status::FailedPrecondition("dlps-server", "the worker says the job has " + std::to_string(h.num_workers) + " workers; this server " +
                                                           (options_.num_workers > 0 ? "was started for " : "is serving a job of ") +
                                                           std::to_string(size) + (options_.num_workers > 0 ? "" : " (one job at a time)"));
    }
    if (!ranks_.insert(h.rank).second) {
      return Status::FailedPrecondition("dlps-server", "rank " + std::to_string(h.rank) + " is already connected (two workers with one DLPS_RANK?)");
    }
    return shard_;
  }

  void Leave(uint32_t rank) {
    std::lock_guard<std::mutex> lock(mu_);
    ranks_.erase(rank);
    if (ranks_.empty() && options_.num_workers == 0) shard_.reset();  // the job is over
  }

  // For control calls, which come from connected workers.
  Result<std::shared_ptr<Shard>> Current() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!shard_) return Status::FailedPrecondition("dlps-server", "no job is connected (workers connect before they call Init)");
    return shard_;
  }

 private:
  const ShardOptions options_;
  std::mutex mu_;
  std::shared_ptr<Shard> shard_;  // protected by mu_
  std::set<uint32_t> ranks_;      // protected by mu_; connected workers
};

// Checkpoint IO runs on the gRPC thread that took the call: it is rare, and the data path does not use gRPC's
// threads.
class ControlService final : public pb::DlpsControl::CallbackService {
 public:
  ControlService(Jobs& jobs, std::string checkpoint_dir) : jobs_(jobs), dir_(std::move(checkpoint_dir)) {}
  grpc::ServerUnaryReactor* Init(grpc::CallbackServerContext* ctx, const pb::InitRequest* req, pb::InitReply* reply) override {
    return Answer(ctx, [&]() -> Status {
      ASSIGN_OR_RETURN(OptimizerConfig opt, OptimizerFromProto(req->optimizer()));
      ASSIGN_OR_RETURN(std::shared_ptr<Shard> shard, jobs_.Current());
      ASSIGN_OR_RETURN(uint64_t version, shard->Init(req->key(), req->chunk(), req->length(), opt));
      reply->set_version(version);
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* Barrier(grpc::CallbackServerContext* ctx, const pb::BarrierRequest* req, pb::BarrierReply*) override {
    auto* reactor = ctx->DefaultReactor();
    Result<std::shared_ptr<Shard>> shard = jobs_.Current();
    if (!shard.ok()) {
      reactor->Finish(ToGrpc(shard.status()));
    } else {  // answered when the last worker arrives
      (*shard)->Barrier(req->rank(), req->generation(), [reactor](const Status& st) { reactor->Finish(ToGrpc(st)); });
    }
    return reactor;
  }
  grpc::ServerUnaryReactor* Checkpoint(grpc::CallbackServerContext* ctx, const pb::CheckpointRequest* req, pb::CheckpointReply* reply) override {
    return Answer(ctx, [&]() -> Status {
      RETURN_IF_ERROR(HaveDir());
      ASSIGN_OR_RETURN(std::shared_ptr<Shard> shard, jobs_.Current());
      ASSIGN_OR_RETURN(CheckpointFile f, WriteShardCheckpoint(*shard, dir_, req->name(), req->server_index(), req->server_count()));
      reply->mutable_file()->set_name(f.name);
      reply->mutable_file()->set_bytes(f.bytes);
      reply->mutable_file()->set_sha256(f.sha256);
      return Status::Ok();
    });
  }
  grpc::ServerUnaryReactor* CommitCheckpoint(grpc::CallbackServerContext* ctx, const pb::CommitCheckpointRequest* req,
                                             pb::CommitCheckpointReply*) override {
    return Answer(ctx, [&]() -> Status {
      RETURN_IF_ERROR(HaveDir());
      std::vector<CheckpointFile> files;
      for (const auto& f : req->files()) files.push_back({f.name(), f.bytes(), f.sha256()});
      return WriteManifest(dir_, req->name(), static_cast<uint32_t>(files.size()), files);
    });
  }
  grpc::ServerUnaryReactor* Restore(grpc::CallbackServerContext* ctx, const pb::RestoreRequest* req, pb::RestoreReply*) override {
    return Answer(ctx, [&]() -> Status {
      RETURN_IF_ERROR(HaveDir());
      ASSIGN_OR_RETURN(std::shared_ptr<Shard> shard, jobs_.Current());
      return RestoreShardCheckpoint(*shard, dir_, req->name(), req->server_index(), req->server_count());
    });
  }

 private:
  // A call answered before the handler returns.
  template <typename Body>
  static grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, Body body) {
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpc(body()));
    return reactor;
  }
  Status HaveDir() const {
    if (!dir_.empty()) return Status::Ok();
    return Status::FailedPrecondition("dlps-server",
                                      "this server has no checkpoint directory (dlps-server --checkpoint-dir DIR; in agentd, ps.checkpoint_dir)");
  }

  Jobs& jobs_;
  const std::string dir_;
};

// Replies waiting for a data connection's writing thread. Shared with the shard's pull callbacks, which may run
// after the connection has ended (then the reply is dropped).
struct Outbox {
  struct Reply {
    Frame frame;
    Snapshot values;      // kPullReply
    std::string message;  // kError
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Reply> replies;
  size_t in_flight = 0;  // requests read and not yet answered
  bool closed = false;

  // Before a request is read: waits while the connection has kMaxInFlight requests unanswered (a peer that
  // sends without reading its replies is throttled by TCP, not served until memory runs out). False: closed.
  // `fd` is watched meanwhile: a peer that hangs up is gone even though nothing is read from it.
  bool Admit(int fd) {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return closed || in_flight < kMaxInFlight; })) {
      pollfd p{fd, POLLRDHUP, 0};
      if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return false;
    }
    if (closed) return false;
    ++in_flight;
    return true;
  }

  void Put(Reply r) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return;
      replies.push_back(std::move(r));
    }
    cv.notify_all();
  }
  void Error(uint64_t id, const Status& st) {
    Reply r;
    r.frame.op = Op::kError;
    r.frame.id = id;
    r.frame.aux = static_cast<uint32_t>(st.code());
    r.message = st.ToString();
    r.frame.bytes = r.message.size();
    Put(std::move(r));
  }
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu);
      closed = true;
    }
    cv.notify_all();
  }
};

// One worker's data connection.
class DataConn {
 public:
  // The Hello has been read already; `finished_fd` (an eventfd) is signalled when the connection has ended.
  // Throws std::system_error when no thread can be started.
  DataConn(Jobs& jobs, int fd, const Hello& hello, const std::atomic<bool>& stopping, int finished_fd)
      : jobs_(jobs), fd_(fd), hello_(hello), stopping_(stopping), finished_fd_(finished_fd) {
    reader_ = std::thread([this] { Serve(); });
  }
  ~DataConn() {
    ::shutdown(fd_, SHUT_RDWR);
    outbox_->Close();
    reader_.join();  // it started the writer, if any, and joins it
    ::close(fd_);
  }
  bool finished() const { return finished_.load(); }

 private:
  void Serve() {
    Status st = Accept(hello_);
    if (st.ok()) {
      rank_ = hello_.rank;
      Hello ack = hello_;
      ack.rank = 0;
      iovec iov{&ack, sizeof ack};
      st = WriteAll(fd_, &iov, 1);
      if (st.ok()) {
        try {
          writer_ = std::thread([this] { Send(); });
        } catch (const std::system_error& e) {
          st = Status::ResourceExhausted("dlps-server", std::string("no thread for the connection: ") + e.what());
        }
      }
      while (st.ok()) st = ServeOne();
      if (!stopping_.load()) {  // an accepted worker went away
        shard_->FailPending(Status::Unavailable("dlps-server", "worker rank " + std::to_string(rank_) +
                                                                   " disconnected (it exited or lost its connection); the rounds in progress fail"));
      }
      jobs_.Leave(rank_);
    }
    outbox_->Close();
    if (writer_.joinable()) writer_.join();  // it sends what is queued (a refusal's error frame), then ends
    finished_ = true;
    const uint64_t one = 1;
    (void)!::write(finished_fd_, &one, sizeof one);
  }

  Status Accept(const Hello& h) {
    Status refused;
    if (h.magic != kHelloMagic || h.protocol != kProtocolVersion) {
      refused = Status::InvalidArgument(
          "dlps-server", "this server speaks dlps protocol " + std::to_string(kProtocolVersion) + ", the worker " + std::to_string(h.protocol) +
                             " (run the same dlagent release on workers and servers)");
    } else if (Result<std::shared_ptr<Shard>> shard = jobs_.Join(h); !shard.ok()) {
      refused = shard.status();
    } else {
      shard_ = std::move(*shard);
      return Status::Ok();
    }
    // Sent here, not through the writing thread, so that it goes out before the connection closes.
    Frame f;
    f.op = Op::kError;
    f.aux = static_cast<uint32_t>(refused.code());
    const std::string message = refused.ToString();
    f.bytes = message.size();
    iovec iov[2] = {{&f, sizeof f}, {const_cast<char*>(message.data()), message.size()}};
    (void)WriteAll(fd_, iov, 2);
    return refused;
  }

  // Reads and handles one request; an error ends the connection.
  Status ServeOne() {
    if (!outbox_->Admit(fd_)) return Status::Unavailable("dlps-server", "connection closed");
    Frame f;
    RETURN_IF_ERROR(ReadFull(fd_, &f, sizeof f));
    if (f.bytes > kMaxPayloadBytes) {
      outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a frame of " + std::to_string(f.bytes) + " bytes is over the limit of " +
                                                                       std::to_string(kMaxPayloadBytes >> 30) + " GiB (a corrupt or foreign client)"));
      return Status::InvalidArgument("dlps-server", "oversized frame");
    }
    switch (f.op) {
      case Op::kPush: {
        if (f.bytes % sizeof(float) != 0) {
          outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a push of " + std::to_string(f.bytes) + " bytes is not whole floats"));
          return Discard(fd_, f.bytes);
        }
        Result<Shard::PushSlot> slot = shard_->BeginPush({f.key, f.chunk, rank_, f.version}, f.bytes / sizeof(float));
        if (!slot.ok()) {
          outbox_->Error(f.id, slot.status());
          return Discard(fd_, f.bytes);
        }
        if (Status st = ReadFull(fd_, slot->values, f.bytes); !st.ok()) {
          shard_->AbortPush(*slot);
          return st;
        }
        Result<uint64_t> version = shard_->EndPush(*slot);
        if (!version.ok()) {
          outbox_->Error(f.id, version.status());
        } else {
          Outbox::Reply r;
          r.frame.op = Op::kPushReply;
          r.frame.id = f.id;
          r.frame.key = f.key;
          r.frame.chunk = f.chunk;
          r.frame.version = *version;
          outbox_->Put(std::move(r));
        }
        return Status::Ok();
      }
      case Op::kPull:
        if (f.bytes != 0) {
          outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a pull request with a payload of " + std::to_string(f.bytes) +
                                                                           " bytes (a corrupt or foreign client)"));
          return Status::InvalidArgument("dlps-server", "a pull request with a payload");
        }
        shard_->Pull(f.key, f.chunk, f.version, [out = outbox_, f](const Status& st, const PullAnswer& a) {
          if (!st.ok()) return out->Error(f.id, st);
          Outbox::Reply r;
          r.frame.op = Op::kPullReply;
          r.frame.id = f.id;
          r.frame.key = f.key;
          r.frame.chunk = f.chunk;
          r.frame.version = a.version;
          r.frame.bytes = a.values->size() * sizeof(float);
          r.frame.aux = a.update_micros;
          r.values = a.values;
          out->Put(std::move(r));
        });
        return Status::Ok();
      default:
        outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "unknown request " + std::to_string(static_cast<uint32_t>(f.op))));
        return Status::InvalidArgument("dlps-server", "unknown request");
    }
  }

  void Send() {
    for (;;) {
      Outbox::Reply r;
      {
        std::unique_lock<std::mutex> lock(outbox_->mu);
        outbox_->cv.wait(lock, [&] { return outbox_->closed || !outbox_->replies.empty(); });
        if (outbox_->replies.empty()) break;
        r = std::move(outbox_->replies.front());
        outbox_->replies.pop_front();
        if (outbox_->in_flight > 0) --outbox_->in_flight;
      }
      outbox_->cv.notify_all();  // the reader may be waiting in Admit
      iovec iov[2] = {{&r.frame, sizeof r.frame}, {nullptr, 0}};
      if (r.values) iov[1] = {const_cast<float*>(r.values->data()), r.frame.bytes};
      if (!r.message.empty()) iov[1] = {r.message.data(), r.message.size()};
      if (!WriteAll(fd_, iov, 2).ok()) {
        ::shutdown(fd_, SHUT_RDWR);  // the reading thread ends too
        outbox_->Close();
      }
    }
    ::shutdown(fd_, SHUT_RDWR);  // every reply is out: the worker sees the
                                 // connection end now
  }

  Jobs& jobs_;
  std::shared_ptr<Shard> shard_;  // set once the Hello is accepted
  const int fd_;
  const Hello hello_;
  const std::atomic<bool>& stopping_;
  const int finished_fd_;
  uint32_t rank_ = 0;
  std::shared_ptr<Outbox> outbox_ = std::make_shared<Outbox>();
  std::atomic<bool> finished_{false};
  std::thread reader_, writer_;
};

}  // namespace

struct PsServer::Impl {
  Jobs jobs;
  ControlService control;
  std::unique_ptr<grpc::Server> grpc;
  int listen_fd = -1;
  int wake_fd = -1;
  int finished_fd = -1;  // data connections that ended signal it, so that their fds are closed at once
  int port = 0;
  std::atomic<bool> stopping{false};
  std::thread accept_thread;
  std::vector<std::unique_ptr<DataConn>> conns;  // owned by the accept thread until it ends

  explicit Impl(const ServerOptions& o) : jobs(o.shard), control(jobs, o.checkpoint_dir) {}

  // Accepts connections and hands each to gRPC or to a DataConn by its first four bytes.
  void AcceptLoop() {
    struct Undecided {
      int fd;
      Clock::time_point since;
      bool partial;  // some bytes came, fewer than four: look again shortly (poll would report them at once)
    };
    std::vector<Undecided> undecided;
    for (;;) {
      std::vector<pollfd> fds = {{listen_fd, POLLIN, 0}, {wake_fd, POLLIN, 0}, {finished_fd, POLLIN, 0}};
      bool partial = false;
      for (const auto& u : undecided) {
        fds.push_back({u.fd, static_cast<short>(u.partial ? 0 : POLLIN), 0});
        partial = partial || u.partial;
      }
      if (::poll(fds.data(), fds.size(), partial ? 10 : undecided.empty() ? -1 : 1000) < 0 && errno != EINTR) return;
      if (fds[1].revents) break;
      if (fds[2].revents) {
        uint64_t n;
        (void)!::read(finished_fd, &n, sizeof n);
        std::erase_if(conns, [](const auto& c) { return c->finished(); });
      }
      if (fds[0].revents & POLLIN) {
        const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
          if (undecided.size() >= kMaxUndecided) {  // the oldest of the silent goes: a worker's Hello comes at once
            ::close(undecided.front().fd);
            undecided.erase(undecided.begin());
          }
          TuneSocket(fd);
          undecided.push_back({fd, Clock::now(), false});
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));  // back off instead of spinning
        }
      }
      for (size_t i = 0; i < undecided.size();) {
        Undecided& u = undecided[i];
        // A data connection is decided once its whole Hello is here, so that no thread waits on a silent peer.
        Hello hello;
        const ssize_t got = ::recv(u.fd, &hello, sizeof hello, MSG_PEEK);
        const bool waited_too_long = Clock::now() - u.since > kFirstBytesTimeout;
        const bool is_dlps = got >= 4 && hello.magic == kHelloMagic;
        if (got >= 4 && std::memcmp(&hello, "PRI ", 4) == 0) {
          grpc::AddInsecureChannelFromFd(grpc.get(), u.fd);
        } else if (is_dlps && got == sizeof hello) {
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

  void StartDataConn(int fd, const Hello& hello) {
    if (conns.size() >= kMaxDataConnections) {
      ::close(fd);
      return;
    }
    try {
      conns.push_back(std::make_unique<DataConn>(jobs, fd, hello, stopping, finished_fd));
    } catch (const std::system_error&) {
      ::close(fd);  // no thread to serve it: the worker sees the connection close and its retry or error
    }
  }
};

PsServer::PsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

int PsServer::port() const { return impl_->port; }

Result<std::unique_ptr<PsServer>> PsServer::Start(const ServerOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  Result<int> fd = ListenTcp(options.listen, &impl->port);
  if (!fd.ok()) return fd.status().Annotate("cannot serve (in use, or not an address of this host)");
  impl->listen_fd = *fd;
  impl->wake_fd = ::eventfd(0, EFD_CLOEXEC);
  impl->finished_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  grpc::ServerBuilder builder;
  builder.RegisterService(&impl->control);
  impl->grpc = builder.BuildAndStart();
  if (!impl->grpc || impl->wake_fd < 0 || impl->finished_fd < 0) {
    ::close(impl->listen_fd);
    if (impl->wake_fd >= 0) ::close(impl->wake_fd);
    if (impl->finished_fd >= 0) ::close(impl->finished_fd);
    return Status::Internal("dlps-server", "cannot start the gRPC server");
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
  // Waiting barriers hold calls open: fail them, then give the rest a moment to finish.
  if (auto shard = s.jobs.Current(); shard.ok()) (*shard)->FailPending(Status::Unavailable("dlps-server", "the server is shutting down"));
  s.grpc->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  s.grpc->Wait();
}

}  // namespace dlagent::ps
