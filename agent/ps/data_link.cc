#include "agent/ps/data_link.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "bootstrap/common/backoff.h"

namespace dlagent::ps::detail {

Result<std::unique_ptr<DataLink>> DataLink::Open(const std::string& address, const Hello& hello, std::chrono::milliseconds deadline,
                                                 std::chrono::milliseconds connect_timeout) {
  int fd = -1;
  Status st =
      Retry(*NewPosixEnv(),
            {.initial = std::chrono::milliseconds(50), .max_delay = std::chrono::seconds(1), .max_attempts = 0, .max_elapsed = connect_timeout},
            [&]() -> Status {
              Result<int> r = ConnectTcp(address, std::min(connect_timeout, std::chrono::milliseconds(10000)));
              if (!r.ok()) return r.status();
              fd = *r;
              return Status::Ok();
            });
  if (!st.ok()) return Status(st.code(), "dlps-client", "dlps server " + address + ": " + std::string(st.message()) + " (is the server running?)");
  std::unique_ptr<DataLink> link(new DataLink(address, fd, deadline));
  RETURN_IF_ERROR(link->Handshake(hello));
  link->reader_ = std::thread([l = link.get()] { l->ReadLoop(); });
  link->writer_ = std::thread([l = link.get()] { l->WriteLoop(); });
  return link;
}

DataLink::DataLink(std::string address, int fd, std::chrono::milliseconds deadline) : address_(std::move(address)), fd_(fd), deadline_(deadline) {
  timeval tv{static_cast<time_t>(deadline.count() / 1000), static_cast<suseconds_t>(deadline.count() % 1000 * 1000)};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv,
               sizeof tv);  // a reply that stops mid-way
}

DataLink::~DataLink() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  ::shutdown(fd_, SHUT_RDWR);
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
}

void DataLink::Push(const std::shared_ptr<Pending>& p, uint64_t key, uint32_t chunk, uint64_t round, const float* values, size_t n,
                    std::shared_ptr<const void> keep) {
  Frame f;
  f.op = Op::kPush;
  f.key = key;
  f.chunk = chunk;
  f.version = round;
  f.bytes = n * sizeof(float);
  Submit({f, values, std::move(keep)}, {p, nullptr, 0, {}, false});
}

void DataLink::Pull(const std::shared_ptr<Pending>& p, uint64_t key, uint32_t chunk, uint64_t min_version, float* dst, size_t n) {
  Frame f;
  f.op = Op::kPull;
  f.key = key;
  f.chunk = chunk;
  f.version = min_version;
  Submit({f, nullptr, nullptr}, {p, dst, n, {}, false});
}

void DataLink::Control(const std::shared_ptr<Pending>& p, Frame request, std::string payload, ControlReply* reply) {
  auto body = std::make_shared<const std::string>(std::move(payload));
  request.bytes = body->size();
  Expect e{p, nullptr, 0, {}, false};
  e.reply = reply;
  Submit({request, body->data(), body}, std::move(e));
}

Status DataLink::Named(const Expect& e, const Status& st) const {
  std::string what = OpName(e.op);
  if (e.op == Op::kPush || e.op == Op::kPull || e.op == Op::kInit) what += " of key " + std::to_string(e.key) + " chunk " + std::to_string(e.chunk);
  return Status(st.code(), "dlps-client", "dlps server " + address_ + ": " + what + ": " + std::string(st.message()));
}

Status DataLink::Handshake(const Hello& hello) {
  iovec iov{const_cast<Hello*>(&hello), sizeof hello};
  Status st = WriteAll(fd_, &iov, 1);
  // The answer is a Hello (accepted) or an error frame; their first 4 bytes (the magic, an op) tell them apart.
  uint32_t first = 0;
  if (st.ok()) st = ReadFull(fd_, &first, sizeof first);
  if (st.ok() && first == kHelloMagic) {
    Hello ack;
    st = ReadFull(fd_, reinterpret_cast<char*>(&ack) + sizeof first, sizeof ack - sizeof first);
  } else if (st.ok()) {
    Frame f;
    static_assert(sizeof f > sizeof first);
    std::memcpy(static_cast<void*>(&f), &first, sizeof first);
    st = ReadFull(fd_, reinterpret_cast<char*>(&f) + sizeof first, sizeof f - sizeof first);
    std::string message(std::min<uint64_t>(f.bytes, 4096), '\0');
    if (st.ok() && f.op == Op::kError) st = ReadFull(fd_, message.data(), message.size());
    if (st.ok()) {
      st = f.op == Op::kError ? Status(static_cast<StatusCode>(f.aux), "dlps-client", message)
                              : Status::Unavailable("dlps-client", "not a dlps server (it answered something else)");
    }
  }
  if (st.ok()) return st;
  return Status(st.code(), "dlps-client", "dlps server " + address_ + ": " + std::string(st.message()));
}

void DataLink::Submit(Request r, Expect e) {
  {
    MutexLock lock(mu_);
    if (!broken_.ok()) {
      e.op = r.frame.op;
      e.key = r.frame.key;
      e.chunk = r.frame.chunk;
      Status why = Named(e, broken_);
      e.pending->Done(why);
      return;
    }
    r.frame.id = ++next_id_;
    e.deadline = Clock::now() + deadline_;
    e.op = r.frame.op;
    e.key = r.frame.key;
    e.chunk = r.frame.chunk;
    expects_.emplace(r.frame.id, std::move(e));
    queue_.push_back(std::move(r));
  }
  cv_.notify_all();
}

void DataLink::WriteLoop() {
  for (;;) {
    Request r;
    {
      MutexLock lock(mu_);
      while (!stopping_ && queue_.empty()) cv_.wait(lock.native());
      if (stopping_) return;
      r = std::move(queue_.front());
      queue_.pop_front();
    }
    iovec iov[2] = {{&r.frame, sizeof r.frame}, {const_cast<void*>(r.payload), r.payload ? r.frame.bytes : 0}};
    if (Status st = WriteAll(fd_, iov, 2); !st.ok()) {
      MutexLock lock(mu_);
      if (send_error_.ok()) send_error_ = st;
      ::shutdown(fd_,
                 SHUT_RDWR);  // the reading thread fails what is outstanding
      return;
    }
  }
}

void DataLink::ReadLoop() {
  Status st;
  while (st.ok()) {
    const int wait_ms = ExpireAndNextWait();
    pollfd p{fd_, POLLIN, 0};
    const int rc = ::poll(&p, 1, wait_ms);
    if (rc < 0 && errno != EINTR) st = Status::FromErrno("dlps-client", "poll", errno);
    if (rc > 0) st = ReadReply();
  }
  std::map<uint64_t, Expect> failed;
  {
    MutexLock lock(mu_);
    if (!send_error_.ok()) st = send_error_;
    if (stopping_) st = Status::Cancelled("dlps-client", "the client is shutting down");
    if (st.code() == StatusCode::kUnavailable && st.message() == "connection closed") {
      st = Status::Unavailable("dlps-client", "the server closed the connection (is the server running?)");
    }
    broken_ = st;
    failed.swap(expects_);
    queue_.clear();
  }
  for (auto& [id, e] : failed) {
    if (!e.abandoned) e.pending->Done(Named(e, st));
  }
}

int DataLink::ExpireAndNextWait() {
  const auto now = Clock::now();
  auto next = now + std::chrono::seconds(1);
  std::vector<std::pair<std::shared_ptr<Pending>, Status>> expired;
  {
    MutexLock lock(mu_);
    for (auto& [id, e] : expects_) {
      if (e.abandoned) continue;
      if (e.deadline <= now) {
        e.abandoned = true;
        expired.emplace_back(
            e.pending, Named(e, Status::DeadlineExceeded("dlps-client", "no answer within the deadline of " + std::to_string(deadline_.count()) +
                                                                            " ms (a sync round waits for every worker's push: is one "
                                                                            "stuck? DLPS_DEADLINE sets the deadline)")));
      } else {
        next = std::min(next, e.deadline);
      }
    }
  }
  for (auto& [p, why] : expired) p->Done(why);
  return static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count()) + 1;
}

Status DataLink::ReadReply() {
  Frame f;
  RETURN_IF_ERROR(ReadFull(fd_, &f, sizeof f));
  if (f.bytes > kMaxPayloadBytes) return Status::Internal("dlps-client", "the server sent a frame of " + std::to_string(f.bytes) + " bytes");
  Expect e;
  {
    MutexLock lock(mu_);
    auto it = expects_.find(f.id);
    if (it == expects_.end())
      return Status::Internal("dlps-client", "the server answered request " + std::to_string(f.id) + ", which was never made");
    e = std::move(it->second);
    expects_.erase(it);
  }
  // The request is out of the map now: it completes here, with the connection's error if reading fails.
  Status result;
  Status io = ReadAnswer(f, e, &result);
  if (!e.abandoned) e.pending->Done(io.ok() ? result : Named(e, io));
  return io;
}

Status DataLink::ReadAnswer(const Frame& f, Expect& e, Status* result) {
  if (f.op == Op::kError) {
    std::string message(std::min<uint64_t>(f.bytes, 1 << 20), '\0');
    RETURN_IF_ERROR(ReadFull(fd_, message.data(), message.size()));
    RETURN_IF_ERROR(Discard(fd_, f.bytes - message.size()));
    *result = Named(e, Status(static_cast<StatusCode>(f.aux), "", message));
  } else if (f.op == Op::kPullReply && e.op == Op::kPull) {
    if (f.bytes != e.floats * sizeof(float) || f.key != e.key || f.chunk != e.chunk) {
      RETURN_IF_ERROR(Discard(fd_, f.bytes));
      *result = Named(e, Status::Internal("", "the server answered with key " + std::to_string(f.key) + " chunk " + std::to_string(f.chunk) + " of " +
                                                  std::to_string(f.bytes / sizeof(float)) + " floats, not " + std::to_string(e.floats)));
    } else if (e.abandoned) {
      RETURN_IF_ERROR(Discard(fd_, f.bytes));
    } else {
      RETURN_IF_ERROR(ReadFull(fd_, e.dst, f.bytes));
      server_micros_ += f.aux;
    }
  } else if (f.op == Op::kPushReply && e.op == Op::kPush && f.bytes == 0) {
  } else if (f.op == Op::kControlReply && IsControl(e.op) && f.bytes <= kMaxControlBytes) {
    if (e.abandoned) return Discard(fd_, f.bytes);
    e.reply->version = f.version;
    e.reply->payload.resize(f.bytes);
    RETURN_IF_ERROR(ReadFull(fd_, e.reply->payload.data(), f.bytes));
  } else {
    return Status::Internal("dlps-client", "the server answered a " + std::string(OpName(e.op)) + " request with frame type " +
                                               std::to_string(static_cast<uint32_t>(f.op)) + " of " + std::to_string(f.bytes) + " bytes");
  }
  return Status::Ok();
}

}  // namespace dlagent::ps::detail
