#include "agent/daemon/node_report.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "agent/jobs/spawn.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/node/gpu_count.h"

namespace dlagent {

Result<IdentitySnapshot> IdentifyNode(const Config& config, ImdsClient* imds) {
  IdentitySnapshot id;
  if (imds) {
    ASSIGN_OR_RETURN(InstanceIdentity doc, imds->Identify());
    id.instance_id = doc.instance_id;
    id.instance_type = doc.instance_type;
    id.local_ipv4 = doc.local_ipv4;
    id.region = doc.region;
    id.availability_zone = doc.availability_zone;
  } else {
    id.instance_id = config.gossip.name;
    id.local_ipv4 = config.gossip.advertise;
    id.region = config.aws.region;
    if (id.instance_id.empty() || id.local_ipv4.empty()) {
      return Status::InvalidArgument("identify", "instance metadata is disabled: set gossip.name and gossip.advertise to name this node");
    }
  }
  if (!config.gossip.name.empty()) id.instance_id = config.gossip.name;
  if (!config.gossip.advertise.empty()) id.local_ipv4 = config.gossip.advertise;
  if (config.node.gpus >= 0) {
    id.gpu_count = static_cast<uint32_t>(config.node.gpus);
    spdlog::info("identify: {} GPUs (node.gpus)", id.gpu_count);
  } else {
    GpuCount gpus = CountGpus();
    id.gpu_count = gpus.count;
    spdlog::info("identify: {} GPUs (from {})", gpus.count, gpus.source);
  }
  return id;
}

std::string DescribeEvent(const ScheduledEvent& e) {
  return e.code + " not before " + e.not_before + (e.description.empty() ? "" : ": " + e.description) +
         (e.event_id.empty() ? "" : " (" + e.event_id + ")");
}

std::string MaintenanceWatch::Update(const std::vector<ScheduledEvent>& active, WallTime now) {
  std::vector<std::string> lines;
  std::string leave_for;
  for (const ScheduledEvent& e : active) {
    lines.push_back(DescribeEvent(e));
    if (leave_before_ <= Duration(0) || !leave_for.empty()) continue;
    Result<WallTime> start = ParseEventTime(e.not_before);
    if (!start.ok()) {
      // Polled every 5 s: said once per event time.
      if (unparsed_.insert(e.not_before).second) spdlog::warn("maintenance: {}; cannot tell when to leave before it", start.status().ToString());
    } else if (now >= *start - leave_before_) {
      leave_for = e.code + " at " + e.not_before + " (cluster.leave_before_maintenance = " + FormatDuration(leave_before_) + ")";
    }
  }
  MutexLock lock(mu_);
  lines_ = std::move(lines);
  return leave_for;
}

std::vector<std::string> MaintenanceWatch::Lines() {
  MutexLock lock(mu_);
  return lines_;
}

namespace {

// Connects to host:port within the timeout and closes at once.
Status ProbeTcp(const std::string& host, int port, Duration timeout) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) return Status::InvalidArgument("health", host + " is not an IPv4 address");
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno("health", "socket", errno);
  const std::string where = host + ":" + std::to_string(port);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  if (rc != 0 && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    rc = ::poll(&p, 1, static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
    if (rc == 0) {
      ::close(fd);
      return Status::DeadlineExceeded("health", where + " did not accept within " + FormatDuration(timeout));
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    errno = err;
    rc = err == 0 ? 0 : -1;
  }
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno("health", "connect to " + where, err);
  return Status::Ok();
}

}  // namespace

jobs::v1::HealthReply CheckNodeHealth(const jobs::v1::HealthRequest& req, Env& env, const Config& config, Formation& formation,
                                      Membership& membership, MountManager* mounts, const std::string& ipv4) {
  jobs::v1::HealthReply h;
  h.set_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const FormationStatus st = formation.Snapshot();
  h.set_phase(std::string(AgentPhaseName(st.phase)));
  h.set_roster_generation(formation.HeldRoster().generation);
  for (const swim::MemberInfo& m : membership.RawMembers()) {
    if (m.state == swim::MemberState::kAlive) h.add_alive(m.name);
  }
  h.set_gpus(config.node.gpus >= 0 ? static_cast<uint32_t>(config.node.gpus) : CountGpus().count);
  // The working directory is often on shared storage, which may hang: every look at it is bounded.
  constexpr Duration kStorageWait = std::chrono::seconds(2);
  h.set_workdir(req.workdir().empty() ? "/" : req.workdir());
  // Looked at as the caller: a directory they cannot enter answers as a missing one, and its free space is not
  // told.
  const std::vector<gid_t> groups(req.groups().begin(), req.groups().end());
  Result<jobs::UserLook> look = jobs::LookAsUser(req.uid(), req.gid(), groups, h.workdir(), {}, kStorageWait);
  Result<uint64_t> workdir_free = Status::Unavailable("health", "");
  if (!look.ok()) {
    workdir_free = look.status();
  } else if (!look->workdir) {
    workdir_free = Status::NotFound("health", h.workdir() + " does not exist (or uid " + std::to_string(req.uid()) + " may not enter it)");
  } else {
    workdir_free = FreeBytesWithin(h.workdir(), kStorageWait);
  }
  if (workdir_free.ok()) {
    h.set_workdir_free_bytes(*workdir_free);
  } else {
    h.set_workdir_error(std::string(workdir_free.status().message()));
  }
  if (mounts) {
    h.set_storage_configured(true);
    Result<std::string> mountinfo = env.ReadFile("/proc/self/mountinfo", 16 << 20);
    h.set_storage_mounted(mountinfo.ok() && FindMount(*mountinfo, config.storage.mount_point).has_value());
    if (h.storage_mounted()) {
      const auto t0 = std::chrono::steady_clock::now();
      Status probe = mounts->Probe(kStorageWait);
      h.set_storage_probe_ms(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
      if (!probe.ok()) {
        h.set_storage_error(std::string(probe.message()));  // a mount that did not answer is not asked again
      } else if (Result<uint64_t> free = FreeBytesWithin(config.storage.mount_point, kStorageWait); free.ok()) {
        h.set_storage_free_bytes(*free);
      } else {
        h.set_storage_error(std::string(free.status().message()));
      }
    }
  }
  h.set_dlps_enabled(config.ps.enabled);
  if (config.ps.enabled) {
    const std::string host = config.ps.bind == "0.0.0.0" ? ipv4 : config.ps.bind;
    Status probe = ProbeTcp(host, static_cast<int>(config.ps.port), std::chrono::seconds(1));
    if (!probe.ok()) h.set_dlps_error(std::string(probe.message()));
  }
  return h;
}

}  // namespace dlagent
