#pragma once
// Starting one rank: a process of its own group, as a given user, with exactly the environment given, its
// working directory, stdin from /dev/null and stdout / stderr on pipes the agent reads. Only what is
// async-signal-safe runs between fork and exec; a failure there (no such program, a bad directory, a user the
// agent cannot become) comes back as the Status of Spawn, not as a rank that exits 127.
//
// Thread safety: Spawn may be called from any thread.

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "bootstrap/common/env.h"
#include "bootstrap/common/status.h"

namespace dlagent::jobs {

struct SpawnRequest {
  std::vector<std::string> argv;  // argv[0] is looked up as ProgramCandidates (rank_env.h) says
  std::vector<std::string> env;   // the whole environment, "NAME=value"
  std::string workdir;            // REQUIRED: an absolute path
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
  // Called with the child's pid before it runs the program (it waits until this returns): to move it into a
  // cgroup (Scopes::Place) before it can start anything of its own.
  std::function<void(pid_t)> place;
};

struct Spawned {
  pid_t pid = -1;
  int pidfd = -1;   // readable when the process ends (pidfd_open); the caller closes it
  int out_fd = -1;  // the read ends of its stdout and stderr, non-blocking; the caller closes them
  int err_fd = -1;
};

Result<Spawned> Spawn(const SpawnRequest& req);

// What a user finds on this node, looked at by a child process that takes the user's identity (groups, gid,
// uid), so that a path the user cannot reach answers as a missing one does and nothing about it leaks to them.
struct UserLook {
  bool workdir = false;  // the user can enter it (chdir)
  bool program = false;  // the user may run one of the candidates (relative ones from the working directory)
};
// DeadlineExceeded when the look took longer than `wait` (shared storage that hangs: the child is killed);
// Internal when the child could not take the identity or start.
Result<UserLook> LookAsUser(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, const std::string& workdir,
                            const std::vector<std::string>& programs, Duration wait);

// Waits up to `wait` for the forked child pid to exit; its wait status. Past it the child is killed and reaped
// on a thread of its own (one stuck on storage that hangs may not die at once): DeadlineExceeded.
Result<int> WaitChild(pid_t pid, Duration wait);

}  // namespace dlagent::jobs
