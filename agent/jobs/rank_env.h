#pragma once
// What a rank is started with: its environment, working directory and program, found as execve will find
// them; and a signal's name. NodeJobs prepares and starts ranks with these, Spawn execs with them.
//
// Thread safety: functions only (HomeOf reads the user database, reentrantly).

#include <sys/types.h>

#include <string>
#include <vector>

#include "proto/jobs.pb.h"

namespace dlagent::jobs {

// The value of NAME in an environment ("" when absent; the last one wins).
std::string EnvValue(const std::vector<std::string>& env, const std::string& name);

// The environment of one rank: the node's, the user's identity (USER, LOGNAME, HOME), a PATH when there is
// none, the launcher's variables, then --env (which wins).
std::vector<std::string> RankEnv(std::vector<std::string> base, const v1::JobSpec& spec, const v1::RankSpec& rank, const std::string& home);

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
