#pragma once
// Scopes: each rank in a transient systemd scope of its own, where systemd is PID 1 and agentd is root (DESIGN
// section 7). A scope is a cgroup: its tasks count against its own TasksMax, not agentd's (so a job that
// forks up to its limit leaves the agent able to serve, start and stop), a kill reaches every process in it,
// even one that left the rank's process group (setsid), and systemd accounts its CPU and memory
// (`systemctl status dlagent-job-*`). The scope is bound to agentd's own unit: when the agent stops or
// crashes, systemd stops its ranks, as it did when they shared the agent's cgroup.
//
// Every call opens its own connection to systemd's private bus (root only), makes one call with a deadline
// and closes it: no connection stays open to fill with systemd's signals, and nothing is shared between
// threads. Where scopes cannot be had, ranks stay in their process groups (the fallback NodeJobs keeps).
//
// Thread safety: every method may be called from any thread.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "bootstrap/common/env.h"
#include "bootstrap/common/status.h"

namespace dlagent::jobs {

struct ScopeOptions {
  uint64_t tasks_max = 0;                      // Default: 0, systemd's DefaultTasksMax. The tasks (processes and threads) of one rank
  std::string bound_to;                        // Default: "" (none). The unit whose stop stops the scopes: agentd's own service
  Duration timeout = std::chrono::seconds(5);  // Default: 5 s for each call to systemd
  std::string bus = "unix:path=/run/systemd/private";
};

class Scopes {
 public:
  // nullptr, with the reason in `why`, where scopes cannot be had: PID 1 is not systemd, or agentd is not root.
  static std::unique_ptr<Scopes> Open(ScopeOptions options, std::string* why);
  // The service agentd runs as ("agentd.service"), or "" when it runs in none.
  static std::string OwnService();

  // Puts pid, which must not have started its program yet (SpawnRequest::place holds it), into a new scope
  // named for the job and rank; returns the scope's unit name once systemd has moved it there.
  Result<std::string> Place(pid_t pid, const std::string& job, int32_t rank);
  // Sends sig to every process of the scope. OK when the scope has gone (it ends when its last process does).
  Status Kill(const std::string& unit, int sig);

 private:
  explicit Scopes(ScopeOptions options) : o_(std::move(options)) {}
  ScopeOptions o_;
};

}  // namespace dlagent::jobs
