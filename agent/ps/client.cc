#include "agent/ps/client.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include "agent/ps/server.h"
#include "agent/ps/wire.h"
#include "bootstrap/common/duration.h"
#include "proto/dlps.grpc.pb.h"

namespace dlagent::ps {
namespace {

namespace pb = ::dlps::v1;

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
    return Status::InvalidArgument("dlps-client", "DLPS_RANK=" + std::to_string(o.rank) + " must be below DLPS_NUM_WORKERS=" +
                                                      std::to_string(o.num_workers));
  }
  if (const char* d = std::getenv("DLPS_DEADLINE"); d && *d) {
    Result<Duration> parsed = ParseDuration(d);
    if (!parsed.ok()) return parsed.status().Annotate("DLPS_DEADLINE");
    o.deadline = std::chrono::duration_cast<std::chrono::milliseconds>(*parsed);
  }
  return o;
}

// The Attach stream that tells a server this worker is alive; cancelled by the destructor.
class Attachment final : public grpc::ClientReadReactor<pb::AttachEvent> {
 public:
  Attachment(pb::DlpsControl::Stub& stub, uint32_t rank) {
    req_.set_rank(rank);
    stub.async()->Attach(&ctx_, &req_, this);
    StartRead(&event_);
    StartCall();
  }
  ~Attachment() {
    ctx_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  void OnReadDone(bool ok) override {
    if (ok) StartRead(&event_);
  }
  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }

 private:
  grpc::ClientContext ctx_;
  pb::AttachRequest req_;
  pb::AttachEvent event_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

struct PsClient::Server {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> data;
  std::unique_ptr<pb::DlpsControl::Stub> control;
  std::unique_ptr<Attachment> attachment;
};

struct PsClient::Key {
  uint64_t id = 0;
  uint64_t length = 0;
  std::vector<Chunk> chunks;
  std::vector<uint64_t> rounds;                 // sync round of each chunk pushed by this worker
  std::shared_ptr<std::vector<float>> staging;  // Push's copy of the gradient, reused when free
};

// One ticket: the messages still outstanding and the first error.
struct PsClient::Pending {
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

namespace {

// A message in flight; deleted by its completion callback.
struct Call {
  grpc::ClientContext ctx;
  grpc::ByteBuffer request, response;
};

}  // namespace

Result<std::unique_ptr<PsClient>> PsClient::Connect(const PsClientOptions& options) {
  if (options.servers.empty()) return Status::InvalidArgument("dlps-client", "no parameter servers given");
  if (options.num_workers == 0 || options.rank >= options.num_workers) {
    return Status::InvalidArgument("dlps-client", "rank " + std::to_string(options.rank) + " must be below num_workers " +
                                                      std::to_string(options.num_workers));
  }
  if (options.chunk_floats == 0 || options.chunk_floats * sizeof(float) > kMaxMessageBytes / 2) {
    return Status::InvalidArgument("dlps-client", "chunk_floats must be between 1 and " + std::to_string(kMaxMessageBytes / 8));
  }
  std::unique_ptr<PsClient> c(new PsClient());
  c->options_ = options;
  for (const std::string& address : options.servers) {
    auto s = std::make_unique<Server>();
    s->address = address;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetMaxSendMessageSize(kMaxMessageBytes);
    s->channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    s->data = std::make_unique<grpc::GenericStub>(s->channel);
    s->control = pb::DlpsControl::NewStub(s->channel);
    s->attachment = std::make_unique<Attachment>(*s->control, options.rank);
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
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options_.deadline);
    grpc::Status st = s.control->Init(&ctx, req, &reply);
    if (!st.ok()) return FromGrpc(s.address, What("init", key, c.index), st);
    version = std::max(version, reply.version());
  }
  if (version > 0) {
    return Status::FailedPrecondition("dlps-client", "key " + std::to_string(key) + " already has version " + std::to_string(version) +
                                                         " on its servers (a job with these keys ran before; restart the servers)");
  }
  std::vector<float> zeros;
  if (options_.rank == 0) {
    if (!initial) zeros.assign(length, 0.0f);
    auto p = std::make_shared<Pending>();
    p->outstanding = k->chunks.size();
    for (size_t i = 0; i < k->chunks.size(); ++i) {
      SendPush(p, *servers_[k->chunks[i].server], *k, i, initial ? initial : zeros.data(), /*round=*/0, nullptr);
    }
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

void PsClient::SendPush(const std::shared_ptr<Pending>& p, Server& server, const Key& k, size_t i, const float* grad, uint64_t round, float* out) {
  const Chunk& c = k.chunks[i];
  auto* call = new Call;
  call->ctx.set_deadline(std::chrono::system_clock::now() + options_.deadline);
  PushHeader h{k.id, c.index, options_.rank, round, /*assign=*/round == 0};
  call->request = EncodePush(h, grad + c.offset, c.length);  // the caller (or Pending) keeps grad alive
  const uint64_t key = k.id;
  server.data->UnaryCall(&call->ctx, kPushMethod, grpc::StubOptions(), &call->request, &call->response,
                         [this, p, &server, call, key, c, round, out](grpc::Status st) {
                           delete call;
                           if (!st.ok()) return p->Done(FromGrpc(server.address, What("push", key, c.index), st));
                           if (!out) return p->Done(Status::Ok());
                           SendPull(p, server, key, c.index, round, out + c.offset, c.length);
                         });
}

void PsClient::SendPull(const std::shared_ptr<Pending>& p, Server& server, uint64_t key, uint32_t chunk, uint64_t min_version, float* dst, uint64_t n) {
  auto* call = new Call;
  call->ctx.set_deadline(std::chrono::system_clock::now() + options_.deadline);
  pb::PullRequest req;
  req.set_key(key);
  req.set_chunk(chunk);
  req.set_rank(options_.rank);
  req.set_min_version(min_version);
  call->request = SerializeSmall(req);
  server.data->UnaryCall(&call->ctx, kPullMethod, grpc::StubOptions(), &call->request, &call->response,
                         [p, &server, call, key, chunk, dst, n](grpc::Status st) {
                           if (!st.ok()) {
                             delete call;
                             return p->Done(FromGrpc(server.address, What("pull", key, chunk), st));
                           }
                           PullReplyHeader h;
                           Payload values;
                           Status decoded = DecodePullReply(call->response, &h, &values);
                           if (decoded.ok() && (h.key != key || h.chunk != chunk || values.floats() != n)) {
                             decoded = Status::Internal("dlps-client", "dlps server " + server.address + " answered " + What("pull", key, chunk) +
                                                                           " with key " + std::to_string(h.key) + " chunk " + std::to_string(h.chunk) +
                                                                           " of " + std::to_string(values.floats()) + " floats");
                           }
                           if (decoded.ok()) values.CopyTo(dst);
                           delete call;
                           p->Done(decoded);
                         });
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
    p->outstanding = k->chunks.size();
    for (size_t i = 0; i < k->chunks.size(); ++i) rounds.push_back(grad ? ++k->rounds[i] : k->rounds[i]);
    if (grad && copy) {
      if (!k->staging || k->staging.use_count() > 1) k->staging = std::make_shared<std::vector<float>>(length);
      p->gradient = k->staging;
    }
  }
  if (p->gradient) {
    std::memcpy(p->gradient->data(), grad, length * sizeof(float));
    grad = p->gradient->data();
  }
  for (size_t i = 0; i < k->chunks.size(); ++i) {
    Server& s = *servers_[k->chunks[i].server];
    if (grad) {
      SendPush(p, s, *k, i, grad, rounds[i], out);
    } else {
      SendPull(p, s, key, k->chunks[i].index, rounds[i], out + k->chunks[i].offset, k->chunks[i].length);
    }
  }
  return ticket;
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
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.deadline);
  grpc::Status st = s.control->Barrier(&ctx, req, &reply);
  return st.ok() ? Status::Ok() : FromGrpc(s.address, "barrier " + std::to_string(generation), st);
}

}  // namespace dlagent::ps
