#include "agent/daemon/formation.h"

#include <algorithm>
#include <random>

#include <spdlog/spdlog.h>

#include "bootstrap/aws/cfn_signal.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/common/log.h"

namespace dlagent {
namespace {

constexpr Duration kNudgeInterval = std::chrono::seconds(1);
constexpr Duration kPrepareRetry = std::chrono::seconds(10);
constexpr Duration kFetchRetry = std::chrono::seconds(1);
// Between failed SQS calls (each already retried by the client): 1 s growing to 30 s, never giving up.
const BackoffPolicy kSqsErrorBackoff{std::chrono::seconds(1), std::chrono::seconds(30), 2.0, 0, Duration(0)};

std::string HostOf(const std::string& addr) { return addr.substr(0, addr.rfind(':')); }

std::string Names(const std::vector<std::string>& names, size_t max = 8) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < max; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > max) out += " and " + std::to_string(names.size() - max) + " more";
  return out;
}

}  // namespace

Result<ResealPolicy> ParseResealPolicy(std::string_view s) {
  if (s == "never") return ResealPolicy::kNever;
  if (s == "on-failure") return ResealPolicy::kOnFailure;
  if (s == "on-change") return ResealPolicy::kOnChange;
  return Status::InvalidArgument("config", "reseal \"" + std::string(s) + "\" is not one of: never, on-failure, on-change");
}

// One tick's look at gossip: alive members (suspects count: they are not dead yet) with their metadata.
struct Formation::View {
  std::vector<Candidate> alive;
  std::map<std::string, swim::MemberMeta> meta;  // alive members only
  std::map<std::string, std::string> addr;       // gossip address of each alive member
  std::string leader;
};

Formation::Formation(Deps deps, FormationOptions options, SelfInfo self, std::atomic<bool>* stopping, std::atomic<bool>* poll_cancel)
    : deps_(std::move(deps)),
      options_(std::move(options)),
      self_(std::move(self)),
      stopping_(stopping),
      poll_cancel_(poll_cancel),
      started_(deps_.env->NowMono()) {
  published_ = self_.meta;
  status_.phase = "discover";
  status_.cluster.expected = static_cast<uint32_t>(options_.seal.expected_nodes);
}

Formation::~Formation() { Stop(); }

void Formation::Start() {
  tick_ = std::thread([this] { TickLoop(); });
  worker_ = std::thread([this] { WorkerLoop(); });
  if (deps_.sqs_sender) sender_ = std::thread([this] { SenderLoop(); });
  if (deps_.sqs_poller) poller_ = std::thread([this] { PollerLoop(); });
}

void Formation::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stopping_->store(true);
  if (poll_cancel_) poll_cancel_->store(true);
  cv_.notify_all();
  for (std::thread* t : {&tick_, &sender_, &poller_, &worker_}) {
    if (t->joinable()) t->join();
  }
}

FormationStatus Formation::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  FormationStatus s = status_;
  for (const DiscoveryQueue* q : {send_queue_.get(), poll_queue_.get()}) {
    if (!q) continue;
    DiscoveryCounters c = q->counters();
    s.cluster.hellos_sent += c.sent;
    s.cluster.hellos_accepted += c.accepted;
    for (const auto& [verdict, n] : c.refused) s.cluster.hellos_refused += n;
  }
  if (deps_.sqs_sender) s.cluster.sqs_requests += deps_.sqs_sender->requests();
  if (deps_.sqs_poller) s.cluster.sqs_requests += deps_.sqs_poller->requests();
  return s;
}

std::string Formation::RosterJson() {
  std::lock_guard<std::mutex> lock(mu_);
  return held_.generation == 0 ? "" : RenderRosterJson(held_);
}

void Formation::TickLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    Tick(deps_.env->NowMono());
    lock.lock();
    // Fast while forming, slower once ready: the view changes only with gossip.
    const Duration tick = status_.phase == "ready" ? options_.tick * 5 : options_.tick;
    cv_.wait_for(lock, tick, [&] { return stop_; });
  }
}

Formation::View Formation::Observe(MonoTime) {
  View v;
  for (const swim::MemberInfo& m : deps_.peers->RawMembers()) {
    if (m.state != swim::MemberState::kAlive && m.state != swim::MemberState::kSuspect) continue;
    Result<swim::MemberMeta> meta = swim::DecodeMeta(m.meta);
    if (!meta.ok()) continue;  // not an agent we can place in a roster
    v.alive.push_back({m.name, HostOf(m.addr), meta->gpus, meta->role == "master"});
    v.meta[m.name] = *meta;
    v.addr[m.name] = m.addr;
  }
  v.leader = ChooseLeader(v.alive);
  return v;
}

void Formation::Tick(MonoTime now) {
  View v = Observe(now);
  Adopt(v, now);
  std::unique_lock<std::mutex> lock(mu_);
  alive_.clear();
  for (const Candidate& c : v.alive) {
    seen_.insert(c.instance_id);
    alive_.insert(c.instance_id);
  }
  if (v.leader == self_.instance_id) Lead(v, now);

  // Prepare the held roster once, if we are in it.
  const bool in_roster = std::any_of(held_.nodes.begin(), held_.nodes.end(), [&](const RosterNode& n) { return n.instance_id == self_.instance_id; });
  if (held_.generation > 0 && held_.failure.empty() && in_roster && applied_gen_ < held_.generation && !preparing_ &&
      now >= prepare_retry_at_) {
    preparing_ = true;
    Post([this, r = held_] { Prepare(r); });
  }

  // Discovery: who sends HELLOs and who polls.
  const bool alone = v.alive.size() <= 1;
  const std::vector<std::string> pollers = ChoosePollers(v.alive, held_.generation > 0 ? 0 : 2);
  const bool poller = std::find(pollers.begin(), pollers.end(), self_.instance_id) != pollers.end();
  const bool hello = alone || (poller && held_.generation == 0);
  if (hello != want_hello_ || poller != want_poll_) {
    want_hello_ = hello;
    if (want_poll_ && !poller && poll_cancel_) poll_cancel_->store(true);  // end the long poll in flight
    want_poll_ = poller;
    cv_.notify_all();
  }
  lock.unlock();
  PublishMeta();
  UpdatePhase(v, now);
  Nudge(v, now);
}

void Formation::Nudge(const View& v, MonoTime now) {
  // Gossip spreads metadata changes with high probability, not certainty: with 64 members changing their
  // metadata at once, a few updates miss a few members, and anti-entropy (push-pull every 30 s) would be
  // the only repair. So a member waiting on someone's news asks that member directly, once a second: a
  // push-pull with the leader while waiting for its roster, with an unprepared member while waiting for acks.
  std::string target;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now - last_nudge_ < kNudgeInterval) return;
    if (status_.phase == "roster" && v.leader != self_.instance_id) {
      target = v.leader;
    } else if (status_.phase == "prepare" && applied_gen_ >= held_.generation) {
      std::vector<std::string> waiting;
      for (const std::string& id : status_.unprepared) {
        if (id != self_.instance_id && v.addr.count(id)) waiting.push_back(id);
      }
      if (!waiting.empty()) target = waiting[nudge_rng_() % waiting.size()];
    }
    if (target.empty() || !v.addr.count(target)) return;
    last_nudge_ = now;
  }
  deps_.peers->Join(v.addr.at(target));
}

void Formation::Adopt(const View& v, MonoTime now) {
  if (now < next_fetch_) return;  // the last fetch failed: not again every tick
  std::string best_name;
  std::pair<uint32_t, std::string> best;
  {
    std::lock_guard<std::mutex> lock(mu_);
    best = {static_cast<uint32_t>(held_.generation), held_.leader};
  }
  for (const auto& [name, meta] : v.meta) {
    if (name == self_.instance_id) continue;
    std::pair<uint32_t, std::string> theirs{meta.roster_gen, meta.roster_leader};
    if (theirs > best) best = theirs, best_name = name;
  }
  if (best_name.empty()) return;
  Result<Roster> r = deps_.peers->FetchRoster(v.addr.at(best_name));
  if (!r.ok()) {
    spdlog::warn("cluster: cannot fetch roster generation {} from {}: {}; trying again in {}", best.first, best_name, r.status().ToString(),
                 FormatDuration(kFetchRetry));
    next_fetch_ = now + kFetchRetry;
    return;
  }
  if (r->cluster != options_.cluster || std::pair<uint32_t, std::string>{static_cast<uint32_t>(r->generation), r->leader} < best) {
    spdlog::warn("cluster: {} served roster {}/{} of cluster {}, not the one it announced; trying again in {}", best_name, r->generation,
                 r->leader, r->cluster, FormatDuration(kFetchRetry));
    next_fetch_ = now + kFetchRetry;
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (std::pair<uint32_t, std::string>{static_cast<uint32_t>(r->generation), r->leader} <=
      std::pair<uint32_t, std::string>{static_cast<uint32_t>(held_.generation), held_.leader}) {
    return;  // we sealed or adopted a newer one meanwhile
  }
  held_ = std::move(*r);
  change_since_.reset();
  if (held_.failure.empty()) {
    spdlog::info("cluster: adopted roster generation {} of {} nodes sealed by {}", held_.generation, held_.nodes.size(), held_.leader);
  } else {
    spdlog::error("cluster: formation failed (reported by {}): {}", held_.leader, held_.failure);
  }
}

void Formation::Lead(const View& v, MonoTime now) {
  // REQUIRES: mu_ held.
  auto seal = [&](Roster r, const std::string& why) {
    held_ = std::move(r);
    change_since_.reset();
    if (held_.failure.empty()) {
      spdlog::info("cluster: sealed roster generation {} with {} nodes: {}", held_.generation, held_.nodes.size(), why);
    } else {
      spdlog::error("cluster: formation failed: {}", held_.failure);
      if (!options_.wait_handle_url.empty() && signaled_gen_ < held_.generation) {
        signaled_gen_ = held_.generation;
        Post([this, r = held_] { Signal(r); });
      }
    }
  };
  if (held_.generation == 0) {
    SealDecision d = DecideSeal(options_.seal, options_.cluster, 1, self_.instance_id, v.alive, seen_, started_, now);
    if (d.kind == SealDecision::kWaiting) {
      status_.cluster.deadline_in_ms = std::chrono::duration_cast<std::chrono::milliseconds>(d.deadline_in).count();
      return;
    }
    status_.cluster.deadline_in_ms = -1;
    if (d.kind == SealDecision::kFailed) {
      Roster failed{options_.cluster, 1, self_.instance_id, {}, d.reason};
      for (const Candidate& c : v.alive) failed.nodes.push_back({c.instance_id, c.ip, c.gpus, c.master});
      if (!OrderRoster(failed.nodes).ok()) failed.nodes.clear();
      return seal(std::move(failed), d.reason);
    }
    return seal(std::move(d.roster), d.reason);
  }
  if (!held_.failure.empty() || options_.reseal == ResealPolicy::kNever) return;

  // Reseal: a roster member gone (failure), or for on-change also a member not in the roster, or a roster
  // sealed by a leader that is no longer alive (its roster stands; the new leader takes it over).
  std::vector<std::string> gone, joined;
  for (const RosterNode& n : held_.nodes) {
    if (!v.meta.count(n.instance_id)) gone.push_back(n.instance_id);
  }
  if (options_.reseal == ResealPolicy::kOnChange) {
    for (const Candidate& c : v.alive) {
      if (std::none_of(held_.nodes.begin(), held_.nodes.end(), [&](const RosterNode& n) { return n.instance_id == c.instance_id; })) {
        joined.push_back(c.instance_id);
      }
    }
  }
  if (gone.empty() && joined.empty()) {
    change_since_.reset();
    return;
  }
  const std::string signature = Names(gone, 1000) + "|" + Names(joined, 1000);
  if (!change_since_ || signature != change_signature_) {
    change_since_ = now;
    change_signature_ = signature;
    spdlog::info("cluster: roster generation {} differs from the view (gone: {}; joined: {}); resealing after {} of calm",
                 held_.generation, gone.empty() ? "none" : Names(gone), joined.empty() ? "none" : Names(joined),
                 FormatDuration(options_.reseal_settle));
    return;
  }
  if (now - *change_since_ < options_.reseal_settle) return;
  Roster next{options_.cluster, held_.generation + 1, self_.instance_id, {}, ""};
  for (const Candidate& c : v.alive) {
    const bool member = std::any_of(held_.nodes.begin(), held_.nodes.end(), [&](const RosterNode& n) { return n.instance_id == c.instance_id; });
    if (member || options_.reseal == ResealPolicy::kOnChange) next.nodes.push_back({c.instance_id, c.ip, c.gpus, c.master});
  }
  const std::string why = "gone: " + (gone.empty() ? std::string("none") : Names(gone)) + "; joined: " + (joined.empty() ? std::string("none") : Names(joined));
  if (Status st = OrderRoster(next.nodes); !st.ok()) {
    next.failure = "cannot reseal: " + st.ToString();
  } else if (next.nodes.size() < options_.seal.min_nodes) {
    next.failure = "generation " + std::to_string(next.generation) + " would have " + std::to_string(next.nodes.size()) +
                   " nodes, below min_nodes " + std::to_string(options_.seal.min_nodes) + " (" + why + ")";
  }
  seal(std::move(next), why);
}

void Formation::PublishMeta() {
  swim::MemberMeta m;
  {
    std::lock_guard<std::mutex> lock(mu_);
    m = published_;
    m.roster_gen = static_cast<uint32_t>(held_.generation);
    m.roster_leader = held_.leader;
    m.applied_gen = applied_gen_;
    if (m.roster_gen == published_.roster_gen && m.roster_leader == published_.roster_leader && m.applied_gen == published_.applied_gen) return;
    published_ = m;
  }
  deps_.peers->UpdateMeta(m);
}

void Formation::UpdatePhase(const View& v, MonoTime) {
  std::string phase, detail;
  std::string countdown;  // part of the detail that changes every second: STATUS= shows it, the journal not
  bool log = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    FormationStatus& s = status_;
    ClusterSnapshot& c = s.cluster;
    c.leader = v.leader;
    c.alive = static_cast<uint32_t>(v.alive.size());
    c.generation = held_.generation;
    c.failure = held_.failure;
    c.rank = -1;
    c.roster.clear();
    s.unprepared.clear();
    if (v.leader != self_.instance_id) c.deadline_in_ms = -1;  // only the leader's deadline counts
    for (size_t i = 0; i < held_.nodes.size(); ++i) {
      const RosterNode& n = held_.nodes[i];
      if (n.instance_id == self_.instance_id) c.rank = static_cast<int32_t>(i);
      const bool acked = n.instance_id == self_.instance_id ? applied_gen_ >= held_.generation
                                                            : v.meta.count(n.instance_id) && v.meta.at(n.instance_id).applied_gen >= held_.generation;
      if (!acked) s.unprepared.push_back(n.instance_id);
      c.roster.push_back({static_cast<uint32_t>(i), n.instance_id, n.ip, n.gpus, acked});
    }
    const std::string expected = std::to_string(options_.seal.expected_nodes);
    if (!held_.failure.empty()) {
      phase = "failed";
      detail = "failed: " + held_.failure;
    } else if (held_.generation == 0) {
      const bool leading = v.leader == self_.instance_id;
      countdown = c.deadline_in_ms >= 0 ? ", deadline in " + FormatDuration(std::chrono::milliseconds(c.deadline_in_ms)) : "";
      if (v.alive.size() >= options_.seal.expected_nodes || (leading && c.deadline_in_ms == 0)) {
        phase = "roster";
        detail = "roster: " + std::to_string(v.alive.size()) + "/" + expected + " nodes, " +
                 (leading ? std::string("sealing") : "waiting for leader " + v.leader + " to seal");
      } else {
        phase = "discover";
        detail = "discover: " + std::to_string(v.alive.size()) + "/" + expected + " nodes";
      }
    } else if (c.rank < 0) {
      phase = "standby";
      detail = "standby: not in roster generation " + std::to_string(held_.generation) + " (" + std::to_string(held_.nodes.size()) + " nodes)";
    } else if (applied_gen_ < held_.generation) {
      phase = "prepare";
      detail = "prepare: generation " + std::to_string(held_.generation) + ", rank " + std::to_string(c.rank) + ": " +
               (prepare_error_.empty() ? "storage and node files" : "failed, retrying every " + FormatDuration(kPrepareRetry) + ": " + prepare_error_);
    } else if (!s.unprepared.empty()) {
      phase = "prepare";
      detail = "prepare: " + std::to_string(held_.nodes.size() - s.unprepared.size()) + "/" + std::to_string(held_.nodes.size()) +
               " nodes prepared, waiting for " + Names(s.unprepared, 4);
    } else {
      phase = "ready";
      detail = "ready: rank " + std::to_string(c.rank) + " of " + std::to_string(held_.nodes.size()) + " nodes, generation " +
               std::to_string(held_.generation) + ", leader " + held_.leader;
      if (held_.leader == self_.instance_id && !options_.wait_handle_url.empty() && signaled_gen_ < held_.generation) {
        signaled_gen_ = held_.generation;
        Post([this, r = held_] { Signal(r); });
      }
    }
    log = phase != last_phase_ || detail != last_detail_;
    last_phase_ = phase;
    last_detail_ = detail;
    detail += countdown;
    s.phase = phase;
    s.detail = detail;
    if (!log && detail == last_shown_) return;
    last_shown_ = detail;
  }
  if (deps_.on_phase) deps_.on_phase(phase, detail, log);
}

void Formation::Post(std::function<void()> task) {
  // REQUIRES: mu_ held.
  tasks_.push_back(std::move(task));
  cv_.notify_all();
}

void Formation::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
    if (stop_) return;
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    lock.lock();
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
  std::lock_guard<std::mutex> lock(mu_);
  preparing_ = false;
  if (!st.ok()) {
    if (st.code() == StatusCode::kCancelled) return;  // stopping
    spdlog::error("cluster: cannot prepare generation {}: {}; retrying in {}", roster.generation, st.ToString(), FormatDuration(kPrepareRetry));
    prepare_error_ = st.ToString();
    prepare_retry_at_ = deps_.env->NowMono() + kPrepareRetry;  // the tick posts the next attempt
    return;
  }
  prepare_error_.clear();
  if (roster.generation > applied_gen_) applied_gen_ = static_cast<uint32_t>(roster.generation);
  spdlog::info("cluster: prepared generation {}: {} nodes, files under {}", roster.generation, roster.nodes.size(),
               options_.files.root.empty() ? "/" : options_.files.root);
}

void Formation::Signal(Roster roster) {
  WaitConditionSignal s;
  s.status = roster.failure.empty() ? "SUCCESS" : "FAILURE";
  s.reason = roster.failure.empty() ? "cluster " + roster.cluster + " ready: " + std::to_string(roster.nodes.size()) + " nodes, generation " +
                                          std::to_string(roster.generation)
                                    : roster.failure;
  s.unique_id = roster.cluster + "-generation-" + std::to_string(roster.generation);
  s.data = RenderWorkers(roster);
  Status st = SignalWaitHandle(*deps_.http, *deps_.env, options_.wait_handle_url, s, {std::chrono::seconds(1), std::chrono::seconds(10), 2.0, 6, std::chrono::minutes(2)}, stopping_);
  if (st.ok()) {
    spdlog::info("cluster: signalled {} to the CloudFormation wait handle (generation {})", s.status, roster.generation);
  } else {
    spdlog::error("cluster: could not signal {} to the CloudFormation wait handle: {}", s.status, st.ToString());
  }
}

Status Formation::OpenQueue(SqsClient& sqs, std::unique_ptr<DiscoveryQueue>& queue) {
  if (queue) return Status::Ok();  // only the calling thread sets it
  const bool url = deps_.queue.rfind("http://", 0) == 0 || deps_.queue.rfind("https://", 0) == 0;
  Result<std::string> resolved = url ? Result<std::string>(deps_.queue) : sqs.GetQueueUrl(deps_.queue);
  if (!resolved.ok()) return resolved.status().Annotate("discovery queue " + deps_.queue);
  auto opened = std::make_unique<DiscoveryQueue>(sqs, *deps_.env, *resolved, deps_.key, options_.cluster);
  std::lock_guard<std::mutex> lock(mu_);  // Snapshot() reads its counters
  queue = std::move(opened);
  return Status::Ok();
}

void Formation::SenderLoop() {
  std::mt19937_64 rng(std::random_device{}());
  Backoff errors(kSqsErrorBackoff, rng());
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || want_hello_; });
    if (stop_) return;
    lock.unlock();
    Status st = OpenQueue(*deps_.sqs_sender, send_queue_);
    if (st.ok()) {
      Hello h{options_.cluster, self_.instance_id, self_.ip, self_.meta.rpc_port, self_.meta.role, self_.gpus, self_.meta.az,
              std::chrono::duration_cast<std::chrono::milliseconds>(deps_.env->NowWall().time_since_epoch()).count()};
      st = send_queue_->SendHello(h);
    }
    lock.lock();
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
    cv_.wait_for(lock, pause, [&] { return stop_; });
  }
}

void Formation::PollerLoop() {
  std::mt19937_64 rng(std::random_device{}());
  Backoff errors(kSqsErrorBackoff, rng());
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || want_poll_; });
    if (stop_) return;
    poll_cancel_->store(false);
    lock.unlock();
    Status st = OpenQueue(*deps_.sqs_poller, poll_queue_);
    if (st.ok()) {
      Result<int> n = poll_queue_->PollOnce(options_.poll_wait, [&](const Hello& h) {
        if (h.instance_id == self_.instance_id) return;
        {
          // A member already in our view is in our cluster: a push-pull with it would change nothing.
          std::lock_guard<std::mutex> guard(mu_);
          if (alive_.count(h.instance_id)) return;
        }
        const std::string addr = h.ip + ":" + std::to_string(h.gossip_port);
        spdlog::info("discovery: HELLO from {} at {} ({} GPUs, {}): joining it", h.instance_id, addr, h.gpus, h.role);
        deps_.peers->Join(addr);
      });
      st = n.status();
    }
    lock.lock();
    if (stop_) return;
    if (st.ok() || st.code() == StatusCode::kCancelled) {
      errors = Backoff(kSqsErrorBackoff, rng());
      continue;
    }
    spdlog::warn("discovery: polling the queue: {}", st.ToString());
    cv_.wait_for(lock, std::max<Duration>(std::chrono::milliseconds(200), *errors.NextDelay()), [&] { return stop_; });
  }
}

}  // namespace dlagent
