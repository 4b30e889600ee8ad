#include "agent/ps/data_conn.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <string>
#include <system_error>
#include <thread>

#include <spdlog/spdlog.h>

#include "agent/ps/checkpoint.h"

namespace dlagent::ps {
namespace {

// Replies waiting for a data connection's writing thread. Shared with the shard's pull callbacks, which may run
// after the connection has ended (then the reply is dropped).
struct Outbox {
  struct Reply {
    Frame frame;
    Snapshot values;      // kPullReply
    std::string message;  // kError, kControlReply
  };
  Mutex mu;
  std::condition_variable cv;
  std::deque<Reply> replies GUARDED_BY(mu);
  size_t in_flight GUARDED_BY(mu) = 0;  // requests read and not yet answered
  bool closed GUARDED_BY(mu) = false;
  // Pulled values queued and not yet sent. A worker that asks and never reads (each round's version held for
  // it) is cut off past twice the shard's weights and kSlowReaderSlack: its connection is closed.
  uint64_t queued_bytes GUARDED_BY(mu) = 0;
  uint64_t too_slow_at GUARDED_BY(mu) = 0;          // the queued bytes when it was cut off (0: it was not)
  std::weak_ptr<const Shard> shard GUARDED_BY(mu);  // set once the worker has joined
  int fd GUARDED_BY(mu) = -1;                       // shut down when cut off, while not closed (the fd is ours then)

  // Before a request is read: waits while the connection has kMaxInFlight requests unanswered (a peer that
  // sends without reading its replies is throttled by TCP, not served until memory runs out). False: closed.
  // `fd` is watched meanwhile: a peer that hangs up is gone even though nothing is read from it.
  bool Admit(int fd) {
    MutexLock lock(mu);
    while (!closed && in_flight >= kMaxInFlight) {
      if (cv.wait_for(lock.native(), std::chrono::milliseconds(200)) == std::cv_status::no_timeout) continue;
      pollfd p{fd, POLLRDHUP, 0};
      if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return false;
    }
    if (closed) return false;
    ++in_flight;
    return true;
  }

  void Put(Reply r) {
    const uint64_t bytes = r.values ? r.frame.bytes : 0;
    {
      MutexLock lock(mu);
      if (closed) return;
      const std::shared_ptr<const Shard> s = shard.lock();
      const uint64_t limit = 2 * (s ? s->weight_bytes() : 0) + kSlowReaderSlack;
      if (queued_bytes + bytes > limit) {
        too_slow_at = queued_bytes + bytes;
        closed = true;
        replies.clear();  // what it held goes now
        queued_bytes = 0;
        ::shutdown(fd, SHUT_RDWR);  // the reading thread ends, and with it the connection
      } else {
        queued_bytes += bytes;
        replies.push_back(std::move(r));
      }
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
      MutexLock lock(mu);
      closed = true;
    }
    cv.notify_all();
  }
};

// One worker's data connection.
class DataConn final : public DataConnection {
 public:
  // The Hello has been read already; `finished_fd` (an eventfd) is signalled when the connection has ended.
  // Throws std::system_error when no thread can be started.
  DataConn(Jobs& jobs, std::string checkpoint_dir, int fd, const Hello& hello, const std::atomic<bool>& stopping, int finished_fd)
      : jobs_(jobs),
        stats_(jobs.stats()),
        checkpoint_dir_(std::move(checkpoint_dir)),
        fd_(fd),
        hello_(hello),
        stopping_(stopping),
        finished_fd_(finished_fd) {
    reader_ = std::thread([this] { Serve(); });
  }
  ~DataConn() override {
    ::shutdown(fd_, SHUT_RDWR);
    outbox_->Close();
    reader_.join();  // it started the writer, if any, and joins it
    ::close(fd_);
  }
  bool finished() const override { return finished_.load(); }
  std::string job() const override { return std::string(hello_.job, ::strnlen(hello_.job, sizeof hello_.job)); }

 private:
  void Serve() {
    Status st = Accept(hello_);
    if (st.ok()) {
      rank_ = hello_.rank;
      {
        MutexLock lock(outbox_->mu);
        outbox_->fd = fd_;
        outbox_->shard = shard_;
      }
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
      uint64_t too_slow_at = 0;
      {
        MutexLock lock(outbox_->mu);
        too_slow_at = outbox_->too_slow_at;
      }
      if (too_slow_at > 0) {
        const std::string why = "worker rank " + std::to_string(rank_) + " of job " + job() +
                                " did not read its replies: " + std::to_string(too_slow_at >> 20) +
                                " MiB of pulled values were waiting for it, over twice the shard's " + std::to_string(shard_->weight_bytes() >> 20) +
                                " MiB of weights and " + std::to_string(kSlowReaderSlack >> 20) + " MiB; its connection was closed";
        spdlog::warn("dlps: {}", why);
        shard_->FailPending(Status::ResourceExhausted("dlps-server", why + "; the rounds in progress fail"));
      } else if (!stopping_.load()) {  // an accepted worker went away
        shard_->FailPending(Status::Unavailable(
            "dlps-server", "worker rank " + std::to_string(rank_) + " disconnected (it exited or lost its connection); the rounds in progress fail"));
      }
      jobs_.Leave(rank_, shard_);
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
      refused = Status::InvalidArgument("dlps-server", "this server speaks dlps protocol " + std::to_string(kProtocolVersion) + ", the worker " +
                                                           std::to_string(h.protocol) + " (run the same dlagent release on workers and servers)");
    } else if (Result<std::shared_ptr<Shard>> shard = jobs_.Join(h); !shard.ok()) {
      refused = shard.status();
    } else {
      shard_ = std::move(*shard);
      stats_.connections.fetch_add(1, std::memory_order_relaxed);
      return Status::Ok();
    }
    stats_.refused_hello.fetch_add(1, std::memory_order_relaxed);
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
      stats_.refused_oversized.fetch_add(1, std::memory_order_relaxed);
      outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a frame of " + std::to_string(f.bytes) + " bytes is over the limit of " +
                                                                      std::to_string(kMaxPayloadBytes >> 30) + " GiB (a corrupt or foreign client)"));
      return Status::InvalidArgument("dlps-server", "oversized frame");
    }
    switch (f.op) {
      case Op::kPush: {
        if (f.bytes % sizeof(float) != 0) {
          stats_.refused_malformed.fetch_add(1, std::memory_order_relaxed);
          outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a push of " + std::to_string(f.bytes) + " bytes is not whole floats"));
          return Discard(fd_, f.bytes);
        }
        Result<Shard::PushSlot> slot = shard_->BeginPush({f.key, f.chunk, rank_, f.version}, f.bytes / sizeof(float));
        if (!slot.ok()) {
          stats_.refused_push.fetch_add(1, std::memory_order_relaxed);
          outbox_->Error(f.id, slot.status());
          return Discard(fd_, f.bytes);
        }
        if (Status st = ReadFull(fd_, slot->values, f.bytes); !st.ok()) {
          shard_->AbortPush(*slot);
          return st;
        }
        stats_.pushes.fetch_add(1, std::memory_order_relaxed);
        stats_.bytes_in.fetch_add(f.bytes, std::memory_order_relaxed);
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
          stats_.refused_malformed.fetch_add(1, std::memory_order_relaxed);
          outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a pull request with a payload of " + std::to_string(f.bytes) +
                                                                          " bytes (a corrupt or foreign client)"));
          return Status::InvalidArgument("dlps-server", "a pull request with a payload");
        }
        stats_.pulls.fetch_add(1, std::memory_order_relaxed);
        shard_->Pull(f.key, f.chunk, f.version, [out = outbox_, f, stats = &stats_](const Status& st, const PullAnswer& a) {
          if (!st.ok()) return out->Error(f.id, st);
          stats->bytes_out.fetch_add(a.values->size() * sizeof(float), std::memory_order_relaxed);
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
        if (IsControl(f.op)) return ServeControl(f);
        stats_.refused_malformed.fetch_add(1, std::memory_order_relaxed);
        outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "unknown request " + std::to_string(static_cast<uint32_t>(f.op))));
        return Status::InvalidArgument("dlps-server", "unknown request");
    }
  }

  // A control request: its payload is read whole (it is small), then it is answered; a barrier once its last
  // worker has entered it. Checkpoint IO runs here: it is rare, and this worker waits for it anyway.
  Status ServeControl(const Frame& f) {
    if (f.bytes > kMaxControlBytes) {
      stats_.refused_oversized.fetch_add(1, std::memory_order_relaxed);
      outbox_->Error(f.id, Status::InvalidArgument("dlps-server", "a " + std::string(OpName(f.op)) + " request of " + std::to_string(f.bytes) +
                                                                      " bytes is over the limit of " + std::to_string(kMaxControlBytes) + " bytes"));
      return Status::InvalidArgument("dlps-server", "oversized control request");
    }
    std::string payload(f.bytes, '\0');
    RETURN_IF_ERROR(ReadFull(fd_, payload.data(), payload.size()));
    stats_.controls.fetch_add(1, std::memory_order_relaxed);
    if (f.op == Op::kBarrier) {
      shard_->Barrier(rank_, f.version, [out = outbox_, id = f.id](const Status& st) {
        if (!st.ok()) return out->Error(id, st);
        out->Put(ControlAnswer(id, 0, ""));
      });
      return Status::Ok();
    }
    Result<Outbox::Reply> r = Control(f, payload);
    if (r.ok()) {
      outbox_->Put(std::move(*r));
    } else {
      outbox_->Error(f.id, r.status());
    }
    return Status::Ok();
  }

  static Outbox::Reply ControlAnswer(uint64_t id, uint64_t version, std::string payload) {
    Outbox::Reply r;
    r.frame.op = Op::kControlReply;
    r.frame.id = id;
    r.frame.version = version;
    r.frame.bytes = payload.size();
    r.message = std::move(payload);
    return r;
  }

  Result<Outbox::Reply> Control(const Frame& f, const std::string& payload) {
    if (f.op == Op::kInit) {
      InitBody b;
      if (payload.size() != sizeof b) {
        return Status::InvalidArgument("dlps-server",
                                       "an init request of " + std::to_string(payload.size()) + " bytes, not " + std::to_string(sizeof b));
      }
      std::memcpy(&b, payload.data(), sizeof b);
      ASSIGN_OR_RETURN(OptimizerConfig optimizer, ResolveOptimizer(SpecOf(b)));
      ASSIGN_OR_RETURN(uint64_t version, shard_->Init(f.key, f.chunk, b.length, optimizer));
      return ControlAnswer(f.id, version, "");
    }
    if (checkpoint_dir_.empty()) {
      return Status::FailedPrecondition("dlps-server",
                                        "this server has no checkpoint directory (dlps-server --checkpoint-dir DIR; in agentd, ps.checkpoint_dir)");
    }
    ASSIGN_OR_RETURN(const Jobs::CheckpointPlace place, jobs_.CheckpointDir(checkpoint_dir_, job()));
    const std::string& dir = place.dir;
    if (f.op == Op::kCheckpoint) {
      ASSIGN_OR_RETURN(CheckpointFile file, WriteShardCheckpoint(*shard_, dir, payload, f.chunk, f.aux));
      return ControlAnswer(f.id, 0, EncodeCheckpointFiles({file}));
    }
    if (f.op == Op::kCommitCheckpoint) {
      const size_t newline = payload.find('\n');
      if (newline == std::string::npos) return Status::InvalidArgument("dlps-server", "a commit request without the checkpoint's name");
      ASSIGN_OR_RETURN(std::vector<CheckpointFile> files, DecodeCheckpointFiles(std::string_view(payload).substr(newline + 1)));
      RETURN_IF_ERROR(WriteManifest(dir, payload.substr(0, newline), static_cast<uint32_t>(files.size()), files));
      return ControlAnswer(f.id, 0, "");
    }
    Status restored = RestoreShardCheckpoint(*shard_, dir, payload, f.chunk, f.aux);  // kRestore
    if (restored.code() == StatusCode::kNotFound && place.uid) {
      if (const std::string elsewhere = CheckpointElsewhere(checkpoint_dir_, payload, *place.uid); !elsewhere.empty()) {
        restored = Status::NotFound("dlps-checkpoint", std::string(restored.message()) + "; " + elsewhere);
      }
    }
    RETURN_IF_ERROR(restored);
    return ControlAnswer(f.id, 0, "");
  }

  void Send() {
    for (;;) {
      Outbox::Reply r;
      {
        MutexLock lock(outbox_->mu);
        while (!outbox_->closed && outbox_->replies.empty()) outbox_->cv.wait(lock.native());
        if (outbox_->replies.empty()) break;
        r = std::move(outbox_->replies.front());
        outbox_->replies.pop_front();
        if (r.values) outbox_->queued_bytes -= r.frame.bytes;
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
  PsStats& stats_;
  const std::string checkpoint_dir_;
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

std::unique_ptr<DataConnection> StartDataConnection(Jobs& jobs, const std::string& checkpoint_dir, int fd, const Hello& hello,
                                                    const std::atomic<bool>& stopping, int finished_fd) {
  return std::make_unique<DataConn>(jobs, checkpoint_dir, fd, hello, stopping, finished_fd);
}

}  // namespace dlagent::ps
