// The Daemon as the composition root: every part of agentd is built here, in the order of the boot, and taken
// down here in the reverse order (daemon.h says which thread builds what).
#include <algorithm>
#include <random>
#include <thread>

#include <spdlog/spdlog.h>

#include "agent/daemon/daemon.h"
#include "agent/jobs/rank_env.h"
#include "agent/ps/frame.h"
#include "agent/ps/optimizer.h"
#include "bootstrap/aws/aws_json.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/log.h"

namespace dlagent {
namespace {

// How long in-flight control calls may finish at shutdown; well inside systemd's stop timeout.
constexpr auto kShutdownGrace = std::chrono::seconds(2);
// IDENTIFY and the cluster key are retried with this until they work or the agent stops (RetryUntilStopped).
constexpr BackoffPolicy kBootRetry{std::chrono::milliseconds(200), std::chrono::seconds(10), 2.0, 0, Duration(0)};

// The node files as [files] names them, for the node IDENTIFY found.
NodeFilesOptions FilesOptions(const Config& c, const std::string& self_instance_id) {
  NodeFilesOptions f;
  f.root = c.files.root;
  f.workers_path = c.files.workers;
  f.hosts_path = c.files.hosts;
  f.profile_path = c.files.profile;
  f.env_path = c.files.env;
  f.hostfile_path = c.files.hostfile;
  f.roster_path = c.files.roster;
  f.efs_mount = c.storage.kind == StorageKind::kNone ? "" : c.storage.mount_point;
  f.dlps_port = c.ps.enabled ? c.ps.port : 0;  // a port picked at random is nobody else's to know
  f.self_instance_id = self_instance_id;
  return f;
}

}  // namespace

Status Daemon::StartShard(const Config& c) {
  if (!c.ps.enabled) return Status::Ok();
  if (c.ps.authenticate && KeySourceOf(c.gossip).kind == KeySource::Kind::kNone) {
    // An unconfigured node (a fresh package install) opens no port that serves anyone.
    spdlog::warn(
        "parameter-server shard off: no cluster key to check job tokens with (set gossip.key_file or gossip.key_source, "
        "or ps.authenticate = false to serve whoever reaches the port)");
    return Status::Ok();
  }
  ps::ServerOptions o;
  o.listen = c.ps.bind + ":" + std::to_string(c.ps.port);
  o.shard.mode = c.ps.mode;
  o.shard.num_workers = 0;  // each job's size from its workers
  if (c.cluster.role == "server") o.shard.apply_threads = std::clamp(std::thread::hardware_concurrency(), 1u, ps::kMaxApplyThreads);  // no ranks here
  o.checkpoint_dir = c.ps.checkpoint_dir;
  o.heartbeat = heartbeats_.Register("ps");
  if (c.ps.authenticate) {
    // The keys come from the key source (now, or once the boot has fetched them): until then no token is valid.
    o.job_keys = [this] {
      MutexLock lock(mu_);
      return ps_keys_;
    };
    // A token dies with its job: once the job's ranks here have ended (and a minute for other nodes' ranks to
    // finish their last rounds), its shard is dropped and its token refused.
    o.job_live = [this](const std::string& job) {
      std::shared_ptr<jobs::Jobs> j = ServedJobs();
      return j && j->Live(job, std::chrono::seconds(60));
    };
    // Each user's checkpoints apart (checkpoint_dir/users/<uid>): one user's job cannot read or overwrite another's.
    o.job_owner = [this](const std::string& job) -> std::optional<uint32_t> {
      std::shared_ptr<jobs::Jobs> j = ServedJobs();
      return j ? j->Owner(job) : std::nullopt;
    };
  } else {
    spdlog::warn(
        "parameter-server shard: whoever reaches {} is served (ps.authenticate = false); keep the port inside the cluster's "
        "security group",
        o.listen);
  }
  Result<std::unique_ptr<ps::PsServer>> shard = ps::PsServer::Start(o);
  if (!shard.ok()) {
    return Status(
        shard.status().code(), "",
        "cannot serve the parameter-server shard on " + o.listen + ": " + shard.status().ToString() + " (set ps.port, or ps.enabled = false)");
  }
  ps_ = std::move(*shard);
  spdlog::info("parameter-server shard serving on {}:{} ({} mode{})", c.ps.bind, ps_->port(), c.ps.mode == ps::Mode::kAsync ? "async" : "sync",
               c.ps.checkpoint_dir.empty() ? "" : ", checkpoints in " + c.ps.checkpoint_dir);
  return Status::Ok();
}

Status Daemon::StartGossip(const Config& c, const GossipIdentity& who, std::vector<std::string> keys) {
  ASSIGN_OR_RETURN(swim::Keyring ring, MakeKeyring(keys, c.cluster.name, keys_->source().Describe()));
  GossipPlan plan = PlanGossip(c, who);
  plan.options.heartbeat = heartbeats_.Register("gossip");
  cluster_client_ = NewGrpcClusterClient();
  cluster_client_->SetKeyring(std::make_shared<const swim::Keyring>(ring));
  ASSIGN_OR_RETURN(gossip_, swim::GossipNode::Start(plan.options, std::move(ring), cluster_client_.get()));
  membership_ = std::make_unique<Membership>(*gossip_, *cluster_client_, c.cluster.name, plan.meta, std::move(keys));
  spdlog::info("gossip: member {} on {} (profile {}, {} seeds)", plan.options.name, gossip_->advertise_addr(),
               c.gossip.profile == GossipProfile::kFast ? "fast" : "lan", c.gossip.seeds.size());
  return Status::Ok();
}

Status Daemon::StartClusterService(const Config& c) {
  ClusterHandlers h;
  h.push_pull = [node = gossip_.get()](std::string_view sealed) { return node->HandlePushPull(sealed); };
  h.fetch_roster = [m = membership_.get(), f = formation_.get()](std::string_view sealed) { return m->AnswerRosterFetch(sealed, f); };
  h.job = [this](std::string_view sealed) -> Result<std::string> {
    std::shared_ptr<jobs::Jobs> j = ServedJobs();
    if (!j) return Status::Unavailable("jobs", "this agent runs no jobs (it forms no roster, or is stopping)");
    return j->HandleRpc(sealed);
  };
  ConnectionKeyring keys = [m = membership_.get()] { return m->keyring(); };
  ASSIGN_OR_RETURN(cluster_service_, StartClusterServer(c.gossip.bind, static_cast<int>(c.gossip.port), std::move(h), std::move(keys)));
  return Status::Ok();
}

Status Daemon::RetryUntilStopped(const std::string& waiting_for, const std::function<Status()>& attempt,
                                 const std::function<bool(const Status&)>& final) {
  Backoff backoff(kBootRetry, RandomSeed());
  for (;;) {
    if (stopping_) return Status(StatusCode::kCancelled, "boot", "stopping");
    Status st = attempt();
    if (st.ok() || final(st)) return st;
    SetPhase(AgentPhase::kIdentify, "identify: waiting for " + waiting_for + ": " + st.ToString(), false);  // logged just below
    spdlog::warn("identify: waiting for {}: {}; retrying", waiting_for, st.ToString());
    MutexLock lock(mu_);
    cv_.wait_for(lock.native(), std::max<Duration>(std::chrono::milliseconds(100), *backoff.NextDelay()), [&] { return stopping_.load(); });
  }
}

void Daemon::Boot(const Config& c) {
  Status st = Form(c);
  if (!st.ok() && st.code() != StatusCode::kCancelled) {
    spdlog::critical("cluster: cannot start: {}", st.ToString());
    SetPhase(AgentPhase::kFailed, "failed: " + st.ToString(), false);  // logged just above
  }
}

void Daemon::StartAwsClients(const Config& c) {
  auto metered = std::make_unique<MeteredHttpClient>(env_, NewCurlHttpClient());
  aws_calls_ = metered.get();
  http_ = std::move(metered);
  if (!c.aws.imds_disabled) {
    ImdsOptions o;
    o.endpoint = c.aws.imds_endpoint;
    o.deadline = std::chrono::seconds(5);  // per call; IDENTIFY retries, so that a stop is never held up long
    imds_ = std::make_unique<ImdsClient>(*http_, env_, o);
  }
  credentials_ = std::make_unique<CredentialChain>(*http_, env_, imds_.get(), ProcessGetEnv);
  keys_ = std::make_unique<ClusterKeyLoader>(env_, c, KeyFetchClients{http_.get(), imds_.get(), credentials_.get()}, &stopping_);
}

Status Daemon::Form(const Config& c) {
  // IDENTIFY: only a configuration that cannot name the node is final (IMDS may fail for a while at boot).
  Result<IdentitySnapshot> id = Status::Unavailable("identify", "not tried");
  RETURN_IF_ERROR(RetryUntilStopped(
      "instance metadata", [&] { return (id = IdentifyNode(c, imds_.get())).status(); },
      [](const Status& st) { return st.code() == StatusCode::kInvalidArgument; }));
  {
    MutexLock lock(mu_);
    identity_ = *id;
  }
  spdlog::info("identify: instance {} ({}), {} in {}, {} GPUs", id->instance_id, id->instance_type.empty() ? "no type" : id->instance_type,
               id->local_ipv4, id->availability_zone.empty() ? "no AZ" : id->availability_zone, id->gpu_count);
  SetLogField("INSTANCE_ID", id->instance_id);
  if (c.metrics.bind == "node") RETURN_IF_ERROR(StartMetrics(c, id->local_ipv4));

  // The cluster key: read, or fetched from AWS with the instance role.
  // The cluster key: read, or fetched from AWS with the instance role (which, with its permissions, may take a
  // while to be in force at boot: a refusal is retried too). A key file is read once.
  Result<std::vector<std::string>> loaded = Status::Unavailable("gossip", "not tried");
  RETURN_IF_ERROR(RetryUntilStopped(
      "the cluster key", [&] { return (loaded = keys_->Load()).status(); },
      [this](const Status& st) { return st.code() == StatusCode::kInvalidArgument || keys_->source().kind == KeySource::Kind::kFile; }));
  std::vector<std::string> keys = std::move(*loaded);
  spdlog::info("gossip: {} cluster key{} from the {}", keys.size(), keys.size() == 1 ? "" : "s", keys_->source().Describe());
  SetShardKeys(keys);

  // Gossip, named by the instance id and reachable at the node's address.
  GossipIdentity who;
  who.name = id->instance_id;
  who.advertise = id->local_ipv4;
  who.meta.role = c.cluster.role;
  who.meta.gpus = id->gpu_count;
  who.meta.az = id->availability_zone;
  RETURN_IF_ERROR(StartGossip(c, who, std::move(keys)));

  Formation::Deps deps;
  deps.env = &env_;
  deps.peers = membership_.get();
  deps.keys = [m = membership_.get()] { return m->cluster_keys(); };
  deps.http = http_.get();
  deps.on_phase = [this](AgentPhase phase, const std::string& detail, bool log) { SetPhase(phase, detail, log); };
  deps.heartbeat = heartbeats_.Register("formation");
  const std::string region_hint = !c.aws.region.empty() ? c.aws.region : id->region;  // aws.region wins over IMDS's
  if (!c.discovery.queue.empty()) {
    ASSIGN_OR_RETURN(std::string region, ResolveAwsRegion(region_hint, imds_.get()));
    ASSIGN_OR_RETURN(std::string endpoint, ResolveSqsEndpoint(c.aws.sqs_endpoint, region));
    SqsOptions so;
    so.endpoint = endpoint;
    so.region = region;
    so.retry = {std::chrono::milliseconds(200), std::chrono::seconds(5), 2.0, 4, std::chrono::seconds(30)};
    so.cancel = &stopping_;
    sqs_sender_ = std::make_unique<SqsClient>(*http_, *credentials_, env_, so);
    // The poller's own client: the formation ends a long poll early with a flag of its own (ReceiveOptions::cancel).
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
    so.region = region_hint;
    so.mount_target_ips = c.storage.mount_target_ips;
    so.dns_wait = c.storage.dns_wait;
    so.mount_budget = c.storage.mount_budget;
    so.cancel = &stopping_;
    mounts_ = std::make_unique<MountManager>(env_, SystemResolver(), so);
    deps.mounts = mounts_.get();
    storage_watch_ = std::make_unique<StorageWatch>(env_, *mounts_, c.storage.mount_point);
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
  fo.files = FilesOptions(c, id->instance_id);
  fo.wait_handle_url = c.aws.cfn_wait_handle;

  SelfInfo self;
  self.instance_id = id->instance_id;
  self.ip = id->local_ipv4;
  self.gpus = id->gpu_count;
  self.master = c.cluster.role == "master";
  self.server = c.cluster.role == "server";
  self.meta = membership_->base_meta();
  formation_ = std::make_unique<dlagent::Formation>(deps, fo, self, &stopping_);

  // A node restarting after READY finds its old roster on disk: its members are the fastest way back in.
  if (Result<std::string> old = env_.ReadFile(c.files.root + c.files.roster, 16 << 20); old.ok()) {
    if (Result<Roster> r = ParseRosterJson(*old); r.ok() && r->cluster == c.cluster.name) {
      for (const RosterNode& n : r->nodes) {
        if (n.instance_id != id->instance_id) membership_->Join(n.ip + ":" + std::to_string(c.gossip.port));
      }
      spdlog::info("cluster: rejoining the {} members of roster generation {} found in {}", r->nodes.size(), r->generation,
                   c.files.root + c.files.roster);
    }
  }
  if (c.jobs.enabled) {
    std::shared_ptr<jobs::Jobs> j = MakeJobs(c, *id);
    MutexLock lock(mu_);
    jobs_ = std::move(j);
  }
  // Peers reach the node, the formation and the jobs through the service: it starts once they exist.
  RETURN_IF_ERROR(StartClusterService(c));
  formation_->Start();
  booted_ = true;

  if (imds_) {
    ImdsEventCallbacks cb;
    cb.on_spot_notice = [this](const SpotNotice& n) {
      spdlog::warn("spot interruption notice: {} at {}; leaving the cluster", n.action, FormatUtc(n.time, "%Y-%m-%dT%H:%M:%SZ"));
      if (!leaving_.exchange(true)) RequestStop("a spot interruption notice");
    };
    cb.on_scheduled_event = [](const ScheduledEvent& e) { spdlog::warn("maintenance: scheduled for this instance: {}", DescribeEvent(e)); };
    cb.on_active_events = [this](const std::vector<ScheduledEvent>& active) {
      const std::string leave_for = maintenance_.Update(active, env_.NowWall());
      if (!leave_for.empty() && !leaving_.exchange(true)) RequestStop("scheduled maintenance " + leave_for);
    };
    events_ = std::make_unique<ImdsEventPoller>(*imds_, cb);
    events_->Start();
  }
  return Status::Ok();
}

std::shared_ptr<jobs::Jobs> Daemon::MakeJobs(const Config& c, const IdentitySnapshot& id) {
  Membership* m = membership_.get();
  dlagent::Formation* f = formation_.get();
  const std::string port = std::to_string(c.gossip.port);
  jobs::JobsDeps d;
  d.client = m->client();
  d.keyring = [m] { return m->keyring(); };
  d.gone = [m](const std::string& name) { return m->Gone(name); };
  d.roster = [f, port] {
    std::vector<jobs::JobNode> nodes;
    for (const RosterNode& n : f->HeldRoster().nodes) nodes.push_back({n.instance_id, n.ip, n.ip + ":" + port, n.gpus, n.server});
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
  d.base_env = [f, files = FilesOptions(c, id.instance_id), gpus, socket, ipv4 = id.local_ipv4] {
    // What a login shell of the node has from /etc/profile.d/deeplearning.sh, on systemd's default PATH.
    std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DLAGENT_SOCKET=" + socket};
    const Roster r = f->HeldRoster();
    if (r.generation > 0) {
      for (const auto& [k, v] : NodeVariables(r, files, gpus)) env.push_back(k + "=" + v);
    }
    // Frameworks talk over the interface of the cluster's address, not the one the host name resolves to.
    for (const auto& [k, v] : jobs::NetworkVariables(jobs::InterfaceHolding(ipv4))) env.push_back(k + "=" + v);
    return env;
  };
  d.alive = [m] {
    std::vector<std::string> alive;
    for (const swim::MemberInfo& mi : m->RawMembers()) {
      if (mi.state == swim::MemberState::kAlive) alive.push_back(mi.name);
    }
    return alive;
  };
  d.health = [this, c, f, m, ipv4 = id.local_ipv4](const jobs::pb::HealthRequest& req) {
    return CheckNodeHealth(req, env_, c, *f, *m, mounts_.get(), ipv4);
  };
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
  if (c.jobs.scopes) {
    jobs::ScopeOptions so;
    so.tasks_max = static_cast<uint64_t>(c.jobs.tasks_max);
    so.bound_to = jobs::Scopes::OwnService();
    std::string why;
    o.scopes = jobs::Scopes::Open(std::move(so), &why);
    if (o.scopes) {
      spdlog::info("jobs: each rank runs in a systemd scope of its own (TasksMax {})",
                   c.jobs.tasks_max > 0 ? std::to_string(c.jobs.tasks_max) : "systemd's default");
    } else {
      spdlog::info("jobs: ranks run in their process groups, in agentd's cgroup ({})", why);
    }
  }
  o.node_heartbeat = heartbeats_.Register("jobs");
  o.coordinator_heartbeat = heartbeats_.Register("job coordinator");
  return std::make_shared<jobs::Jobs>(std::move(d), std::move(o));
}

void Daemon::StopParts() {
  {
    MutexLock lock(mu_);  // so that a wait of the boot thread cannot miss the wake-up
    stopping_ = true;
  }
  cv_.notify_all();
  if (boot_.joinable()) boot_.join();
  if (events_) events_->Stop();
  std::shared_ptr<jobs::Jobs> jobs;
  {
    MutexLock lock(mu_);
    jobs = std::move(jobs_);  // from here, calls to the jobs are refused
  }
  if (jobs) {
    // Ranks are the agent's children: they stop with it (docs/jobs.md), each after its job's grace period.
    jobs->StopAll(std::chrono::seconds(20));
    // Calls in flight (the control socket's, other agents') hold it and use the parts below: they end first,
    // each within the deadlines of its own calls.
    while (jobs.use_count() > 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    jobs.reset();
  }
  if (formation_) formation_->Stop();
  if (membership_) membership_->Leave();
  // Nothing serves from here on, so the parts can go.
  if (cluster_service_) cluster_service_->Shutdown(std::chrono::milliseconds(500));
  if (control_) control_->Shutdown(kShutdownGrace);
  metrics_.reset();  // its handler reads the parts below
  page_.reset();
  gpus_.reset();
  booted_ = false;
  cluster_service_.reset();
  control_.reset();
  events_.reset();
  formation_.reset();
  membership_.reset();
  gossip_.reset();
  cluster_client_.reset();
  storage_watch_.reset();
  mounts_.reset();
  sqs_poller_.reset();
  sqs_sender_.reset();
  ps_.reset();
  keys_.reset();
  credentials_.reset();
  imds_.reset();
  http_.reset();
}

}  // namespace dlagent
