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

#include "agent/ps/data_link.h"
#include "agent/ps/frame.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/host_port.h"

namespace dlagent::ps {
namespace {

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
    if (Result<HostPort> hp = ParseHostPort(s); !hp.ok()) {
      return Status::InvalidArgument("dlps-client", "DLPS_SERVERS: " + std::string(hp.status().message()));
    }
    o.servers.push_back(s);
  }
  ASSIGN_OR_RETURN(o.rank, EnvNumber("DLPS_RANK", true, 0));
  ASSIGN_OR_RETURN(o.num_workers, EnvNumber("DLPS_NUM_WORKERS", true, 1));
  if (o.num_workers == 0 || o.rank >= o.num_workers) {
    return Status::InvalidArgument("dlps-client",
                                   "DLPS_RANK=" + std::to_string(o.rank) + " must be below DLPS_NUM_WORKERS=" + std::to_string(o.num_workers));
  }
  RETURN_IF_ERROR(o.ReadJobEnv());
  for (auto [name, field] : {std::pair{"DLPS_DEADLINE", &o.deadline}, std::pair{"DLPS_CONNECT_TIMEOUT", &o.connect_timeout}}) {
    if (const char* d = std::getenv(name); d && *d) {
      Result<Duration> parsed = ParseDuration(d);
      if (!parsed.ok()) return parsed.status().Annotate(name);
      *field = std::chrono::duration_cast<std::chrono::milliseconds>(*parsed);
    }
  }
  return o;
}

Status PsClientOptions::ReadJobEnv() {
  const char* j = std::getenv("DLPS_JOB");
  const char* t = std::getenv("DLPS_TOKEN");
  job = j ? j : "";
  token = t ? t : "";
  if (job.empty() != token.empty()) {
    return Status::InvalidArgument("dlps-client", std::string(job.empty() ? "DLPS_TOKEN" : "DLPS_JOB") + " is set without " +
                                                      (job.empty() ? "DLPS_JOB" : "DLPS_TOKEN") + " (agentctl run --launcher dlps sets both)");
  }
  return Status::Ok();
}

using detail::DataLink;
using detail::Pending;

struct PsClient::Server {
  std::string address;
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
  const std::optional<std::string> token = HexDecode(options.token);
  if (options.job.size() > sizeof(Hello::job) || !token || (!token->empty() && token->size() != sizeof(Hello::token))) {
    return Status::InvalidArgument("dlps-client",
                                   "the job id must be at most 16 characters and its token 64 hex characters (DLPS_JOB, DLPS_TOKEN: "
                                   "agentctl run --launcher dlps sets both)");
  }
  Hello hello;
  hello.rank = options.rank;
  hello.num_workers = options.num_workers;
  std::memcpy(hello.job, options.job.data(), options.job.size());
  std::memcpy(hello.token, token->data(), token->size());
  for (const std::string& address : options.servers) {
    auto s = std::make_unique<Server>();
    s->address = address;
    ASSIGN_OR_RETURN(s->data, DataLink::Open(address, hello, options.deadline, options.connect_timeout));
    c->servers_.push_back(std::move(s));
  }
  return c;
}

PsClient::~PsClient() {
  std::map<Ticket, std::shared_ptr<Pending>> tickets;
  {
    MutexLock lock(mu_);
    tickets.swap(tickets_);
  }
  for (auto& entry : tickets) {
    detail::Pending& p = *entry.second;
    MutexLock lock(p.mu);
    while (p.outstanding != 0) p.cv.wait(lock.native());  // each message has a deadline
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
  const OptimizerSpec spec = SpecOf(optimizer);
  for (const Chunk& c : k->chunks) {
    const InitBody body = MakeInitBody(c.length, spec);
    detail::ControlReply reply;
    RETURN_IF_ERROR(Call(*servers_[c.server], {.op = Op::kInit, .chunk = c.index, .key = key},
                         std::string(reinterpret_cast<const char*>(&body), sizeof body), &reply));
    version = std::max(version, reply.version);
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
    {
      MutexLock lock(p->mu);
      p->outstanding = k->chunks.size();
    }
    for (const Chunk& c : k->chunks) servers_[c.server]->data->Push(p, key, c.index, /*round=*/0, values + c.offset, c.length, nullptr);
    MutexLock lock(p->mu);
    while (p->outstanding != 0) p->cv.wait(lock.native());
    if (!p->error.ok()) return p->error;
  }
  {
    MutexLock lock(mu_);
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
    MutexLock lock(mu_);
    ticket = next_ticket_++;
    tickets_[ticket] = p;
    std::string error;
    k = FindKey(key, length, &error);
    MutexLock pending(p->mu);  // no link has it yet: never contended
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
    MutexLock lock(mu_);
    auto it = tickets_.find(ticket);
    if (it == tickets_.end()) return Status::InvalidArgument("dlps-client", "ticket " + std::to_string(ticket) + " is unknown or already waited for");
    p = it->second;
    tickets_.erase(it);
  }
  MutexLock lock(p->mu);
  while (p->outstanding != 0) p->cv.wait(lock.native());  // every message has a deadline
  return p->error;
}

Status PsClient::Call(Server& s, const Frame& request, std::string payload, detail::ControlReply* reply) {
  auto p = std::make_shared<Pending>();
  {
    MutexLock lock(p->mu);
    p->outstanding = 1;
  }
  detail::ControlReply ignored;
  s.data->Control(p, request, std::move(payload), reply ? reply : &ignored);
  MutexLock lock(p->mu);
  while (p->outstanding != 0) p->cv.wait(lock.native());  // it has a deadline
  return p->error;
}

Status PsClient::Barrier() {
  uint64_t generation;
  {
    MutexLock lock(mu_);
    generation = ++barriers_;
  }
  return Call(*servers_[0], {.op = Op::kBarrier, .version = generation}, "", nullptr);
}

Status PsClient::Checkpoint(const std::string& name) {
  std::vector<CheckpointFile> files;
  const auto count = static_cast<uint32_t>(servers_.size());
  for (uint32_t i = 0; i < count; ++i) {
    detail::ControlReply reply;
    RETURN_IF_ERROR(Call(*servers_[i], {.op = Op::kCheckpoint, .chunk = i, .aux = count}, name, &reply));
    Result<std::vector<CheckpointFile>> file = DecodeCheckpointFiles(reply.payload);
    if (!file.ok() || file->size() != 1) {
      return Status::Internal("dlps-client", "dlps server " + servers_[i]->address + ": checkpoint " + name + ": its answer does not name one file");
    }
    files.push_back(std::move(file->front()));
  }
  return Call(*servers_[0], {.op = Op::kCommitCheckpoint}, name + "\n" + EncodeCheckpointFiles(files), nullptr);
}

Status PsClient::Restore(const std::string& name) {
  const auto count = static_cast<uint32_t>(servers_.size());
  for (uint32_t i = 0; i < count; ++i) RETURN_IF_ERROR(Call(*servers_[i], {.op = Op::kRestore, .chunk = i, .aux = count}, name, nullptr));
  return Status::Ok();
}

}  // namespace dlagent::ps
