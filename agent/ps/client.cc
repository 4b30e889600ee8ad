#include "agent/ps/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "agent/ps/frame.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/duration.h"
#include "proto/dlps.grpc.pb.h"

namespace dlagent::ps {
namespace {

namespace pb = ::dlps::v1;

using Clock = std::chrono::steady_clock;

Status FromGrpc(const std::string& address, const std::string& what, const grpc::Status& st) {
  const std::string message = "dlps server " + address + ": " + what + ": " + st.error_message();
  switch (st.error_code()) {
    case grpc::StatusCode::UNAVAILABLE: return Status::Unavailable("dlps-client", message + " (is the server running?)");
    case grpc::StatusCode::DEADLINE_EXCEEDED: return Status::DeadlineExceeded("dlps-client", message);
    case grpc::StatusCode::INVALID_ARGUMENT: return Status::InvalidArgument("dlps-client", message);
    case grpc::StatusCode::NOT_FOUND: return Status::NotFound("dlps-client", message);
    case grpc::StatusCode::FAILED_PRECONDITION: return Status::FailedPrecondition("dlps-client", message);
    default: return Status::Internal("dlps-client", message);
  }
}

// One control call with a deadline; an error names the server and what was asked.
template <typename Request, typename Reply>
Status Unary(pb::DlpsControl::Stub& stub, grpc::Status (pb::DlpsControl::Stub::*method)(grpc::ClientContext*, const Request&, Reply*),
             const Request& req, Reply* reply, const std::string& address, std::chrono::milliseconds deadline, const std::string& what) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::Status st = (stub.*method)(&ctx, req, reply);
  return st.ok() ? Status::Ok() : FromGrpc(address, what, st);
}

std::string What(const char* op, uint64_t key, uint32_t chunk) {
  return std::string(op) + " of key " + std::to_string(key) + " chunk " + std::to_string(chunk);
}

Result<uint32_t> EnvNumber(const char* name, bool required, uint32_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    if (required) return Status::InvalidArgument("dlps-client", std::string(name) + " is not set");
    return fallback;
  }
  char* end = nullptr;
  const unsigned long n = std::strtoul(v, &end, 10);
  if (*end != '\0' || n > UINT32_MAX || v[0] == '-') {
    return Status::InvalidArgument("dlps-client", std::string(name) + "='" + v + "' is not a number");
  }
  return static_cast<uint32_t>(n);
}

}  // namespace

Result<PsClientOptions> PsClientOptions::FromEnv() {
  PsClientOptions o;
  const char* servers = std::getenv("DLPS_SERVERS");
  if (!servers || !*servers) return Status::InvalidArgument("dlps-client", "DLPS_SERVERS is not set (host:port,host:port,...)");
  std::stringstream ss(servers);
  for (std::string s; std::getline(ss, s, ',');) {
    if (s.empty() || s.find(':') == std::string::npos) {
      return Status::InvalidArgument("dlps-client", "DLPS_SERVERS has '" + s + "', not host:port");
    }
    o.servers.push_back(s);
  }
  ASSIGN_OR_RETURN(o.rank, EnvNumber("DLPS_RANK", true, 0));
  ASSIGN_OR_RETURN(o.num_workers, EnvNumber("DLPS_NUM_WORKERS", true, 1));
  if (o.num_workers == 0 || o.rank >= o.num_workers) {
    return Status::InvalidArgument("dlps-client",
                                   "DLPS_RANK=" + std::to_string(o.rank) + " must be below DLPS_NUM_WORKERS=" + std::to_string(o.num_workers));
  }
  for (auto [name, field] : {std::pair{"DLPS_DEADLINE", &o.deadline}, std::pair{"DLPS_CONNECT_TIMEOUT", &o.connect_timeout}}) {
    if (const char* d = std::getenv(name); d && *d) {
      Result<Duration> parsed = ParseDuration(d);
      if (!parsed.ok()) return parsed.status().Annotate(name);
      *field = std::chrono::duration_cast<std::chrono::milliseconds>(*parsed);
    }
  }
  return o;
}

namespace detail {

// One ticket: the messages still outstanding and the first error.
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  size_t outstanding = 0;
  Status error;
  std::shared_ptr<std::vector<float>> gradient;  // Push's copy, held until every chunk is sent

  void Done(const Status& st) {
    std::lock_guard<std::mutex> lock(mu);
    if (!st.ok() && error.ok()) error = st;
    if (--outstanding == 0) cv.notify_all();
  }
};

// The data connection to one server. Requests go out on a writing thread, in the order they were made; replies
// come back in any order on a reading thread, which is the only one that completes requests (so that nothing
// writes into a caller's `out` after its Wait has returned). Pull replies are read straight into `out`. A
// request past its deadline fails; its reply, if it comes, is read and dropped.
class DataLink {
 public:
  static Result<std::unique_ptr<DataLink>> Open(const std::string& address, const Hello& hello, std::chrono::milliseconds deadline,
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

  ~DataLink() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    ::shutdown(fd_, SHUT_RDWR);
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
    ::close(fd_);
  }

  uint64_t server_micros() const { return server_micros_.load(); }

  // values stay alive (the caller's, or held by keep) until the request is answered.
  void Push(const std::shared_ptr<Pending>& p, uint64_t key, uint32_t chunk, uint64_t round, const float* values, size_t n,
            std::shared_ptr<const void> keep) {
    Frame f;
    f.op = Op::kPush;
    f.key = key;
    f.chunk = chunk;
    f.version = round;
    f.bytes = n * sizeof(float);
    Submit({f, values, std::move(keep)}, {p, nullptr, 0, {}, false});
  }

  void Pull(const std::shared_ptr<Pending>& p, uint64_t key, uint32_t chunk, uint64_t min_version, float* dst, size_t n) {
    Frame f;
    f.op = Op::kPull;
    f.key = key;
    f.chunk = chunk;
    f.version = min_version;
    Submit({f, nullptr, nullptr}, {p, dst, n, {}, false});
  }

 private:
  struct Request {
    Frame frame;
    const float* values;
    std::shared_ptr<const void> keep;
  };
  struct Expect {
    std::shared_ptr<Pending> pending;
    float* dst;  // pulls
    uint64_t floats;
    Clock::time_point deadline;
    bool abandoned;  // failed at its deadline; the reply is dropped
    Op op = Op::kPush;
    uint64_t key = 0;
    uint32_t chunk = 0;
  };

  DataLink(std::string address, int fd, std::chrono::milliseconds deadline) : address_(std::move(address)), fd_(fd), deadline_(deadline) {
    timeval tv{static_cast<time_t>(deadline.count() / 1000), static_cast<suseconds_t>(deadline.count() % 1000 * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv,
                 sizeof tv);  // a reply that stops mid-way
  }

  Status Named(const Expect& e, const Status& st) const {
    const char* op = e.op == Op::kPush ? "push" : "pull";
    return Status(st.code(), "dlps-client",
                  "dlps server " + address_ + ": " + op + " of key " + std::to_string(e.key) + " chunk " + std::to_string(e.chunk) + ": " +
                      std::string(st.message()));
  }

  Status Handshake(const Hello& hello) {
    iovec iov{const_cast<Hello*>(&hello), sizeof hello};
    Status st = WriteAll(fd_, &iov, 1);
    Hello ack;
    if (st.ok()) st = ReadFull(fd_, &ack, sizeof ack);
    if (st.ok() && ack.magic != kHelloMagic) {
      Frame f;
      std::memcpy(static_cast<void*>(&f), &ack, sizeof ack);
      st = ReadFull(fd_, reinterpret_cast<char*>(&f) + sizeof ack, sizeof f - sizeof ack);
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

  void Submit(Request r, Expect e) {
    {
      std::lock_guard<std::mutex> lock(mu_);
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

  void WriteLoop() {
    for (;;) {
      Request r;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        r = std::move(queue_.front());
        queue_.pop_front();
      }
      iovec iov[2] = {{&r.frame, sizeof r.frame}, {const_cast<float*>(r.values), r.values ? r.frame.bytes : 0}};
      if (Status st = WriteAll(fd_, iov, 2); !st.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        if (send_error_.ok()) send_error_ = st;
        ::shutdown(fd_,
                   SHUT_RDWR);  // the reading thread fails what is outstanding
        return;
      }
    }
  }

  void ReadLoop() {
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
      std::lock_guard<std::mutex> lock(mu_);
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

  // Fails the requests past their deadline; returns how long poll may wait.
  int ExpireAndNextWait() {
    const auto now = Clock::now();
    auto next = now + std::chrono::seconds(1);
    std::vector<std::pair<std::shared_ptr<Pending>, Status>> expired;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [id, e] : expects_) {
        if (e.abandoned) continue;
        if (e.deadline <= now) {
          e.abandoned = true;
          expired.emplace_back(e.pending, Named(e, Status::DeadlineExceeded(
                                                      "dlps-client", "no answer within the deadline of " + std::to_string(deadline_.count()) +
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

  Status ReadReply() {
    Frame f;
    RETURN_IF_ERROR(ReadFull(fd_, &f, sizeof f));
    if (f.bytes > kMaxPayloadBytes) return Status::Internal("dlps-client", "the server sent a frame of " + std::to_string(f.bytes) + " bytes");
    Expect e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = expects_.find(f.id);
      if (it == expects_.end())
        return Status::Internal("dlps-client", "the server answered request " + std::to_string(f.id) + ", which was never made");
      e = std::move(it->second);
      expects_.erase(it);
    }
    Status result;
    if (f.op == Op::kError) {
      std::string message(std::min<uint64_t>(f.bytes, 1 << 20), '\0');
      RETURN_IF_ERROR(ReadFull(fd_, message.data(), message.size()));
      RETURN_IF_ERROR(Discard(fd_, f.bytes - message.size()));
      result = Named(e, Status(static_cast<StatusCode>(f.aux), "", message));
    } else if (f.op == Op::kPullReply && e.op == Op::kPull) {
      if (f.bytes != e.floats * sizeof(float) || f.key != e.key || f.chunk != e.chunk) {
        RETURN_IF_ERROR(Discard(fd_, f.bytes));
        result = Named(e, Status::Internal("", "the server answered with key " + std::to_string(f.key) + " chunk " + std::to_string(f.chunk) +
                                                   " of " + std::to_string(f.bytes / sizeof(float)) + " floats, not " + std::to_string(e.floats)));
      } else if (e.abandoned) {
        RETURN_IF_ERROR(Discard(fd_, f.bytes));
      } else {
        RETURN_IF_ERROR(ReadFull(fd_, e.dst, f.bytes));
        server_micros_ += f.aux;
      }
    } else if (f.op == Op::kPushReply && e.op == Op::kPush && f.bytes == 0) {
    } else {
      return Status::Internal(
          "dlps-client", "the server answered request " + std::to_string(f.id) + " with frame type " + std::to_string(static_cast<uint32_t>(f.op)));
    }
    if (!e.abandoned) e.pending->Done(result);
    return Status::Ok();
  }

  const std::string address_;
  const int fd_;
  const std::chrono::milliseconds deadline_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;           // protected by mu_
  std::map<uint64_t, Expect> expects_;  // protected by mu_; by request id
  uint64_t next_id_ = 0;                // protected by mu_
  Status broken_;                       // protected by mu_; once set, every request fails with it
  Status send_error_;                   // protected by mu_
  bool stopping_ = false;               // protected by mu_
  std::atomic<uint64_t> server_micros_{0};
  std::thread reader_, writer_;
};

}  // namespace detail

using detail::DataLink;
using detail::Pending;

struct PsClient::Server {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::DlpsControl::Stub> control;
  std::unique_ptr<DataLink> data;
};

struct PsClient::Key {
  uint64_t id = 0;
  uint64_t length = 0;
  std::vector<Chunk> chunks;
  std::vector<uint64_t> rounds;                 // sync round of each chunk pushed by this worker
  std::shared_ptr<std::vector<float>> staging;  // Push's copy of the gradient, reused when free
};

Result<std::unique_ptr<PsClient>> PsClient::Connect(const PsClientOptions& options) {
  if (options.servers.empty()) return Status::InvalidArgument("dlps-client", "no parameter servers given");
  if (options.num_workers == 0 || options.rank >= options.num_workers) {
    return Status::InvalidArgument("dlps-client",
                                   "rank " + std::to_string(options.rank) + " must be below num_workers " + std::to_string(options.num_workers));
  }
  if (options.chunk_floats == 0 || options.chunk_floats > (uint64_t{1} << 28)) {
    return Status::InvalidArgument("dlps-client", "chunk_floats must be between 1 and 2^28 (1 GiB)");
  }
  std::unique_ptr<PsClient> c(new PsClient());
  c->options_ = options;
  Hello hello;
  hello.rank = options.rank;
  hello.num_workers = options.num_workers;
  for (const std::string& address : options.servers) {
    auto s = std::make_unique<Server>();
    s->address = address;
    s->channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    s->control = pb::DlpsControl::NewStub(s->channel);
    ASSIGN_OR_RETURN(s->data, DataLink::Open(address, hello, options.deadline, options.connect_timeout));
    c->servers_.push_back(std::move(s));
  }
  return c;
}

PsClient::~PsClient() {
  std::map<Ticket, std::shared_ptr<Pending>> tickets;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tickets.swap(tickets_);
  }
  for (auto& [t, p] : tickets) {
    std::unique_lock<std::mutex> lock(p->mu);
    p->cv.wait(lock, [&] { return p->outstanding == 0; });  // each message has a deadline
  }
}

PsClient::Key* PsClient::FindKey(uint64_t key, uint64_t length, std::string* error) {
  auto it = keys_.find(key);
  if (it == keys_.end()) {
    *error = "key " + std::to_string(key) + " is not initialised (call Init first)";
    return nullptr;
  }
  if (it->second->length != length) {
    *error = "key " + std::to_string(key) + " holds " + std::to_string(it->second->length) + " floats, not " + std::to_string(length);
    return nullptr;
  }
  return it->second.get();
}

Status PsClient::Init(uint64_t key, uint64_t length, const float* initial, const OptimizerConfig& optimizer) {
  if (length == 0) return Status::InvalidArgument("dlps-client", "key " + std::to_string(key) + ": a tensor needs at least one value");
  auto k = std::make_unique<Key>();
  k->id = key;
  k->length = length;
  k->chunks = PlaceKey(key, length, static_cast<uint32_t>(servers_.size()), options_.split_floats, options_.chunk_floats);
  k->rounds.assign(k->chunks.size(), 0);
  uint64_t version = 0;
  for (const Chunk& c : k->chunks) {
    Server& s = *servers_[c.server];
    pb::InitRequest req;
    req.set_key(key);
    req.set_chunk(c.index);
    req.set_length(c.length);
    OptimizerToProto(optimizer, req.mutable_optimizer());
    pb::InitReply reply;
    RETURN_IF_ERROR(Unary(*s.control, &pb::DlpsControl::Stub::Init, req, &reply, s.address, options_.deadline, What("init", key, c.index)));
    version = std::max(version, reply.version());
  }
  if (version > 0) {
    return Status::FailedPrecondition("dlps-client", "key " + std::to_string(key) + " already has version " + std::to_string(version) +
                                                         " on its servers (a job with these keys ran before; "
                                                         "restart the servers)");
  }
  std::vector<float> zeros;
  if (options_.rank == 0) {
    if (!initial) zeros.assign(length, 0.0f);
    const float* values = initial ? initial : zeros.data();
    auto p = std::make_shared<Pending>();
    p->outstanding = k->chunks.size();
    for (const Chunk& c : k->chunks) servers_[c.server]->data->Push(p, key, c.index, /*round=*/0, values + c.offset, c.length, nullptr);
    std::unique_lock<std::mutex> lock(p->mu);
    p->cv.wait(lock, [&] { return p->outstanding == 0; });
    if (!p->error.ok()) return p->error;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys_[key] = std::move(k);
  }
  return Barrier();
}

Ticket PsClient::Start(uint64_t key, const float* grad, float* out, uint64_t length, bool copy) {
  auto p = std::make_shared<Pending>();
  Key* k;
  std::vector<uint64_t> rounds;
  Ticket ticket;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ticket = next_ticket_++;
    tickets_[ticket] = p;
    std::string error;
    k = FindKey(key, length, &error);
    if (!k) {
      p->error = Status::InvalidArgument("dlps-client", error);
      return ticket;
    }
    p->outstanding = k->chunks.size() * ((grad ? 1 : 0) + (out ? 1 : 0));
    for (size_t i = 0; i < k->chunks.size(); ++i) rounds.push_back(grad ? ++k->rounds[i] : k->rounds[i]);
    if (grad && copy) {
      if (!k->staging || k->staging.use_count() > 1) k->staging = std::make_shared<std::vector<float>>(length);
      p->gradient = k->staging;
    }
  }
  std::shared_ptr<const void> keep;
  if (p->gradient) {
    std::memcpy(p->gradient->data(), grad, length * sizeof(float));
    grad = p->gradient->data();
    keep = p->gradient;
  }
  // A pull right behind its push: the server reads the push first, and answers the pull once the round is done.
  for (size_t i = 0; i < k->chunks.size(); ++i) {
    const Chunk& c = k->chunks[i];
    DataLink& link = *servers_[c.server]->data;
    if (grad) link.Push(p, key, c.index, rounds[i], grad + c.offset, c.length, keep);
    if (out) link.Pull(p, key, c.index, rounds[i], out + c.offset, c.length);
  }
  return ticket;
}

uint64_t PsClient::ServerUpdateMicros() const {
  uint64_t total = 0;
  for (const auto& s : servers_) total += s->data->server_micros();
  return total;
}

Ticket PsClient::Push(uint64_t key, const float* grad, uint64_t length) { return Start(key, grad, nullptr, length, true); }
Ticket PsClient::PushNoCopy(uint64_t key, const float* grad, uint64_t length) { return Start(key, grad, nullptr, length, false); }
Ticket PsClient::Pull(uint64_t key, float* out, uint64_t length) { return Start(key, nullptr, out, length, false); }
Ticket PsClient::PushPull(uint64_t key, const float* grad, float* out, uint64_t length) { return Start(key, grad, out, length, false); }

Status PsClient::Wait(Ticket ticket) {
  std::shared_ptr<Pending> p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tickets_.find(ticket);
    if (it == tickets_.end()) return Status::InvalidArgument("dlps-client", "ticket " + std::to_string(ticket) + " is unknown or already waited for");
    p = it->second;
    tickets_.erase(it);
  }
  std::unique_lock<std::mutex> lock(p->mu);
  p->cv.wait(lock, [&] { return p->outstanding == 0; });  // every message has a deadline
  return p->error;
}

Status PsClient::Barrier() {
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation = ++barriers_;
  }
  Server& s = *servers_[0];
  pb::BarrierRequest req;
  req.set_rank(options_.rank);
  req.set_generation(generation);
  pb::BarrierReply reply;
  return Unary(*s.control, &pb::DlpsControl::Stub::Barrier, req, &reply, s.address, options_.deadline, "barrier " + std::to_string(generation));
}

Status PsClient::Checkpoint(const std::string& name) {
  pb::CommitCheckpointRequest commit;
  commit.set_name(name);
  for (size_t i = 0; i < servers_.size(); ++i) {
    pb::CheckpointRequest req;
    req.set_name(name);
    req.set_server_index(static_cast<uint32_t>(i));
    req.set_server_count(static_cast<uint32_t>(servers_.size()));
    pb::CheckpointReply reply;
    RETURN_IF_ERROR(
        Unary(*servers_[i]->control, &pb::DlpsControl::Stub::Checkpoint, req, &reply, servers_[i]->address, options_.deadline, "checkpoint " + name));
    *commit.add_files() = reply.file();
  }
  pb::CommitCheckpointReply reply;
  return Unary(*servers_[0]->control, &pb::DlpsControl::Stub::CommitCheckpoint, commit, &reply, servers_[0]->address, options_.deadline,
               "commit checkpoint " + name);
}

Status PsClient::Restore(const std::string& name) {
  for (size_t i = 0; i < servers_.size(); ++i) {
    pb::RestoreRequest req;
    req.set_name(name);
    req.set_server_index(static_cast<uint32_t>(i));
    req.set_server_count(static_cast<uint32_t>(servers_.size()));
    pb::RestoreReply reply;
    RETURN_IF_ERROR(
        Unary(*servers_[i]->control, &pb::DlpsControl::Stub::Restore, req, &reply, servers_[i]->address, options_.deadline, "restore " + name));
  }
  return Status::Ok();
}

}  // namespace dlagent::ps
