#include "agent/daemon/cluster_runtime.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>

#include <spdlog/spdlog.h>

#include "agent/ps/frame.h"
#include "bootstrap/aws/aws_json.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/log.h"
#include "bootstrap/node/gpu_count.h"

namespace dlagent {

ClusterRuntime::ClusterRuntime(Env& env, Config config, Heartbeats& heartbeats, PhaseFn on_phase,
                               std::function<void(const std::string& why)> on_leave,
                               std::function<void(const std::vector<std::string>& keys)> on_keys)
    : env_(env),
      config_(std::move(config)),
      heartbeats_(heartbeats),
      on_phase_(std::move(on_phase)),
      on_leave_(std::move(on_leave)),
      on_keys_(std::move(on_keys)),
      keys_(std::make_unique<ClusterKeyLoader>(env_, config_, &stopping_)) {}

ClusterRuntime::~ClusterRuntime() { Stop(); }

void ClusterRuntime::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ClusterRuntime::Stop() {
  {
    MutexLock lock(mu_);  // so that the identify loop cannot miss the wake-up
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (events_) events_->Stop();
  std::shared_ptr<jobs::Jobs> jobs;
  {
    MutexLock lock(mu_);
    jobs = std::move(jobs_);
  }
  if (jobs) {
    // Ranks are the agent's children: they stop with it (docs/jobs.md), each after its job's grace period.
    if (membership_) membership_->ServeJobs(nullptr);
    jobs->StopAll(std::chrono::seconds(20));
    // Calls in flight (the control socket's, other agents') hold it and use the parts below: they end first,
    // each within the deadlines of its own calls.
    while (jobs.use_count() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    jobs.reset();
  }
  if (formation_) formation_->Stop();
  if (membership_) membership_->Leave();
  formation_.reset();
  membership_.reset();
  running_ = false;
}

IdentitySnapshot ClusterRuntime::Identity() {
  MutexLock lock(mu_);
  return identity_;
}

std::optional<ClusterSnapshot> ClusterRuntime::Cluster() {
  if (!running_) return std::nullopt;
  ClusterSnapshot c = formation_->Snapshot().cluster;
  MutexLock lock(mu_);
  c.maintenance = maintenance_;
  return c;
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

// "system-reboot not before 21 Jan 2019 09:00:43 GMT: scheduled reboot (instance-event-1)"
std::string DescribeEvent(const ScheduledEvent& e) {
  return e.code + " not before " + e.not_before + (e.description.empty() ? "" : ": " + e.description) +
         (e.event_id.empty() ? "" : " (" + e.event_id + ")");
}

}  // namespace

void ClusterRuntime::OnMaintenance(const std::vector<ScheduledEvent>& active) {
  const Duration before = config_.cluster.leave_before_maintenance;
  std::vector<std::string> lines;
  std::string leave_for;
  for (const ScheduledEvent& e : active) {
    lines.push_back(DescribeEvent(e));
    if (before <= Duration(0) || !leave_for.empty()) continue;
    Result<WallTime> start = ParseEventTime(e.not_before);
    if (!start.ok()) {
      // Polled every 5 s: said once per event time.
      if (unparsed_event_times_.insert(e.not_before).second) {
        spdlog::warn("maintenance: {}; cannot tell when to leave before it", start.status().ToString());
      }
    } else if (env_.NowWall() >= *start - before) {
      leave_for = e.code + " at " + e.not_before + " (cluster.leave_before_maintenance = " + FormatDuration(before) + ")";
    }
  }
  {
    MutexLock lock(mu_);
    maintenance_ = std::move(lines);
  }
  if (!leave_for.empty() && !leaving_.exchange(true) && on_leave_) on_leave_("scheduled maintenance " + leave_for);
}

Status ClusterRuntime::ReloadKeys() {
  if (!running_ || !membership_) return Status::Ok();
  ASSIGN_OR_RETURN(std::vector<std::string> keys, keys_->Load());
  RETURN_IF_ERROR(membership_->ReloadKeys(keys, keys_->source().Describe()));
  if (on_keys_) on_keys_(keys);
  return Status::Ok();
}

std::shared_ptr<jobs::Jobs> ClusterRuntime::Jobs() {
  MutexLock lock(mu_);
  return jobs_;
}

MemberListSnapshot ClusterRuntime::Members() {
  if (!running_) return MemberListSnapshot{true, {}};
  return membership_->Members();
}

Result<IdentitySnapshot> ClusterRuntime::Identify() {
  IdentitySnapshot id;
  if (imds_) {
    ASSIGN_OR_RETURN(InstanceIdentity doc, imds_->Identify());
    id.instance_id = doc.instance_id;
    id.instance_type = doc.instance_type;
    id.local_ipv4 = doc.local_ipv4;
    id.region = doc.region;
    id.availability_zone = doc.availability_zone;
  } else {
    // No instance metadata (aws.imds_disabled): the configuration names the node.
    id.instance_id = config_.gossip.name;
    id.local_ipv4 = config_.gossip.advertise;
    id.region = config_.aws.region;
    if (id.instance_id.empty() || id.local_ipv4.empty()) {
      return Status::InvalidArgument("identify", "instance metadata is disabled: set gossip.name and gossip.advertise to name this node");
    }
  }
  if (!config_.gossip.name.empty()) id.instance_id = config_.gossip.name;
  if (!config_.gossip.advertise.empty()) id.local_ipv4 = config_.gossip.advertise;
  if (config_.node.gpus >= 0) {
    id.gpu_count = static_cast<uint32_t>(config_.node.gpus);
    spdlog::info("identify: {} GPUs (node.gpus)", id.gpu_count);
  } else {
    GpuCount gpus = CountGpus();
    id.gpu_count = gpus.count;
    spdlog::info("identify: {} GPUs (from {})", gpus.count, gpus.source);
  }
  return id;
}

bool ClusterRuntime::WaitToRetry(Backoff& backoff, const std::string& waiting_for, const Status& why) {
  if (stopping_) return false;
  on_phase_(AgentPhase::kIdentify, "identify: waiting for " + waiting_for + ": " + why.ToString(), false);  // logged just below
  spdlog::warn("identify: waiting for {}: {}; retrying", waiting_for, why.ToString());
  MutexLock lock(mu_);
  cv_.wait_for(lock.native(), std::max<Duration>(std::chrono::milliseconds(100), *backoff.NextDelay()), [&] { return stopping_.load(); });
  return !stopping_;
}

Status ClusterRuntime::Setup() {
  const Config& c = config_;
  http_ = NewCurlHttpClient();
  if (!c.aws.imds_disabled) {
    ImdsOptions o;
    o.endpoint = c.aws.imds_endpoint;
    o.deadline = std::chrono::seconds(5);  // per call; Run() retries, so that a stop is never held up long
    imds_ = std::make_unique<ImdsClient>(*http_, env_, o);
  }
  // IDENTIFY: retried with backoff until it works (IMDS may fail for a while at boot) or the agent stops.
  const BackoffPolicy policy{std::chrono::milliseconds(200), std::chrono::seconds(10), 2.0, 0, Duration(0)};
  Backoff backoff(policy, std::random_device{}());
  Result<IdentitySnapshot> id = Status::Unavailable("identify", "not tried");
  for (;;) {
    id = Identify();
    if (id.ok()) break;
    if (id.status().code() == StatusCode::kInvalidArgument) return id.status();
    if (!WaitToRetry(backoff, "instance metadata", id.status())) return Status(StatusCode::kCancelled, "identify", "stopping");
  }
  {
    MutexLock lock(mu_);
    identity_ = *id;
  }
  spdlog::info("identify: instance {} ({}), {} in {}, {} GPUs", id->instance_id, id->instance_type.empty() ? "no type" : id->instance_type,
               id->local_ipv4, id->availability_zone.empty() ? "no AZ" : id->availability_zone, id->gpu_count);
  SetLogField("INSTANCE_ID", id->instance_id);

  // Gossip, named by the instance id and reachable at the node's address.
  GossipIdentity gi;
  gi.name = id->instance_id;
  gi.advertise = id->local_ipv4;
  gi.meta.role = c.cluster.role;
  gi.meta.gpus = id->gpu_count;
  gi.meta.az = id->availability_zone;
  // The cluster key: read, or fetched from AWS with the instance role, retried like IDENTIFY (an instance role
  // and its permissions may take a while to be in force at boot).
  std::vector<std::string> keys;
  for (Backoff key_backoff(policy, std::random_device{}());;) {
    Result<std::vector<std::string>> loaded = keys_->Load();
    if (loaded.ok()) {
      keys = std::move(*loaded);
      break;
    }
    if (loaded.status().code() == StatusCode::kInvalidArgument || keys_->source().kind == KeySource::Kind::kFile) return loaded.status();
    if (!WaitToRetry(key_backoff, "the cluster key", loaded.status())) return Status(StatusCode::kCancelled, "gossip", "stopping");
  }
  spdlog::info("gossip: {} cluster key{} from the {}", keys.size(), keys.size() == 1 ? "" : "s", keys_->source().Describe());
  if (on_keys_) on_keys_(keys);
  gi.heartbeat = heartbeats_.Register("gossip");
  ASSIGN_OR_RETURN(std::unique_ptr<Membership> membership, Membership::Start(c, keys, gi));

  Formation::Deps deps;
  deps.env = &env_;
  deps.peers = membership.get();
  Membership* m = membership.get();
  deps.keys = [m] { return m->cluster_keys(); };
  deps.http = http_.get();
  deps.on_phase = on_phase_;
  deps.heartbeat = heartbeats_.Register("formation");
  if (!c.discovery.queue.empty()) {
    const std::string region_hint = !c.aws.region.empty() ? c.aws.region : id->region;
    ASSIGN_OR_RETURN(std::string region, ResolveAwsRegion(region_hint, imds_.get()));
    ASSIGN_OR_RETURN(std::string endpoint, ResolveSqsEndpoint(c.aws.sqs_endpoint, region));
    credentials_ = std::make_unique<CredentialChain>(*http_, env_, imds_.get(), ProcessGetEnv);
    SqsOptions so;
    so.endpoint = endpoint;
    so.region = region;
    so.retry = {std::chrono::milliseconds(200), std::chrono::seconds(5), 2.0, 4, std::chrono::seconds(30)};
    so.cancel = &stopping_;
    sqs_sender_ = std::make_unique<SqsClient>(*http_, *credentials_, env_, so);
    // The poller's client is cancelled by stopping_ too; the formation ends a long poll early with a flag of
    // its own (ReceiveOptions::cancel).
    sqs_poller_ = std::make_unique<SqsClient>(*http_, *credentials_, env_, so);
    deps.sqs_sender = sqs_sender_.get();
    deps.sqs_poller = sqs_poller_.get();
    deps.queue = c.discovery.queue;
  }
  if (c.storage.kind != StorageKind::kNone) {
    StorageOptions so;
    so.kind = c.storage.kind;
    so.source = c.storage.source;
    so.mount_point = c.storage.mount_point;
    so.region = !c.aws.region.empty() ? c.aws.region : id->region;
    so.mount_target_ips = c.storage.mount_target_ips;
    so.dns_wait = c.storage.dns_wait;
    so.mount_budget = c.storage.mount_budget;
    so.cancel = &stopping_;
    mounts_ = std::make_unique<MountManager>(env_, SystemResolver(), so);
    deps.mounts = mounts_.get();
  }

  FormationOptions fo;
  fo.cluster = c.cluster.name;
  fo.seal.expected_nodes = static_cast<size_t>(c.cluster.expected_nodes);
  fo.seal.min_nodes = static_cast<size_t>(c.cluster.min_nodes > 0 ? c.cluster.min_nodes : c.cluster.expected_nodes);
  fo.seal.join_deadline = c.cluster.join_deadline;
  fo.reseal = c.cluster.reseal;
  fo.reseal_settle = c.cluster.reseal_settle;
  fo.reseal_quorum = c.cluster.reseal_quorum;
  fo.vote_path = DirName(c.files.roster) + "/formation-vote";
  fo.hello_interval = c.discovery.hello_interval;
  fo.poll_wait = c.discovery.poll_wait;
  fo.files.root = c.files.root;
  fo.files.workers_path = c.files.workers;
  fo.files.hosts_path = c.files.hosts;
  fo.files.profile_path = c.files.profile;
  fo.files.env_path = c.files.env;
  fo.files.hostfile_path = c.files.hostfile;
  fo.files.roster_path = c.files.roster;
  fo.files.efs_mount = c.storage.kind == StorageKind::kNone ? "" : c.storage.mount_point;
  fo.files.dlps_port = c.ps.enabled ? c.ps.port : 0;  // a port picked at random is nobody else's to know
  fo.files.self_instance_id = id->instance_id;
  fo.wait_handle_url = c.aws.cfn_wait_handle;

  SelfInfo self;
  self.instance_id = id->instance_id;
  self.ip = id->local_ipv4;
  self.gpus = id->gpu_count;
  self.master = c.cluster.role == "master";
  self.meta = membership->base_meta();
  auto formation = std::make_unique<dlagent::Formation>(deps, fo, self, &stopping_);
  dlagent::Formation* f = formation.get();
  membership->ServeRosters([f] { return f->HeldRoster(); });

  // A node restarting after READY finds its old roster on disk: its members are the fastest way back in.
  if (Result<std::string> old = env_.ReadFile(c.files.root + c.files.roster, 16 << 20); old.ok()) {
    if (Result<Roster> r = ParseRosterJson(*old); r.ok() && r->cluster == c.cluster.name) {
      for (const RosterNode& n : r->nodes) {
        if (n.instance_id != id->instance_id) membership->Join(n.ip + ":" + std::to_string(c.gossip.port));
      }
      spdlog::info("cluster: rejoining the {} members of roster generation {} found in {}", r->nodes.size(), r->generation,
                   c.files.root + c.files.roster);
    }
  }
  membership_ = std::move(membership);
  formation_ = std::move(formation);
  running_ = true;
  formation_->Start();
  StartJobs(*id, fo.files);

  if (imds_) {
    ImdsEventCallbacks cb;
    cb.on_spot_notice = [this](const SpotNotice& n) {
      spdlog::warn("spot interruption notice: {} at {}; leaving the cluster", n.action, FormatUtc(n.time, "%Y-%m-%dT%H:%M:%SZ"));
      if (!leaving_.exchange(true) && on_leave_) on_leave_("a spot interruption notice");
    };
    cb.on_scheduled_event = [](const ScheduledEvent& e) { spdlog::warn("maintenance: scheduled for this instance: {}", DescribeEvent(e)); };
    cb.on_active_events = [this](const std::vector<ScheduledEvent>& active) { OnMaintenance(active); };
    events_ = std::make_unique<ImdsEventPoller>(*imds_, cb);
    events_->Start();
  }
  return Status::Ok();
}

void ClusterRuntime::StartJobs(const IdentitySnapshot& id, const NodeFilesOptions& files) {
  if (!membership_ || !config_.jobs.enabled) return;
  const Config& c = config_;
  Membership* m = membership_.get();
  dlagent::Formation* f = formation_.get();
  const std::string port = std::to_string(c.gossip.port);
  jobs::JobsDeps d;
  d.client = m->client();
  d.keyring = [m] { return m->keyring(); };
  d.gone = [m](const std::string& name) { return m->Gone(name); };
  d.roster = [f, port] {
    std::vector<jobs::JobNode> nodes;
    for (const RosterNode& n : f->HeldRoster().nodes) nodes.push_back({n.instance_id, n.ip, n.ip + ":" + port, n.gpus});
    return nodes;
  };
  d.ready = [f](std::string* why) {
    FormationStatus s = f->Snapshot();
    if (s.phase == AgentPhase::kReady) return true;
    *why = s.detail;
    return false;
  };
  const uint32_t gpus = id.gpu_count;
  const std::string socket = c.agent.socket;  // agentctl in a rank talks to this node's agent
  d.base_env = [f, files, gpus, socket] {
    // What a login shell of the node has from /etc/profile.d/deeplearning.sh, on systemd's default PATH.
    std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                                    "DLAGENT_SOCKET=" + socket};
    const Roster r = f->HeldRoster();
    if (r.generation > 0) {
      for (const auto& [k, v] : NodeVariables(r, files, gpus)) env.push_back(k + "=" + v);
    }
    return env;
  };
  d.alive = [m] {
    std::vector<std::string> alive;
    for (const swim::MemberInfo& mi : m->RawMembers()) {
      if (mi.state == swim::MemberState::kAlive) alive.push_back(mi.name);
    }
    return alive;
  };
  d.health = [this, f](const jobs::pb::HealthRequest& req) { return Health(req, *f); };
  jobs::JobsOptions o;
  o.self = id.instance_id;
  o.self_addr = id.local_ipv4 + ":" + port;
  o.dlps_port = static_cast<uint16_t>(c.ps.port);
  o.agentctl = c.jobs.agentctl;
  if (c.ps.enabled && c.ps.authenticate) {
    o.dlps_token = [m](const std::string& job) {
      const std::vector<std::string> keys = m->cluster_keys();
      return keys.empty() ? std::string() : HexEncode(ps::DlpsJobToken(keys.front(), job));
    };
  }
  o.node_heartbeat = heartbeats_.Register("jobs");
  o.coordinator_heartbeat = heartbeats_.Register("job coordinator");
  auto jobs = std::make_shared<jobs::Jobs>(std::move(d), std::move(o));
  std::weak_ptr<jobs::Jobs> weak = jobs;
  m->ServeJobs([weak](std::string_view sealed) -> Result<std::string> {
    std::shared_ptr<jobs::Jobs> j = weak.lock();
    if (!j) return Status::Unavailable("jobs", "this agent is stopping");
    return j->HandleRpc(sealed);
  });
  MutexLock lock(mu_);
  jobs_ = std::move(jobs);
}

jobs::pb::HealthReply ClusterRuntime::Health(const jobs::pb::HealthRequest& req, dlagent::Formation& formation) {
  jobs::pb::HealthReply h;
  h.set_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const FormationStatus st = formation.Snapshot();
  h.set_phase(std::string(AgentPhaseName(st.phase)));
  h.set_roster_generation(formation.HeldRoster().generation);
  for (const swim::MemberInfo& m : membership_->RawMembers()) {
    if (m.state == swim::MemberState::kAlive) h.add_alive(m.name);
  }
  h.set_gpus(config_.node.gpus >= 0 ? static_cast<uint32_t>(config_.node.gpus) : CountGpus().count);
  // The working directory is often on shared storage, which may hang: every look at it is bounded.
  constexpr Duration kStorageWait = std::chrono::seconds(2);
  h.set_workdir(req.workdir().empty() ? "/" : req.workdir());
  Result<uint64_t> workdir_free = FreeBytesWithin(h.workdir(), kStorageWait);
  if (workdir_free.ok()) {
    h.set_workdir_free_bytes(*workdir_free);
  } else {
    h.set_workdir_error(std::string(workdir_free.status().message()));
  }
  if (mounts_) {
    h.set_storage_configured(true);
    Result<std::string> mountinfo = env_.ReadFile("/proc/self/mountinfo", 16 << 20);
    h.set_storage_mounted(mountinfo.ok() && FindMount(*mountinfo, config_.storage.mount_point).has_value());
    if (h.storage_mounted()) {
      const auto t0 = std::chrono::steady_clock::now();
      Status probe = mounts_->Probe(kStorageWait);
      h.set_storage_probe_ms(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
      if (!probe.ok()) {
        h.set_storage_error(std::string(probe.message()));  // a mount that did not answer is not asked again
      } else if (Result<uint64_t> free = FreeBytesWithin(config_.storage.mount_point, kStorageWait); free.ok()) {
        h.set_storage_free_bytes(*free);
      } else {
        h.set_storage_error(std::string(free.status().message()));
      }
    }
  }
  h.set_dlps_enabled(config_.ps.enabled);
  if (config_.ps.enabled) {
    const std::string host = config_.ps.bind == "0.0.0.0" ? Identity().local_ipv4 : config_.ps.bind;
    Status st = ProbeTcp(host, static_cast<int>(config_.ps.port), std::chrono::seconds(1));
    if (!st.ok()) h.set_dlps_error(std::string(st.message()));
  }
  return h;
}

void ClusterRuntime::Run() {
  Status st = Setup();
  if (!st.ok() && st.code() != StatusCode::kCancelled) {
    spdlog::critical("cluster: cannot start: {}", st.ToString());
    on_phase_(AgentPhase::kFailed, "failed: " + st.ToString(), false);  // logged just above
  }
}

}  // namespace dlagent
