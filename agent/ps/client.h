#pragma once
// PsClient: a training process's connection to the job's parameter servers.
//
//   auto client = PsClient::Connect(PsClientOptions::FromEnv().value()).value();
//   client->Init(7, weights.size(), weights.data(), sgd);            // collective: every worker calls it
//   for (...) {
//     Ticket t = client->PushPull(7, grad.data(), weights.data(), weights.size());
//     ... other work ...
//     if (Status st = client->Wait(t); !st.ok()) ...                 // weights now hold the new values
//   }
//
// Push, Pull and PushPull return at once with a ticket; Wait(ticket) blocks until every message of it is
// answered, and returns the first error, which names the server's address. Every call has a deadline
// (options.deadline): a server that is gone or a round that never completes ends in an error, not a hang.
//
// Buffers: Push copies the gradient into a buffer the client keeps per key (reused, so steady-state steps
// allocate nothing), so the caller may reuse it at once. PushNoCopy and PushPull send straight from the
// caller's memory: the gradient must stay alive and unchanged until Wait(ticket) has returned. Pull and
// PushPull write into `out`, which must stay alive until Wait(ticket) has returned and must not be read before.
//
// Connections: one to every server (agent/ps/frame.h: pushes, pulls and the control requests), opened by
// Connect. A server that goes away fails every message in flight to it at once, naming
// its address. When a worker's process ends or loses its connection, the servers fail the rounds and barriers
// in progress with "worker rank R disconnected", and the other workers' Wait returns that error. So destroy a
// client only after the job's last Barrier.
//
// Sync mode: a worker pushes each key once per round and pulls the round's result before its next push
// (PushPull does both); pulls wait for the round to complete on the server.
//
// Thread safety: Push/Pull/PushPull/Wait may be called from several threads, for different keys.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/ps/optimizer.h"
#include "agent/ps/partition.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps {

struct PsClientOptions {
  std::vector<std::string> servers;  // host:port, the same list in the same order on every worker
  uint32_t rank = 0;
  uint32_t num_workers = 1;
  std::chrono::milliseconds deadline{std::chrono::seconds(120)};        // per message
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(30)};  // Connect retries a refused server until then
  uint64_t split_floats = kDefaultSplitFloats;
  uint64_t chunk_floats = kDefaultChunkFloats;
  // The job's credentials, which agentd's shards ask for (agentctl run --launcher dlps gives them): its id and
  // its token (64 hex characters). Empty for a dlps-server, which asks for none.
  std::string job;
  std::string token;

  // DLPS_SERVERS (comma-separated host:port), DLPS_RANK, DLPS_NUM_WORKERS, and optionally DLPS_DEADLINE,
  // DLPS_CONNECT_TIMEOUT (durations: "90s", "2m"), DLPS_JOB and DLPS_TOKEN; an error names the variable that is
  // missing or wrong.
  static Result<PsClientOptions> FromEnv();
  // Only DLPS_JOB and DLPS_TOKEN (both or neither), for options made otherwise.
  Status ReadJobEnv();
};

using Ticket = uint64_t;

struct Frame;
namespace detail {
struct Pending;
struct ControlReply;
class DataLink;
}  // namespace detail

class PsClient {
 public:
  static Result<std::unique_ptr<PsClient>> Connect(const PsClientOptions& options);
  ~PsClient();  // waits for the messages in flight (each has a deadline)

  // Declares key on its servers (all workers call it with the same length and optimizer); rank 0's initial
  // values (nullptr: zeros) become the weights; returns after a barrier of all workers.
  Status Init(uint64_t key, uint64_t length, const float* initial, const OptimizerConfig& optimizer);

  Ticket Push(uint64_t key, const float* grad, uint64_t length);
  Ticket PushNoCopy(uint64_t key, const float* grad, uint64_t length);
  Ticket Pull(uint64_t key, float* out, uint64_t length);
  Ticket PushPull(uint64_t key, const float* grad, float* out, uint64_t length);
  Status Wait(Ticket ticket);

  // Returns once every worker has called Barrier the same number of times.
  Status Barrier();

  // Checkpoints (docs/ps.md): called by one worker between steps, after a Barrier of all workers (sync mode: so
  // that every slice is at the same version). Every server writes its slices as checkpoint `name` under its
  // checkpoint directory; then server 0 writes the manifest that makes the checkpoint complete.
  Status Checkpoint(const std::string& name);
  // Called by one worker right after every key's Init, before any push: every server checks checkpoint `name`
  // (manifest, sizes, SHA-256s) and loads its slices; a partial or corrupt checkpoint is refused, naming the
  // file. Then Barrier, and every worker Pulls the restored weights.
  Status Restore(const std::string& name);

  const PsClientOptions& options() const { return options_; }

  // The time servers spent summing gradients and running the optimizer for the versions this client has pulled,
  // added over chunks and servers (which work in parallel): where a step's time goes.
  uint64_t ServerUpdateMicros() const;

 private:
  struct Server;
  struct Key;
  PsClient() = default;
  Ticket Start(uint64_t key, const float* grad, float* out, uint64_t length, bool copy);
  Key* FindKey(uint64_t key, uint64_t length, std::string* error) REQUIRES(mu_);
  // One control request to server s (Op::kInit ... kRestore), waited for; *reply (when not null) gets the answer.
  Status Call(Server& s, const Frame& request, std::string payload, detail::ControlReply* reply);

  PsClientOptions options_;
  std::vector<std::unique_ptr<Server>> servers_;
  Mutex mu_;
  std::map<uint64_t, std::unique_ptr<Key>> keys_ GUARDED_BY(mu_);  // a Key's chunks never change once it is here
  std::map<Ticket, std::shared_ptr<detail::Pending>> tickets_ GUARDED_BY(mu_);
  Ticket next_ticket_ GUARDED_BY(mu_) = 1;
  uint64_t barriers_ GUARDED_BY(mu_) = 0;
};

}  // namespace dlagent::ps
