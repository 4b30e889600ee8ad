#include "agent/jobs/coordinator.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <tuple>

#include <spdlog/spdlog.h>

#include "agent/jobs/launch.h"
#include "agent/jobs/rank_env.h"
#include "agent/jobs/restart.h"
#include "agent/jobs/run_request.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/duration.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

std::string KillReason(int sig, const Caller& caller, const std::string& from) {
  return "killed with " + SignalName(sig) + " by uid " + std::to_string(caller.uid) + (from.empty() ? "" : " on " + from);
}

Result<pb::NodeReply> Answer(Result<pb::NodeReply> r) {
  if (!r.ok()) return r.status();
  if (!r->error().empty()) return Status(static_cast<StatusCode>(r->error_code()), "jobs", r->error());
  return r;
}

uint32_t SignalJob(JobNodes& nodes, const std::string& from, const pb::JobSpec& spec, const std::vector<std::string>& skip, int sig,
                   const std::string& reason, bool killed) {
  std::atomic<uint32_t> signalled{0};
  ForEachConcurrently(static_cast<size_t>(spec.nodes_size()), [&](size_t i) {
    const std::string& node = spec.nodes(static_cast<int>(i));
    if (std::find(skip.begin(), skip.end(), node) != skip.end()) return;
    pb::NodeRequest r;
    r.set_from(from);
    pb::SignalRequest* s = r.mutable_signal();
    s->set_job(spec.id());
    s->set_signal(sig);
    s->set_escalate(sig != SIGKILL);
    s->set_reason(reason);
    s->set_killed(killed);
    Result<pb::NodeReply> reply = Answer(nodes.Call(node, spec.node_addrs(static_cast<int>(i)), r));
    if (reply.ok())
      signalled += reply->signal().signalled();
    else if (reply.status().code() != StatusCode::kNotFound)
      spdlog::warn("job {}: cannot signal {}: {}", spec.id(), node, reply.status().ToString());
  });
  return signalled;
}

void ForEachConcurrently(size_t n, const std::function<void(size_t)>& fn, size_t max_threads) {
  if (n == 0) return;
  if (n == 1 || max_threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  // A few threads take the calls in turn: never a thread per node.
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> threads;
  const size_t helpers = std::min(n, max_threads) - 1;  // and this thread
  threads.reserve(helpers);
  for (size_t t = 0; t < helpers; ++t) threads.emplace_back(work);
  work();
  for (std::thread& t : threads) t.join();
}

Coordinator::Coordinator(JobNodes& nodes, CoordinatorOptions options) : nodes_(nodes), o_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

Coordinator::~Coordinator() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

JobCoreOptions Coordinator::CoreOptions() const { return {o_.self, o_.self_addr, o_.unreachable_after, o_.restart_wait, o_.restart_retry}; }

Result<pb::JobSummary> Coordinator::Run(const pb::RunJobRequest& req, const Caller& caller, std::function<std::vector<JobNode>()> roster) {
  ASSIGN_OR_RETURN(CheckedRun checked, CheckRunRequest(req, caller, roster(), o_.default_grace));
  pb::JobSpec& spec = checked.spec;
  spec.set_id("j-" + RandomHex(6));
  spec.set_coordinator(o_.self);
  spec.set_coordinator_addr(o_.self_addr);
  spec.set_created_unix_ms(swim::NowUnixMs());
  spec.set_per_node(req.per_node());
  {
    MutexLock lock(mu_);
    starting_[spec.id()];
  }
  Result<std::map<std::string, pb::NodeJob>> parts = Launch(spec, checked.nodes);
  MutexLock lock(mu_);
  auto early = std::move(starting_[spec.id()]);
  starting_.erase(spec.id());
  if (!parts.ok()) return parts.status();
  const MonoTime now = std::chrono::steady_clock::now();
  auto job = std::make_unique<Job>(Job{JobCore(CoreOptions(), spec, std::move(*parts), now, swim::NowUnixMs()), std::move(roster)});
  for (const auto& [node, part] : early) job->todo.push_back(job->core.OnPart(now, node, part));
  pb::JobSummary summary = job->core.summary();
  jobs_[spec.id()] = std::move(job);
  cv_.notify_all();
  return summary;
}

Result<std::map<std::string, pb::NodeJob>> Coordinator::Launch(pb::JobSpec& spec, const std::vector<JobNode>& nodes) {
  spec.clear_nodes();
  spec.clear_node_addrs();
  for (const JobNode& n : nodes) {
    spec.add_nodes(n.instance_id);
    spec.add_node_addrs(n.addr);
  }
  // PREPARE: every node checks what it can before anything starts, and finds the ports the launcher needs.
  PlanOptions po;
  ASSIGN_OR_RETURN(po.launcher, ParseLauncher(spec.launcher()));
  po.job_id = spec.id();
  po.per_node = spec.per_node();
  po.dlps_port = o_.dlps_port;
  po.argv.assign(spec.argv().begin(), spec.argv().end());
  po.agentctl = o_.agentctl;
  po.as_root = spec.uid() == 0;
  po.attempt = spec.attempt();
  po.max_restarts = spec.max_restarts();
  if (po.launcher == Launcher::kDlps && o_.dlps_token) po.dlps_token = o_.dlps_token(spec.id());
  std::vector<PlanNode> plan_nodes(nodes.size());
  std::vector<uint32_t> ports(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    plan_nodes[i] = {nodes[i].instance_id, nodes[i].ip, nodes[i].gpus, {}, nodes[i].server};
    ASSIGN_OR_RETURN(uint32_t workers, WorkersOn(po, plan_nodes[i]));
    ports[i] = PortsNeeded(po, i, workers);
  }
  std::vector<Result<pb::NodeReply>> prepared(nodes.size(), Status::Internal("jobs", "not asked"));
  ForEachConcurrently(nodes.size(), [&](size_t i) {
    pb::NodeRequest r;
    r.set_from(o_.self);
    *r.mutable_prepare()->mutable_spec() = spec;
    r.mutable_prepare()->set_ports(ports[i]);
    prepared[i] = Answer(nodes_.Call(nodes[i].instance_id, nodes[i].addr, r));
  });
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (!prepared[i].ok()) return Status(prepared[i].status().code(), "jobs", "nothing started: " + std::string(prepared[i].status().message()));
    for (uint32_t p : prepared[i]->prepare().ports()) plan_nodes[i].ports.push_back(static_cast<uint16_t>(p));
  }
  ASSIGN_OR_RETURN(std::vector<std::vector<RankPlan>> plan, PlanRanks(po, plan_nodes));
  uint32_t total = 0;
  for (const auto& node_ranks : plan) {
    for (const RankPlan& p : node_ranks) total += !p.helper;  // the job's own ranks; helpers rank after them
  }
  spec.set_num_ranks(total);

  // START, everywhere at once; all or nothing.
  std::vector<Result<pb::NodeReply>> started(nodes.size(), Status::Internal("jobs", "not asked"));
  ForEachConcurrently(nodes.size(), [&](size_t i) {
    pb::NodeRequest r;
    r.set_from(o_.self);
    pb::StartRequest* s = r.mutable_start();
    *s->mutable_spec() = spec;
    for (const RankPlan& p : plan[i]) {
      pb::RankSpec* rs = s->add_ranks();
      rs->set_rank(p.rank);
      rs->set_local_rank(p.local_rank);
      rs->set_role(p.role);
      for (const auto& [k, v] : p.env) rs->add_env(k + "=" + v);
      for (const std::string& a : p.argv) rs->add_argv(a);
    }
    started[i] = Answer(nodes_.Call(nodes[i].instance_id, nodes[i].addr, r));
  });
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (started[i].ok()) continue;
    SignalJob(nodes_, o_.self, spec, {}, SIGKILL, "could not start: " + std::string(started[i].status().message()), false);
    return Status(started[i].status().code(), "jobs", "nothing left running: " + std::string(started[i].status().message()));
  }
  spdlog::info("job {} ({}){}: {} ranks on {} nodes as {} with launcher {}: {}", spec.id(), spec.name(),
               spec.attempt() > 0 ? " attempt " + std::to_string(spec.attempt()) : "", total, nodes.size(), spec.user(), spec.launcher(),
               spec.argv(0));
  std::map<std::string, pb::NodeJob> parts;
  for (size_t i = 0; i < nodes.size(); ++i) {
    pb::NodeJob& part = parts[nodes[i].instance_id];
    *part.mutable_spec() = spec;
    part.set_node(nodes[i].instance_id);
    *part.mutable_ranks() = started[i]->start().ranks();
  }
  return parts;
}

Result<pb::JobSummary> Coordinator::Summary(const std::string& id) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + id + " coordinated by " + o_.self);
  return it->second->core.summary();
}

Result<pb::JobSpec> Coordinator::Spec(const std::string& id) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + id + " coordinated by " + o_.self);
  return it->second->core.spec();
}

std::vector<pb::JobSummary> Coordinator::List() {
  MutexLock lock(mu_);
  std::vector<pb::JobSummary> out;
  for (const auto& [id, job] : jobs_) out.push_back(job->core.summary());
  return out;
}

uint32_t Coordinator::Act(const std::string& id, const pb::JobSpec& spec, const JobActions& a) {
  for (const JobLogLine& l : a.log) {
    if (l.warning)
      spdlog::warn("{}", l.text);
    else
      spdlog::info("{}", l.text);
  }
  uint32_t signalled = 0;
  if (a.signal) signalled = SignalJob(nodes_, o_.self, spec, a.skip, a.sig, a.signal->failure, a.signal->killed);
  if (a.pick_nodes) Restart(id);
  return signalled;
}

Result<uint32_t> Coordinator::Kill(const std::string& id, int sig, const Caller& caller) {
  pb::JobSpec spec;
  JobActions a;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + id + " coordinated by " + o_.self);
    JobCore& job = it->second->core;
    if (caller.uid != 0 && caller.uid != job.spec().uid()) {
      return Status::PermissionDenied("jobs", "job " + id + " belongs to " + job.spec().user() + "; only they or root may kill it");
    }
    a = job.OnKill(std::chrono::steady_clock::now(), Decision{KillReason(sig, caller), 128 + sig, true}, sig);
    spec = job.spec();
  }
  const uint32_t n = Act(id, spec, a);
  cv_.notify_all();
  return n;
}

bool Coordinator::Snapshot(const std::string& id, pb::JobSpec& spec, std::vector<size_t>& ask) {
  MutexLock lock(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return false;
  spec = it->second->core.spec();
  ask = it->second->core.ToAsk();
  return true;
}

void Coordinator::Watch(const std::string& id) {
  pb::JobSpec spec;
  std::vector<size_t> ask;
  if (!Snapshot(id, spec, ask)) return;
  std::vector<NodeAnswer> answers(static_cast<size_t>(spec.nodes_size()));
  ForEachConcurrently(ask.size(), [&](size_t k) {
    const int i = static_cast<int>(ask[k]);
    pb::NodeRequest r;
    r.set_from(o_.self);
    r.mutable_query()->set_job(id);
    Result<pb::NodeReply> reply = Answer(nodes_.Call(spec.nodes(i), spec.node_addrs(i), r));
    NodeAnswer& a = answers[ask[k]];
    if (reply.ok() && reply->query().jobs_size() == 1) {
      a.part = std::move(*reply->mutable_query()->mutable_jobs(0));
    } else if (reply.ok()) {
      a.part = Status::Internal("jobs", "node " + spec.nodes(i) + " answered without the job");
    } else {
      a.part = reply.status();
      a.gone = nodes_.Gone(spec.nodes(i));
    }
  });
  JobActions a;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    a = it->second->core.OnAnswers(std::chrono::steady_clock::now(), answers);
    spec = it->second->core.spec();
    if (a.let_go) jobs_.erase(it);
  }
  Act(id, spec, a);
}

Status Coordinator::Report(const std::string& from, const pb::NodeJob& part) {
  MutexLock lock(mu_);
  auto it = jobs_.find(part.spec().id());
  if (it == jobs_.end()) {
    auto early = starting_.find(part.spec().id());
    if (early == starting_.end()) return Status::NotFound("jobs", "no job " + part.spec().id() + " coordinated by " + o_.self);
    if (early->second.size() < 4 * static_cast<size_t>(part.spec().nodes_size()) + 16) early->second.emplace_back(from, part);
    ++counters_.reports;
    return Status::Ok();
  }
  ++counters_.reports;
  JobActions a = it->second->core.OnPart(std::chrono::steady_clock::now(), from, part);
  if (a.let_go) {
    for (const JobLogLine& l : a.log) spdlog::warn("{}", l.text);
    jobs_.erase(it);
    return Status::Ok();
  }
  if (a.signal || a.pick_nodes || !a.log.empty()) {
    it->second->todo.push_back(std::move(a));
    cv_.notify_all();
  }
  return Status::Ok();
}

void Coordinator::Tick(const std::string& id) {
  pb::JobSpec spec;
  std::vector<size_t> ask;
  if (!Snapshot(id, spec, ask)) return;
  std::vector<std::string> gone;
  for (size_t i : ask) {
    if (nodes_.Gone(spec.nodes(static_cast<int>(i)))) gone.push_back(spec.nodes(static_cast<int>(i)));
  }
  JobActions a;
  {
    MutexLock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;
    a = it->second->core.OnTick(std::chrono::steady_clock::now(), gone);
    spec = it->second->core.spec();
  }
  Act(id, spec, a);
}

void Coordinator::Loop() {
  MonoTime next_round{};
  for (;;) {
    if (o_.heartbeat) o_.heartbeat->Beat();
    for (const pb::JobSpec& orphan : nodes_.Orphans()) Adopt(orphan);
    std::vector<std::string> active;
    std::vector<std::tuple<std::string, pb::JobSpec, std::vector<JobActions>>> todo;
    {
      MutexLock lock(mu_);
      if (stopping_) return;
      for (auto& [id, job] : jobs_) {
        if (!job->todo.empty()) todo.emplace_back(id, job->core.spec(), std::move(job->todo));
        job->todo.clear();
        if (!Terminal(job->core.summary())) active.push_back(id);
      }
      // Forget the oldest finished jobs past keep_finished.
      std::vector<std::pair<int64_t, std::string>> finished;
      for (const auto& [id, job] : jobs_) {
        if (Terminal(job->core.summary())) finished.emplace_back(job->core.summary().ended_unix_ms(), id);
      }
      std::sort(finished.begin(), finished.end());
      for (size_t i = 0; i + o_.keep_finished < finished.size(); ++i) jobs_.erase(finished[i].second);
    }
    for (const auto& [id, spec, actions] : todo) {
      for (const JobActions& a : actions) Act(id, spec, a);
    }
    const MonoTime now = std::chrono::steady_clock::now();
    const bool round = now >= next_round;
    if (round) next_round = now + o_.round_interval;
    for (const std::string& id : active) {
      Tick(id);
      if (round) Watch(id);
    }
    MutexLock lock(mu_);
    if (stopping_) return;
    if (round && !active.empty()) counters_.rounds += active.size();
    const auto wait = active.empty() ? std::chrono::milliseconds(1000) : std::chrono::duration_cast<std::chrono::milliseconds>(o_.tick_interval);
    cv_.wait_for(lock.native(), wait, [&]() NO_THREAD_SAFETY_ANALYSIS {
      if (stopping_) return true;
      for (const auto& [id, job] : jobs_) {
        if (!job->todo.empty()) return true;
      }
      return false;
    });
  }
}

}  // namespace dlagent::jobs
