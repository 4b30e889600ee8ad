#include "agent/daemon/formation.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <spdlog/spdlog.h>

#include "bootstrap/aws/cfn_signal.h"
#include "bootstrap/common/atomic_file.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/log.h"

namespace dlagent {
namespace {

// Between failed SQS calls (each already retried by the client): 1 s growing to 30 s, never giving up.
const BackoffPolicy kSqsErrorBackoff{std::chrono::seconds(1), std::chrono::seconds(30), 2.0, 0, Duration(0)};

std::string HostOf(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

AgentPhase AgentPhaseOf(FormationPhase p) {
  switch (p) {
    case FormationPhase::kDiscover: return AgentPhase::kDiscover;
    case FormationPhase::kRoster: return AgentPhase::kRoster;
    case FormationPhase::kPrepare: return AgentPhase::kPrepare;
    case FormationPhase::kReady: return AgentPhase::kReady;
    case FormationPhase::kStandby: return AgentPhase::kStandby;
    case FormationPhase::kFailed: return AgentPhase::kFailed;
  }
  return AgentPhase::kFailed;
}

FormationConfig CoreConfig(const FormationOptions& o, const SelfInfo& self) {
  FormationConfig c;
  c.cluster = o.cluster;
  c.self = self.instance_id;
  c.seal = o.seal;
  c.reseal = o.reseal;
  c.reseal_settle = o.reseal_settle;
  c.quorum = o.reseal_quorum;
  c.signal = !o.wait_handle_url.empty();
  return c;
}

// The vote file: "<generation> <leader>\n".
Vote ReadVote(Env& env, const std::string& path) {
  if (path.empty() || !env.FileExists(path)) return {};
  Result<std::string> text = env.ReadFile(path, 4096);
  Vote v;
  char leader[257] = {};
  unsigned long long gen = 0;
  if (!text.ok() || std::sscanf(text->c_str(), "%llu %256s", &gen, leader) != 2) {
    // Written atomically, so only a hand edit gets here. A vote forgotten could be given twice: say so.
    spdlog::error("formation: cannot read the vote in {} ({}); starting without one", path,
                  text.ok() ? "not \"<generation> <leader>\"" : text.status().ToString());
    return {};
  }
  v.generation = gen;
  v.leader = leader;
  return v;
}

}  // namespace

Formation::Formation(Deps deps, FormationOptions options, SelfInfo self, const std::atomic<bool>* stopping)
    : deps_(std::move(deps)),
      options_(std::move(options)),
      self_(std::move(self)),
      stopping_(stopping),
      core_(CoreConfig(options_, self_), deps_.env->NowMono(), RandomSeed(),
            ReadVote(*deps_.env, options_.vote_path.empty() ? "" : options_.files.root + options_.vote_path)) {
  published_ = self_.meta;
}

Formation::~Formation() { Stop(); }

void Formation::WaitFor(MutexLock& lock, Duration d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stop_ && cv_.wait_until(lock.native(), until) == std::cv_status::no_timeout) {
  }
}

void Formation::Start() {
  tick_ = std::thread([this] { TickLoop(); });
  worker_ = std::thread([this] { WorkerLoop(); });
  if (deps_.sqs_sender) sender_ = std::thread([this] { SenderLoop(); });
  if (deps_.sqs_poller) poller_ = std::thread([this] { PollerLoop(); });
}

void Formation::Stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  poll_cancel_ = true;
  cv_.notify_all();
  for (std::thread* t : {&tick_, &sender_, &poller_, &worker_}) {
    if (t->joinable()) t->join();
  }
}

FormationStatus Formation::Snapshot() {
  MutexLock lock(mu_);
  const FormationReport& r = core_.report();
  FormationStatus s;
  s.phase = AgentPhaseOf(r.phase);
  s.detail = r.detail + r.countdown;
  ClusterSnapshot& c = s.cluster;
  c.leader = r.leader;
  c.generation = r.generation;
  c.sealed_by = r.sealed_by;
  c.rank = r.rank;
  for (size_t i = 0; i < r.roster->nodes.size(); ++i) {
    const RosterNode& m = r.roster->nodes[i];
    c.roster.push_back({static_cast<uint32_t>(i), m.instance_id, m.ip, m.gpus, i < r.acked.size() && r.acked[i], RoleName(m)});
  }
  c.failure = r.failure;
  c.dead = r.dead;
  c.alive = r.alive;
  c.expected = r.expected;
  c.deadline_in_ms = r.deadline_in_ms;
  c.reseal_in_ms = r.reseal_in_ms;
  for (const DiscoveryQueue* q : {send_queue_.get(), poll_queue_.get()}) {
    if (!q) continue;
    DiscoveryCounters counters = q->counters();
    c.hellos_sent += counters.sent;
    c.hellos_accepted += counters.accepted;
    for (const auto& [verdict, n] : counters.refused) c.hellos_refused += n;
  }
  if (deps_.sqs_sender) c.sqs_requests += deps_.sqs_sender->requests();
  if (deps_.sqs_poller) c.sqs_requests += deps_.sqs_poller->requests();
  return s;
}

Roster Formation::HeldRoster() {
  MutexLock lock(mu_);
  return core_.held();
}

void Formation::TickLoop() {
  MutexLock lock(mu_);
  while (!stop_) {
    lock.Unlock();
    if (deps_.heartbeat) deps_.heartbeat->Beat();
    Tick(deps_.env->NowMono());
    lock.Lock();
    // Fast while forming, slower once ready: the view changes only with gossip.
    const Duration tick = core_.report().phase == FormationPhase::kReady ? options_.tick * 5 : options_.tick;
    WaitFor(lock, tick);
  }
}

// Alive members (suspects count: they are not dead yet) whose metadata places them in a roster.
GossipView Formation::Observe() {
  std::vector<PeerState> view;
  for (const swim::MemberInfo& m : deps_.peers->RawMembers()) {
    if (m.state != swim::MemberState::kAlive && m.state != swim::MemberState::kSuspect) continue;
    Result<swim::MemberMeta> meta = swim::DecodeMeta(m.meta);
    if (!meta.ok()) continue;
    view.push_back({{m.name, HostOf(m.addr), meta->gpus, meta->role == "master", meta->role == "server"},
                    m.addr,
                    meta->roster_gen,
                    meta->roster_leader,
                    meta->applied_gen,
                    {meta->vote_gen, meta->vote_leader}});
  }
  return MakeGossipView(std::move(view));
}

void Formation::Tick(MonoTime now) {
  auto view = std::make_shared<const GossipView>(Observe());
  for (int round = 0; round < 2; ++round) {  // once more at once after adopting a roster: prepare it now
    FormationActions a;
    {
      MutexLock lock(mu_);
      view_ = view;
      a = core_.Tick(now, *view);
    }
    if (!Act(a, now)) break;
  }
  ReportPhase();
  LogEvents();
}

bool Formation::Act(const FormationActions& a, MonoTime now) {
  if (a.vote) {
    // On disk before it is gossiped, and written outside the lock: a slow disk holds up no status call.
    const Status kept = KeepVote(*a.vote);
    MutexLock lock(mu_);
    core_.OnVoteKept(*a.vote, kept, now);
  }
  swim::MemberMeta meta;
  {
    MutexLock lock(mu_);
    if (a.hello != want_hello_ || a.poll != want_poll_) {
      want_hello_ = a.hello;
      if (want_poll_ && !a.poll) poll_cancel_ = true;  // end the long poll in flight
      want_poll_ = a.poll;
      cv_.notify_all();
    }
    if (a.prepare) Post([this, r = a.prepare] { Prepare(*r); });
    if (a.signal) Post([this, r = a.signal] { Signal(*r); });
    if (a.publish) {
      published_.roster_gen = static_cast<uint32_t>(core_.held().generation);
      published_.roster_leader = core_.held().leader;
      published_.applied_gen = static_cast<uint32_t>(core_.applied_gen());
      published_.vote_gen = static_cast<uint32_t>(core_.vote().generation);
      published_.vote_leader = core_.vote().leader;
      meta = published_;
    }
  }
  if (a.publish) deps_.peers->UpdateMeta(meta);
  if (!a.nudge_addr.empty()) deps_.peers->Join(a.nudge_addr);
  if (a.fetch_from.empty()) return false;
  Result<Roster> r = deps_.peers->FetchRoster(a.fetch_addr);
  const Result<RosterRef> fetched = r.ok() ? Result<RosterRef>(std::make_shared<const Roster>(std::move(*r))) : r.status();
  MutexLock lock(mu_);
  const uint64_t before = core_.held().generation;
  core_.OnRosterFetched(a.fetch_from, fetched, now);
  return core_.held().generation != before;
}

Status Formation::KeepVote(const Vote& v) {
  if (options_.vote_path.empty()) return Status::Ok();
  const std::string path = options_.files.root + options_.vote_path;
  RETURN_IF_ERROR(deps_.env->CreateDirs(DirName(path), 0755));
  return WriteFileAtomically(*deps_.env, path, std::to_string(v.generation) + " " + v.leader + "\n", 0644);
}

void Formation::ReportPhase() {
  AgentPhase phase;
  std::string detail;
  bool log = false;
  {
    MutexLock lock(mu_);
    const FormationReport& r = core_.report();
    phase = AgentPhaseOf(r.phase);
    log = phase != last_phase_ || r.detail != last_detail_;
    last_phase_ = phase;
    last_detail_ = r.detail;
    detail = r.detail + r.countdown;
    if (!log && detail == last_shown_) return;
    last_shown_ = detail;
  }
  if (deps_.on_phase) deps_.on_phase(phase, detail, log);
}

void Formation::LogEvents() {
  std::vector<FormationEvent> events;
  {
    MutexLock lock(mu_);
    events = core_.TakeEvents();
  }
  for (const FormationEvent& e : events) {
    switch (e.level) {
      case FormationEvent::kInfo: spdlog::info("cluster: {}", e.text); break;
      case FormationEvent::kWarning: spdlog::warn("cluster: {}", e.text); break;
      case FormationEvent::kError: spdlog::error("cluster: {}", e.text); break;
    }
  }
}

void Formation::Post(std::function<void()> task) {
  tasks_.push_back(std::move(task));
  cv_.notify_all();
}

void Formation::WorkerLoop() {
  MutexLock lock(mu_);
  for (;;) {
    while (!stop_ && tasks_.empty()) cv_.wait(lock.native());
    if (stop_) return;
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.Unlock();
    task();
    lock.Lock();
  }
}

void Formation::Prepare(Roster roster) {
  ScopedLogFields fields({{"GENERATION", std::to_string(roster.generation)}});
  Status st = Status::Ok();
  if (deps_.mounts) {
    st = deps_.mounts->Ensure();
    if (st.ok()) st = deps_.mounts->Probe(std::chrono::seconds(10));
    if (!st.ok()) st = st.Annotate("shared storage");
  }
  if (st.ok()) st = WriteNodeFiles(*deps_.env, options_.files, roster, self_.gpus).Annotate("node files");
  if (st.code() == StatusCode::kCancelled) return;  // stopping
  if (st.ok()) {
    spdlog::info("cluster: prepared generation {}: {} nodes, files under {}", roster.generation, roster.nodes.size(),
                 options_.files.root.empty() ? "/" : options_.files.root);
  } else {
    spdlog::error("cluster: cannot prepare generation {}: {}; retrying", roster.generation, st.ToString());
  }
  MutexLock lock(mu_);
  core_.OnPrepared(roster, st, deps_.env->NowMono());
}

// A wait condition counts signals with distinct ids: a formed cluster signals SUCCESS once per member (its
// instance id), so a template's WaitCondition can wait for Count = the node count; a failure is one FAILURE.
void Formation::Signal(Roster roster) {
  std::vector<WaitConditionSignal> signals;
  const std::string generation = "generation " + std::to_string(roster.generation);
  if (!roster.failure.empty()) {
    signals.push_back({"FAILURE", roster.failure, roster.cluster + "-generation-" + std::to_string(roster.generation), RenderWorkers(roster)});
  }
  for (size_t rank = 0; roster.failure.empty() && rank < roster.nodes.size(); ++rank) {
    const RosterNode& n = roster.nodes[rank];
    signals.push_back({"SUCCESS",
                       "cluster " + roster.cluster + " ready: " + std::to_string(roster.nodes.size()) + " nodes, " + generation + "; " +
                           n.instance_id + " is rank " + std::to_string(rank),
                       n.instance_id, "rank " + std::to_string(rank) + " " + n.ip});
  }
  for (size_t i = 0; i < signals.size(); ++i) {
    const WaitConditionSignal& s = signals[i];
    Status st = SignalWaitHandle(*deps_.http, *deps_.env, options_.wait_handle_url, s,
                                 {std::chrono::seconds(1), std::chrono::seconds(10), 2.0, 6, std::chrono::minutes(2)}, stopping_);
    if (!st.ok()) {  // retried already: the handle is gone or expired, and would refuse the rest the same way
      if (st.code() == StatusCode::kCancelled) return;
      spdlog::error("cluster: could not signal {} ({}) to the CloudFormation wait handle: {}; {} signals not sent", s.status, s.unique_id,
                    st.ToString(), signals.size() - i);
      return;
    }
  }
  spdlog::info("cluster: signalled {} to the CloudFormation wait handle ({}, {} signals)", roster.failure.empty() ? "SUCCESS" : "FAILURE", generation,
               signals.size());
}

Status Formation::OpenQueue(SqsClient& sqs, std::unique_ptr<DiscoveryQueue>& queue) {
  if (queue) return Status::Ok();  // only the calling thread sets it
  const bool url = deps_.queue.rfind("http://", 0) == 0 || deps_.queue.rfind("https://", 0) == 0;
  Result<std::string> resolved = url ? Result<std::string>(deps_.queue) : sqs.GetQueueUrl(deps_.queue);
  if (!resolved.ok()) return resolved.status().Annotate("discovery queue " + deps_.queue);
  auto opened = std::make_unique<DiscoveryQueue>(sqs, *deps_.env, *resolved, deps_.keys, options_.cluster);
  MutexLock lock(mu_);  // Snapshot() reads its counters
  queue = std::move(opened);
  return Status::Ok();
}

void Formation::SenderLoop() {
  std::mt19937_64 rng(RandomSeed());
  Backoff errors(kSqsErrorBackoff, rng());
  MutexLock lock(mu_);
  for (;;) {
    while (!stop_ && !want_hello_) cv_.wait(lock.native());
    if (stop_) return;
    lock.Unlock();
    Status st = OpenQueue(*deps_.sqs_sender, send_queue_);
    if (st.ok()) {
      Hello h{options_.cluster, self_.instance_id,
              self_.ip,         self_.meta.rpc_port,
              self_.meta.role,  self_.gpus,
              self_.meta.az,    std::chrono::duration_cast<std::chrono::milliseconds>(deps_.env->NowWall().time_since_epoch()).count()};
      st = send_queue_->SendHello(h);
    }
    lock.Lock();
    if (stop_) return;
    Duration pause;
    if (st.ok()) {
      errors = Backoff(kSqsErrorBackoff, rng());
      // Jittered in [interval/2, interval]: agents that booted together do not send in lockstep.
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(options_.hello_interval).count();
      pause = std::chrono::milliseconds(ms / 2 + std::uniform_int_distribution<int64_t>(0, ms / 2)(rng));
    } else {
      spdlog::warn("discovery: {}", st.ToString());
      pause = std::max<Duration>(std::chrono::milliseconds(200), *errors.NextDelay());
    }
    WaitFor(lock, pause);
  }
}

void Formation::PollerLoop() {
  std::mt19937_64 rng(RandomSeed());
  Backoff errors(kSqsErrorBackoff, rng());
  MutexLock lock(mu_);
  for (;;) {
    while (!stop_ && !want_poll_) cv_.wait(lock.native());
    if (stop_) return;
    poll_cancel_ = false;
    lock.Unlock();
    Status st = OpenQueue(*deps_.sqs_poller, poll_queue_);
    if (st.ok()) {
      Result<int> n = poll_queue_->PollOnce(
          options_.poll_wait,
          [&](const Hello& h) {
            if (h.instance_id == self_.instance_id) return;
            {
              // A member already in our view is in our cluster: a push-pull with it would change nothing.
              MutexLock guard(mu_);
              if (view_ && view_->Find(h.instance_id)) return;
            }
            const std::string addr = h.ip + ":" + std::to_string(h.gossip_port);
            spdlog::info("discovery: HELLO from {} at {} ({} GPUs, {}): joining it", h.instance_id, addr, h.gpus, h.role);
            deps_.peers->Join(addr);
          },
          std::chrono::seconds(10), &poll_cancel_);
      st = n.status();
    }
    lock.Lock();
    if (stop_) return;
    if (st.ok() || st.code() == StatusCode::kCancelled) {
      errors = Backoff(kSqsErrorBackoff, rng());
      continue;
    }
    spdlog::warn("discovery: polling the queue: {}", st.ToString());
    WaitFor(lock, std::max<Duration>(std::chrono::milliseconds(200), *errors.NextDelay()));
  }
}

}  // namespace dlagent
