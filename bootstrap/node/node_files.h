#pragma once
// The files a node gets once the roster is sealed (DESIGN.md section 6), compatible with what training
// scripts written for the old deeplearning-cfn template read:
//   /opt/deeplearning/workers        deeplearning-worker1..N, master first, the same on every node
//   /etc/hosts                       a managed block (replaced, never appended twice)
//   /etc/profile.d/deeplearning.sh   DEEPLEARNING_WORKERS_PATH, _COUNT, _WORKER_GPU_COUNT, EFS_MOUNT, and the
//                                    DLPS_* variables of one dlps worker per node (see dlps_port)
//   /etc/dlagent/cluster.env         the same variables for systemd's EnvironmentFile=
//   /etc/dlagent/hostfile            deeplearning-workerK slots=G (mpirun, horovodrun)
//   /etc/dlagent/roster.json         the roster itself
// Every file is written atomically (WriteFileAtomically); all paths sit under a configurable root.
//
// Thread safety: pure functions, and WriteNodeFiles touches only the files above.

#include <string>
#include <utility>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/node/roster.h"

namespace dlagent {

struct NodeFilesOptions {
  std::string root = "";  // Default: "" (the real root); tests use a temporary directory
  std::string workers_path = "/opt/deeplearning/workers";
  std::string hosts_path = "/etc/hosts";
  std::string profile_path = "/etc/profile.d/deeplearning.sh";
  std::string env_path = "/etc/dlagent/cluster.env";
  std::string hostfile_path = "/etc/dlagent/hostfile";
  std::string roster_path = "/etc/dlagent/roster.json";
  std::string efs_mount = "/mnt/efs";  // "" when the cluster has no shared storage
  // The port every node's parameter-server shard serves on (docs/ps.md); 0: no DLPS_* variables. With it, the
  // environment also holds DLPS_SERVERS (every node's ip:port in rank order), DLPS_NUM_WORKERS (the node
  // count) and DLPS_RANK (this node's rank, found by self_instance_id): one dlps worker per node.
  int64_t dlps_port = 0;
  std::string self_instance_id;
};

// The node environment's variables, as the profile and cluster.env hold them (and every job's ranks start from).
std::vector<std::pair<std::string, std::string>> NodeVariables(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus);
std::string RenderWorkers(const Roster& r);
std::string RenderHostsBlock(const Roster& r);
// existing with our block replaced (or appended once when absent); everything else kept byte for byte.
std::string MergeHostsFile(std::string_view existing, std::string_view block);
std::string RenderProfile(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus);
std::string RenderEnvFile(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus);
std::string RenderHostfile(const Roster& r);

// Writes all six files for this node. self_gpus: this node's GPU count.
Status WriteNodeFiles(Env& env, const NodeFilesOptions& options, const Roster& roster, uint32_t self_gpus);

}  // namespace dlagent
