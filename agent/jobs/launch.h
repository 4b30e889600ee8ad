#pragma once
// Launch profiles: which processes a job starts on each node and the variables each gets, so that a
// framework's own code finds its peers as its own launcher would have told it (docs/jobs.md, with the source
// of every variable's meaning). Pure functions of the job's nodes, the ports they picked and the options.
//
// Thread safety: pure functions.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bootstrap/common/status.h"

namespace dlagent::jobs {

enum class Launcher { kPlain, kDlps, kTorchrun, kMpi, kMxnet, kTf, kTfPs, kDask };
std::string_view LauncherName(Launcher l);
// InvalidArgument names the launchers.
Result<Launcher> ParseLauncher(std::string_view name);

struct PlanNode {
  std::string instance_id;
  std::string ip;
  uint32_t gpus = 0;
  std::vector<uint16_t> ports;  // free ports the node found, PortsNeeded(...) of them
  // A server node (cluster.role = "server", dlps only): no worker runs there; its shard is in DLPS_SERVERS and
  // a helper holds the job on the node so that the shard serves it. After every worker node.
  bool server = false;
};

struct PlanOptions {
  Launcher launcher = Launcher::kPlain;
  std::string job_id;
  // Worker processes a node: 0 means one per GPU (--per-node gpus), which fails for a node without GPUs.
  uint32_t per_node = 1;
  uint16_t dlps_port = 7070;                   // every agent's parameter-server shard (dlps)
  std::string dlps_token;                      // dlps: the job's token for the shards (hex), "" when they ask for none
  std::vector<std::string> argv;               // the job's command (mpi wraps it in mpirun)
  std::string agentctl = "/usr/bin/agentctl";  // mpi: mpirun's remote launcher is `agentctl mpi-rsh`
  bool as_root = false;                        // mpi: Open MPI refuses root unless told it is meant
  uint32_t attempt = 0;                        // torchrun: TORCHELASTIC_RESTART_COUNT
  uint32_t max_restarts = 0;                   // torchrun: TORCHELASTIC_MAX_RESTARTS
};

struct RankPlan {
  uint32_t rank = 0;                                     // 0..N-1 over the whole job
  uint32_t local_rank = 0;                               // 0..K-1 on its node
  std::string role;                                      // "" or scheduler / server / worker (mxnet), chief / ps / worker (tf-ps)
  std::vector<std::pair<std::string, std::string>> env;  // the launcher's variables (plain's on every rank)
  std::vector<std::string> argv;                         // empty: the job's command
  // A process the launcher adds beside the job's own (dask's scheduler and workers): it keeps the job running,
  // is stopped once every rank of the job's own has ended, and ranks after them.
  bool helper = false;
};

// The most worker processes a job may start on one node (--per-node, or a node's GPU count).
inline constexpr uint32_t kMaxPerNode = 1024;

// The worker processes node i runs (per_node, or its GPU count; none on a server node); InvalidArgument above
// kMaxPerNode.
Result<uint32_t> WorkersOn(const PlanOptions& o, const PlanNode& node);
// How many free ports node `index` (0: the first in node-rank order) must find for the plan.
uint32_t PortsNeeded(const PlanOptions& o, size_t index, uint32_t workers);
// Every node's ranks, in node order. nodes: the job's nodes in roster-rank order, each with its ports.
Result<std::vector<std::vector<RankPlan>>> PlanRanks(const PlanOptions& o, const std::vector<PlanNode>& nodes);

}  // namespace dlagent::jobs
