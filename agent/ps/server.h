#pragma once
// PsServer: a Shard served on one TCP port, over dlps's connections (agent/ps/frame.h: pushes and pulls, values
// read straight into the shard's buffers and sent straight from them, and the control requests). Each
// connection is one worker; it has a thread that reads and a thread that writes, and the reading thread is
// where a push that completes a round runs the sum and the optimizer.
// When a data connection ends while the server runs, the worker is gone: the rounds, pulls and barriers in
// progress fail with "worker rank R disconnected", so that the other workers get an error at once instead of
// waiting for their deadlines.
//
// Jobs: with ShardOptions::num_workers set (dlps-server --workers N) the server serves one job of that size for
// its life. With 0 (agentd, which serves whatever job its node takes part in) each job's shard is made when
// its first worker connects, sized by the workers' Hello, and dropped when its last worker has gone, so that the
// next job starts clean; a worker of another job size while one is running is refused, naming both sizes.
//
// Thread safety: Start and the destructor from one thread; the server runs on its own threads.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/ps/shard.h"
#include "bootstrap/common/heartbeat.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps {

struct ServerOptions {
  std::string listen = "0.0.0.0:7070";  // host:port; port 0 picks a free one
  ShardOptions shard;                   // num_workers 0: each job's size comes from its workers (one job at a time)
  // Where checkpoints are written and read (shared storage, the same path on every node); empty: refused.
  std::string checkpoint_dir;
  std::shared_ptr<Heartbeat> heartbeat;  // Default: none. Beaten by the accept loop at least once a second.
  // Default: none (whoever reaches the port is served, as dlps-server does). Set (agentd): only jobs the agents
  // started, whose workers show the job's id and its token under one of these keys (DlpsJobToken) in their
  // Hello; another job waits for the running one to end.
  std::function<std::vector<std::string>()> job_keys;
  // Default: none (a valid token is valid for ever). Set (agentd): whether a job still lives on this node; a
  // token of a job that does not is refused, and the shard of a served job that stopped living is dropped with
  // its connections (checked about once a second), so that it holds nothing against the next job.
  std::function<bool(const std::string& job)> job_live;
  // Default: none (checkpoints are written in checkpoint_dir itself, as dlps-server does). Set (agentd): the uid
  // a job on this node runs as; its checkpoints are that user's, in checkpoint_dir/users/<uid> (only root
  // enters it), so that one user's job can neither read nor overwrite another's (UserCheckpointDir).
  std::function<std::optional<uint32_t>(const std::string& job)> job_owner;
};

class PsServer {
 public:
  static Result<std::unique_ptr<PsServer>> Start(const ServerOptions& options);
  ~PsServer();  // stops serving; calls in progress end with Unavailable

  int port() const;
  // What its connections and shards did since it started (options.shard.stats when set).
  const PsStats& stats() const;

 private:
  struct Impl;
  explicit PsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dlagent::ps
