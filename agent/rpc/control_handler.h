#pragma once
// What the control RPC service asks of the daemon: transport-free types, so that the daemon knows nothing
// of gRPC and the service nothing of the daemon.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bootstrap/common/status.h"
#include "proto/jobs.pb.h"

namespace dlagent {

// Where the agent stands: its own life (starting, serving, stopping) and, when it forms a cluster, the
// formation's phases (docs/cluster.md).
enum class AgentPhase { kStarting, kServing, kIdentify, kDiscover, kRoster, kPrepare, kReady, kStandby, kFailed, kStopping };
std::string_view AgentPhaseName(AgentPhase p);  // one word, as agentctl, the journal and STATUS= show it

// The status page's token (docs/operations.md, "Status page"): a file beside the control socket, 0600, that
// agentd writes at each start and `agentctl page` reads.
std::string PageTokenPath(const std::string& socket);

struct IdentitySnapshot {
  std::string instance_id, instance_type, local_ipv4, region, availability_zone;
  uint32_t gpu_count = 0;
};

struct RosterMemberSnapshot {
  uint32_t rank = 0;
  std::string instance_id, ip;
  uint32_t gpus = 0;
  bool prepared = false;
  std::string role;  // master, worker or server
};

struct ClusterSnapshot {
  std::string leader;
  uint64_t generation = 0;
  std::string sealed_by;  // the leader that sealed the roster
  int32_t rank = -1;
  std::vector<RosterMemberSnapshot> roster;
  std::string failure;
  std::vector<std::string> dead;         // roster members not alive
  std::vector<std::string> maintenance;  // this instance's scheduled maintenance events, one line each
  uint32_t alive = 0, expected = 0;
  int64_t deadline_in_ms = -1;
  int64_t reseal_in_ms = -1;
  uint64_t sqs_requests = 0, hellos_sent = 0, hellos_accepted = 0, hellos_refused = 0;
};

// When the agent entered a phase (the status page's boot timeline).
struct PhaseMark {
  AgentPhase phase = AgentPhase::kStarting;
  int64_t at_ms = 0;  // since the agent's start
};

struct StatusSnapshot {
  AgentPhase phase = AgentPhase::kStarting;
  std::string phase_detail;
  IdentitySnapshot identity;
  uint64_t uptime_ms = 0;
  std::string version;
  std::string config_path;
  std::string cluster_name;
  uint32_t pid = 0;
  int64_t started_unix_ms = 0;
  std::string log_level;
  uint64_t config_generation = 0;
  std::string socket_path;
  uint64_t rss_bytes = 0, heap_in_use_bytes = 0;  // memory now (AgentStatus in control.proto)
  std::string metrics_url;                        // "" while /metrics is not served
  uint64_t phase_changes = 0;                     // since the start (/metrics)
  int64_t ready_after_ms = -1;                    // from the start to the first READY; -1 before it (/metrics)
  std::vector<PhaseMark> phases;                  // each phase entered, the first first (at most kMaxPhaseMarks)
  static constexpr size_t kMaxPhaseMarks = 64;    // then the oldest but the first are dropped
  std::optional<ClusterSnapshot> cluster;         // absent when the agent forms no roster
};

struct MemberSnapshot {
  std::string name, address, status, role, availability_zone, version;
  uint32_t gpus = 0, incarnation = 0, flaps = 0;
  uint64_t last_change_ms_ago = 0;
};

// What this agent's gossip received and sent, and what it dropped unread (pb::GossipCounters).
struct GossipCounters {
  uint64_t packets_in = 0, packets_out = 0;
  uint64_t auth_failures = 0, replays = 0, malformed = 0;
  uint64_t push_pulls = 0, push_pull_failures = 0, push_pulls_refused = 0;
};

struct MemberListSnapshot {
  bool enabled = false;  // gossip runs on this agent
  std::vector<MemberSnapshot> members;
  GossipCounters counters;
};

// Who is on the other end of the control socket (SO_PEERCRED, SO_PEERGROUPS), read when the call is served.
struct PeerCredentials {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;
  int32_t pid = 0;
};

// Thread safety: called from gRPC threads, concurrently; implementations must be thread-safe. GetStatus and
// ListMembers must not block (no I/O): they answer from state in memory. The job calls may block on other
// agents (each call with a deadline): the server runs them on threads of their own.
class ControlHandler {
 public:
  virtual ~ControlHandler() = default;
  virtual StatusSnapshot GetStatus() = 0;
  virtual MemberListSnapshot ListMembers() = 0;

  // Jobs (docs/jobs.md); by default refused, for an agent that runs none.
  virtual Result<jobs::v1::JobSummary> RunJob(const PeerCredentials&, const jobs::v1::RunJobRequest&) { return NoJobs(); }
  // A page of the job list: after JobList.next of the previous page ("" : the first), `limit` jobs at most.
  virtual Result<jobs::v1::JobList> ListJobs(const PeerCredentials&, const std::string& after, uint32_t limit) { return NoJobs(); }
  virtual Result<jobs::v1::JobOutputReply> JobOutput(const PeerCredentials&, const jobs::v1::JobOutputRequest&) { return NoJobs(); }
  virtual Result<jobs::v1::KillJobReply> KillJob(const PeerCredentials&, const jobs::v1::KillJobRequest&) { return NoJobs(); }
  virtual Result<jobs::v1::AttachReply> AttachProcess(const PeerCredentials&, const jobs::v1::AttachRequest&) { return NoJobs(); }
  virtual Result<jobs::v1::HealthReport> CheckHealth(const PeerCredentials&, const jobs::v1::HealthCheckRequest&) { return NoJobs(); }

 protected:
  static Status NoJobs() { return Status::FailedPrecondition("jobs", "this agent runs no jobs"); }
};

}  // namespace dlagent
