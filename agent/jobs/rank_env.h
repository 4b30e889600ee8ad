#pragma once
// What a rank is started with: its environment, working directory and program, found as execve will find
// them; and a signal's name. NodeJobs prepares and starts ranks with these, Spawn execs with them.
//
// Thread safety: functions only (HomeOf reads the user database, reentrantly).

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/common/status.h"
#include "proto/jobs.pb.h"

namespace dlagent::jobs {

// The value of NAME in an environment ("" when absent; the last one wins).
std::string EnvValue(const std::vector<std::string>& env, const std::string& name);

// The environment of one rank: the node's, the user's identity (USER, LOGNAME, HOME), a PATH when there is
// none, DLAGENT_RESTART_COUNT (the attempt) and DLAGENT_JOB_CHECKPOINT_DIR (when checkpoints is not ""), the
// launcher's variables, then --env (which wins).
std::vector<std::string> RankEnv(std::vector<std::string> base, const v1::JobSpec& spec, const v1::RankSpec& rank, const std::string& home,
                                 const std::string& checkpoints = "");

// Where the job's ranks keep checkpoints that outlive a restart: EFS_MOUNT/dlagent-jobs/JOB when the node
// environment names shared storage, else "" (a restart may run on other nodes, so local disk is no place for
// them). No I/O.
std::string CheckpointDir(const std::vector<std::string>& base, const v1::JobSpec& spec);
// Makes dir (CheckpointDir's) owned by uid:gid, mode 0700, if absent, through no link: its parent
// (dlagent-jobs) is made root's, mode 0755, and refused when anyone else could write to it. A directory that
// exists must be uid's, or root's in that parent (another node made it a moment ago). The work is a child
// process's, waited for up to `wait` (storage that hangs costs the caller no more: DeadlineExceeded). false
// when the storage directory does not exist (then there is no checkpoint directory); errors name the path.
Result<bool> MakeCheckpointDir(const std::string& dir, uid_t uid, gid_t gid, Duration wait = std::chrono::seconds(5));

// The network interface that holds the IPv4 address ("" when none does).
std::string InterfaceHolding(const std::string& ipv4);
// The variables that point frameworks at the cluster's network, the interface `ifname` (none when ""): gloo,
// NCCL's bootstrap and TensorPipe (*_SOCKET_IFNAME), Open MPI's TCP transport and runtime (*_tcp_if_include).
// Without them gloo takes a rank's address from the host name, which many images map to 127.0.1.1.
std::vector<std::pair<std::string, std::string>> NetworkVariables(const std::string& ifname);

// The user's home directory, "/" when the user database does not know it.
std::string HomeOf(uid_t uid);
// The job's working directory: --workdir, else the user's home when it is a directory, else /.
std::string Workdir(const v1::JobSpec& spec);

// The files execve tries for a program, in order: itself when it has a '/', else each entry of env's PATH.
std::vector<std::string> ProgramCandidates(const std::string& program, const std::vector<std::string>& env);
// Whether one of them exists and is executable (a relative one is taken from workdir).
bool ProgramFound(const std::string& program, const std::vector<std::string>& env, const std::string& workdir);

// "SIGTERM", or "signal 64" for one without a name.
std::string SignalName(int sig);

}  // namespace dlagent::jobs
