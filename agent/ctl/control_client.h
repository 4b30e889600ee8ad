#pragma once
// ControlClient: agentctl's side of the control socket. Every call has a deadline.
//
// Thread safety: one client may be used from many threads.

#include <memory>
#include <string>

#include "agent/rpc/control_handler.h"
#include "bootstrap/common/env.h"

namespace dlagent {

class ControlClient {
 public:
  virtual ~ControlClient() = default;

  // Checks that an agent listens on socket_path. Errors are the sentence a person should read:
  // NotFound ("agentd is not running: no socket at ..."), PermissionDenied, Unavailable (stale socket).
  static Result<std::unique_ptr<ControlClient>> Connect(const std::string& socket_path, Duration timeout);

  virtual Result<StatusSnapshot> GetStatus() = 0;
  virtual Result<std::string> GetVersion() = 0;
  virtual Result<MemberListSnapshot> ListMembers() = 0;
  // Jobs: these reach other agents, so their deadline is at least 30 s.
  virtual Result<jobs::v1::JobSummary> RunJob(const jobs::v1::RunJobRequest& req) = 0;
  virtual Result<jobs::v1::JobList> ListJobs() = 0;
  virtual Result<jobs::v1::JobOutputReply> JobOutput(const jobs::v1::JobOutputRequest& req) = 0;
  virtual Result<jobs::v1::KillJobReply> KillJob(const jobs::v1::KillJobRequest& req) = 0;
  virtual Result<jobs::v1::AttachReply> AttachProcess(const jobs::v1::AttachRequest& req) = 0;
  virtual Result<jobs::v1::HealthReport> CheckHealth(const jobs::v1::HealthCheckRequest& req) = 0;
};

}  // namespace dlagent
