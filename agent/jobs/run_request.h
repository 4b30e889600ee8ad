#pragma once
// A RunJob request (agentctl run) checked before any node is asked anything: the command, the launcher, the
// environment, the working directory, the nodes it names, and who the ranks run as. No I/O but the user
// database; the coordinator (coordinator.h) then prepares and starts what this returns.

#include <string>
#include <vector>

#include "agent/jobs/launch.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/status.h"
#include "proto/jobs.pb.h"

namespace dlagent::jobs {

namespace pb = ::dlagent::jobs::v1;

// A job's name (--name, else the program's base name): printable ASCII, at most this long.
inline constexpr size_t kMaxJobNameBytes = 128;
// The command line and --env together, each string counted with its terminating NUL.
inline constexpr size_t kMaxCommandBytes = 128 * 1024;

// Who asked, from the control socket's peer credentials.
using Caller = ::dlagent::PeerCredentials;

struct JobNode {
  std::string instance_id;
  std::string ip;
  std::string addr;  // its agent's cluster service, ip:port
  uint32_t gpus = 0;
  bool server = false;  // cluster.role = "server": serves its dlps shard, runs no ranks
};

// The nodes named by a selection: roster ranks or instance ids, "a-b" rank ranges, comma-separated inside an
// entry too; none: every node. InvalidArgument names an entry that matches no node.
Result<std::vector<JobNode>> SelectNodes(const std::vector<JobNode>& roster, const std::vector<std::string>& selection);

// Where the job runs among the selected nodes (in roster order): the worker nodes, then, for the dlps
// launcher, the server nodes, whose shards it uses; other launchers leave server nodes out. InvalidArgument
// when `named` (--nodes) picks a server node for another launcher; FailedPrecondition without a worker node.
Result<std::vector<JobNode>> PlaceRoles(Launcher launcher, const std::vector<JobNode>& selected, bool named);

struct CheckedRun {
  Launcher launcher = Launcher::kPlain;
  std::vector<JobNode> nodes;  // PlaceRoles's order: worker nodes in roster order, then any server nodes
  // Everything but the id, the coordinator and the creation time, which the coordinator adds.
  pb::JobSpec spec;
};

// InvalidArgument names what is wrong (no command, a launcher, an --env entry, a relative --workdir, a
// --nodes entry, a name that is too long or not printable ASCII, a command and environment over
// kMaxCommandBytes, --restarts over kMaxRestarts, --min-nodes over the nodes or without --restarts);
// PermissionDenied when a caller other than root asks for --user; FailedPrecondition without
// a roster. default_grace: the grace period when the request gives none.
Result<CheckedRun> CheckRunRequest(const pb::RunJobRequest& req, const Caller& caller, const std::vector<JobNode>& roster, Duration default_grace);

}  // namespace dlagent::jobs
