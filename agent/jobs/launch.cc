#include "agent/jobs/launch.h"

#include <algorithm>
#include <map>

#include <nlohmann/json.hpp>

namespace dlagent::jobs {
namespace {

constexpr std::pair<Launcher, std::string_view> kNames[] = {
    {Launcher::kPlain, "plain"}, {Launcher::kDlps, "dlps"}, {Launcher::kTorchrun, "torchrun"}, {Launcher::kMpi, "mpi"},
    {Launcher::kMxnet, "mxnet"}, {Launcher::kTf, "tf"},     {Launcher::kTfPs, "tf-ps"},        {Launcher::kDask, "dask"},
};

std::string Addr(const PlanNode& n, uint16_t port) { return n.ip + ":" + std::to_string(port); }

// One process to start: where, in which role, and which of its node's ports it owns (0: none).
struct Slot {
  size_t node;
  std::string role;
  uint32_t local_rank;  // among the node's workers; 0 for the other roles
  uint16_t port;
};

}  // namespace

std::string_view LauncherName(Launcher l) {
  for (const auto& [k, name] : kNames) {
    if (k == l) return name;
  }
  return "plain";
}

Result<Launcher> ParseLauncher(std::string_view name) {
  for (const auto& [k, n] : kNames) {
    if (n == name) return k;
  }
  return Status::InvalidArgument("jobs", "unknown launcher \"" + std::string(name) + "\"; use plain, dlps, torchrun, mpi, mxnet, tf, tf-ps or dask");
}

Result<uint32_t> WorkersOn(const PlanOptions& o, const PlanNode& node) {
  // Bounded here, where every plan starts: a request that skipped agentctl's check (found by fuzzing,
  // tests/fuzz/jobs_fuzz.cc: --per-node 400000000 made the plan allocate until the agent died), or a node
  // whose metadata claims billions of GPUs.
  if (o.per_node > kMaxPerNode) {
    return Status::InvalidArgument("jobs",
                                   "--per-node " + std::to_string(o.per_node) + ": at most " + std::to_string(kMaxPerNode) + " processes a node");
  }
  if (node.server) return 0;
  if (o.per_node > 0) return o.per_node;
  if (node.gpus > kMaxPerNode) {
    return Status::InvalidArgument("jobs", "--per-node gpus: node " + node.instance_id + " says it has " + std::to_string(node.gpus) +
                                               " GPUs, above the limit of " + std::to_string(kMaxPerNode) + " processes a node");
  }
  if (node.gpus == 0) {
    return Status::FailedPrecondition("jobs", "--per-node gpus: node " + node.instance_id + " has no GPUs; give a number instead");
  }
  return node.gpus;
}

uint32_t PortsNeeded(const PlanOptions& o, size_t index, uint32_t workers) {
  switch (o.launcher) {
    case Launcher::kTorchrun:
    case Launcher::kDlps:                                             // dlps: torch's store too, for DDP through dlps.ddp
    case Launcher::kMxnet: return index == 0 ? 1 : 0;                 // the rendezvous (torch's TCPStore) or the scheduler, on the first node
    case Launcher::kTf: return workers;                               // every worker serves its own gRPC port
    case Launcher::kTfPs: return workers + 1 + (index == 0 ? 1 : 0);  // workers, a ps, and the chief on the first node
    case Launcher::kDask: return index == 0 ? 2 : 0;                  // the scheduler and its dashboard, on the first node
    case Launcher::kPlain:
    case Launcher::kMpi: return 0;
  }
  return 0;
}

namespace {

// mpi: one process, mpirun on the first node, told every node and its slots; it starts its daemons on the
// other nodes through `agentctl mpi-rsh` (plm_rsh_agent), never ssh.
Result<std::vector<std::vector<RankPlan>>> PlanMpi(const PlanOptions& o, const std::vector<PlanNode>& nodes) {
  std::string hosts;
  uint32_t slots = 0;
  for (const PlanNode& n : nodes) {
    ASSIGN_OR_RETURN(uint32_t k, WorkersOn(o, n));
    hosts += (hosts.empty() ? "" : ",") + n.ip + ":" + std::to_string(k);
    slots += k;
  }
  RankPlan p;
  p.role = "mpirun";
  p.argv = {"mpirun", "--host", hosts, "-np", std::to_string(slots), "--bind-to", "none", "--tag-output"};
  p.argv.insert(p.argv.end(), o.argv.begin(), o.argv.end());
  p.env = {{"DLAGENT_JOB", o.job_id},
           {"DLAGENT_RANK", "0"},
           {"DLAGENT_NUM_RANKS", "1"},
           {"DLAGENT_LOCAL_RANK", "0"},
           {"DLAGENT_NODE_RANK", "0"},
           {"DLAGENT_NUM_NODES", std::to_string(nodes.size())},
           {"DLAGENT_ROLE", "mpirun"},
           {"OMPI_MCA_plm_rsh_agent", o.agentctl + " mpi-rsh"},
           {"OMPI_MCA_plm_rsh_no_tree_spawn", "1"},
           // Open MPI 4.1's daemons share hwloc's topology through a mapping at an address found in a hole of
           // their address space; an orted was seen to crash writing it (hwloc_shmem_topology_write). Each process
           // reads its own topology instead (tens of ms once); --env can turn it back on.
           {"OMPI_MCA_rtc_hwloc_vmhole", "none"}};
  if (o.as_root) p.env.insert(p.env.end(), {{"OMPI_ALLOW_RUN_AS_ROOT", "1"}, {"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"}});
  std::vector<std::vector<RankPlan>> plan(nodes.size());
  plan[0].push_back(std::move(p));
  return plan;
}

// dask: the job's command on the first node (rank 0, told DASK_SCHEDULER_ADDRESS), the scheduler beside it,
// and on every node a `dask worker` with one worker process a slot (--per-node), all of them helpers: the job
// ends with the command, and they are stopped then.
Result<std::vector<std::vector<RankPlan>>> PlanDask(const PlanOptions& o, const std::vector<PlanNode>& nodes) {
  if (nodes[0].ports.size() < 2) return Status::Internal("jobs", "node " + nodes[0].instance_id + " found too few ports for dask");
  const std::string scheduler = "tcp://" + Addr(nodes[0], nodes[0].ports[0]);
  std::vector<std::vector<RankPlan>> plan(nodes.size());
  auto common = [&](RankPlan& p, size_t node, const std::string& role) {
    p.role = role;
    p.env = {{"DLAGENT_JOB", o.job_id},   {"DLAGENT_RANK", std::to_string(p.rank)},    {"DLAGENT_NUM_RANKS", "1"},
             {"DLAGENT_LOCAL_RANK", "0"}, {"DLAGENT_NODE_RANK", std::to_string(node)}, {"DLAGENT_NUM_NODES", std::to_string(nodes.size())},
             {"DLAGENT_ROLE", role},      {"DASK_SCHEDULER_ADDRESS", scheduler}};
  };
  uint32_t workers = 0;
  for (const PlanNode& n : nodes) {
    ASSIGN_OR_RETURN(uint32_t k, WorkersOn(o, n));
    workers += k;
  }
  RankPlan client;
  client.rank = 0;
  common(client, 0, "client");
  client.env.emplace_back("DLAGENT_DASK_WORKERS", std::to_string(workers));  // to wait for: Client.wait_for_workers
  plan[0].push_back(std::move(client));
  RankPlan sched;
  sched.rank = 1;
  sched.helper = true;
  common(sched, 0, "scheduler");
  sched.argv = {"dask",
                "scheduler",
                "--host",
                nodes[0].ip,
                "--port",
                std::to_string(nodes[0].ports[0]),
                "--dashboard-address",
                Addr(nodes[0], nodes[0].ports[1])};
  plan[0].push_back(std::move(sched));
  for (size_t i = 0; i < nodes.size(); ++i) {
    ASSIGN_OR_RETURN(uint32_t k, WorkersOn(o, nodes[i]));
    RankPlan w;
    w.rank = static_cast<uint32_t>(2 + i);
    w.helper = true;
    common(w, i, "worker");
    // --death-timeout: a worker whose scheduler is gone exits on its own (if its node's agent is gone too).
    w.argv = {"dask",           "worker",          scheduler, "--host", nodes[i].ip, "--nworkers", std::to_string(k), "--name", nodes[i].instance_id,
              "--no-dashboard", "--death-timeout", "60"};
    plan[i].push_back(std::move(w));
  }
  return plan;
}

}  // namespace

Result<std::vector<std::vector<RankPlan>>> PlanRanks(const PlanOptions& o, const std::vector<PlanNode>& nodes) {
  if (nodes.empty()) return Status::InvalidArgument("jobs", "a job needs at least one node");
  if (o.launcher == Launcher::kMpi) return PlanMpi(o, nodes);
  if (o.launcher == Launcher::kDask) return PlanDask(o, nodes);
  // The processes, in rank order: per node, the launcher's helpers first, then its workers.
  std::vector<Slot> slots;
  std::vector<uint32_t> workers(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    ASSIGN_OR_RETURN(workers[i], WorkersOn(o, nodes[i]));
    const PlanNode& n = nodes[i];
    if (n.ports.size() < PortsNeeded(o, i, workers[i])) {
      return Status::Internal("jobs", "node " + n.instance_id + " found " + std::to_string(n.ports.size()) + " ports, " +
                                          std::to_string(PortsNeeded(o, i, workers[i])) + " needed");
    }
    size_t next_port = 0;
    auto port = [&] { return n.ports[next_port++]; };
    switch (o.launcher) {
      case Launcher::kMxnet:
        if (i == 0) slots.push_back({i, "scheduler", 0, port()});
        slots.push_back({i, "server", 0, 0});
        break;
      case Launcher::kTfPs:
        if (i == 0) slots.push_back({i, "chief", 0, port()});
        slots.push_back({i, "ps", 0, port()});
        break;
      default: break;
    }
    const bool worker_ports = o.launcher == Launcher::kTf || o.launcher == Launcher::kTfPs;
    const bool named = o.launcher == Launcher::kMxnet || o.launcher == Launcher::kTfPs;
    for (uint32_t k = 0; k < workers[i]; ++k) {
      slots.push_back({i, named ? "worker" : "", k, worker_ports ? port() : uint16_t{0}});
    }
  }

  // Job-wide facts each launcher names.
  uint32_t total_workers = 0;
  for (uint32_t w : workers) total_workers += w;
  const uint32_t total = static_cast<uint32_t>(slots.size());
  nlohmann::json tf_cluster = nlohmann::json::object();
  // The server nodes' shards when the job has any (cluster.role = "server"), else every node's.
  const bool server_nodes = std::any_of(nodes.begin(), nodes.end(), [](const PlanNode& n) { return n.server; });
  std::string dlps_servers;
  for (const PlanNode& n : nodes) {
    if (!server_nodes || n.server) dlps_servers += (dlps_servers.empty() ? "" : ",") + Addr(n, o.dlps_port);
  }
  for (const Slot& s : slots) {
    if (o.launcher == Launcher::kTf || o.launcher == Launcher::kTfPs) {
      tf_cluster[s.role.empty() ? "worker" : s.role].push_back(Addr(nodes[s.node], s.port));
    }
  }
  const bool root = o.launcher == Launcher::kTorchrun || o.launcher == Launcher::kDlps || o.launcher == Launcher::kMxnet;
  const uint16_t root_port = root ? nodes[0].ports[0] : 0;

  std::vector<std::vector<RankPlan>> plan(nodes.size());
  std::map<std::string, uint32_t> role_index;  // tf: each task's index within its type
  uint32_t worker_rank = 0;                    // the rank among workers (dlps, torchrun)
  for (uint32_t r = 0; r < total; ++r) {
    const Slot& s = slots[r];
    const PlanNode& n = nodes[s.node];
    RankPlan p;
    p.rank = r;
    p.local_rank = s.local_rank;
    p.role = s.role;
    auto set = [&](std::string k, std::string v) { p.env.emplace_back(std::move(k), std::move(v)); };
    const std::string k = std::to_string(workers[s.node]);
    set("DLAGENT_JOB", o.job_id);
    set("DLAGENT_RANK", std::to_string(r));
    set("DLAGENT_NUM_RANKS", std::to_string(total));
    set("DLAGENT_LOCAL_RANK", std::to_string(s.local_rank));
    set("DLAGENT_NODE_RANK", std::to_string(s.node));
    set("DLAGENT_NUM_NODES", std::to_string(nodes.size()));
    if (!s.role.empty()) set("DLAGENT_ROLE", s.role);
    const bool worker = s.role.empty() || s.role == "worker";
    auto torch_env = [&] {  // what init_process_group("gloo") reads with its default env://
      set("MASTER_ADDR", nodes[0].ip);
      set("MASTER_PORT", std::to_string(root_port));
      set("WORLD_SIZE", std::to_string(total_workers));
      set("RANK", std::to_string(worker_rank));
      set("LOCAL_RANK", std::to_string(s.local_rank));
      set("LOCAL_WORLD_SIZE", k);
    };
    switch (o.launcher) {
      case Launcher::kPlain:
      case Launcher::kMpi:
      case Launcher::kDask: break;
      case Launcher::kDlps:
        set("DLPS_SERVERS", dlps_servers);
        set("DLPS_NUM_WORKERS", std::to_string(total_workers));
        set("DLPS_RANK", std::to_string(worker_rank));
        if (!o.dlps_token.empty()) {
          set("DLPS_JOB", o.job_id);
          set("DLPS_TOKEN", o.dlps_token);
        }
        torch_env();  // a PyTorch script trains DDP through dlps.ddp as it is
        break;
      case Launcher::kTorchrun:
        torch_env();
        set("GROUP_RANK", std::to_string(s.node));
        set("GROUP_WORLD_SIZE", std::to_string(nodes.size()));
        set("ROLE_NAME", "default");
        set("ROLE_RANK", std::to_string(worker_rank));
        set("ROLE_WORLD_SIZE", std::to_string(total_workers));
        set("TORCHELASTIC_RUN_ID", o.job_id);
        set("TORCHELASTIC_RESTART_COUNT", std::to_string(o.attempt));
        set("TORCHELASTIC_MAX_RESTARTS", std::to_string(o.max_restarts));
        if (workers[s.node] > 1) set("OMP_NUM_THREADS", "1");  // as torchrun does with more than one process a node
        break;
      case Launcher::kMxnet:
        set("DMLC_ROLE", s.role);
        set("DMLC_PS_ROOT_URI", nodes[0].ip);
        set("DMLC_PS_ROOT_PORT", std::to_string(root_port));
        set("DMLC_NUM_SERVER", std::to_string(nodes.size()));
        set("DMLC_NUM_WORKER", std::to_string(total_workers));
        set("DMLC_NODE_HOST", n.ip);
        break;
      case Launcher::kTf:
      case Launcher::kTfPs: {
        const std::string type = s.role.empty() ? "worker" : s.role;
        nlohmann::json config = {{"cluster", tf_cluster}, {"task", {{"type", type}, {"index", role_index[type]++}}}};
        set("TF_CONFIG", config.dump());
        break;
      }
    }
    if (worker) ++worker_rank;
    plan[s.node].push_back(std::move(p));
  }
  // On each server node, a helper that only holds the job there, so that the node's shard serves it (its token
  // lives as long as the job runs on the node): stopped once every rank has ended, like dask's helpers.
  uint32_t helper_rank = total;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!nodes[i].server) continue;
    RankPlan h;
    h.rank = helper_rank++;
    h.helper = true;
    h.role = "server";
    h.argv = {"sleep", "infinity"};
    h.env = {{"DLAGENT_JOB", o.job_id},   {"DLAGENT_RANK", std::to_string(h.rank)}, {"DLAGENT_NUM_RANKS", std::to_string(total)},
             {"DLAGENT_LOCAL_RANK", "0"}, {"DLAGENT_NODE_RANK", std::to_string(i)}, {"DLAGENT_NUM_NODES", std::to_string(nodes.size())},
             {"DLAGENT_ROLE", "server"}};
    plan[i].push_back(std::move(h));
  }
  return plan;
}

}  // namespace dlagent::jobs
