#include "agent/jobs/jobs.h"

#include <signal.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "agent/jobs/rank_env.h"
#include "bootstrap/common/crypto.h"

namespace dlagent::jobs {
namespace {

CoordinatorOptions CoordinatorOptionsOf(const JobsOptions& o) {
  CoordinatorOptions c;
  c.self = o.self;
  c.self_addr = o.self_addr;
  c.dlps_port = o.dlps_port;
  c.agentctl = o.agentctl;
  c.dlps_token = o.dlps_token;
  c.tick_interval = o.tick_interval;
  c.round_interval = o.round_interval;
  c.heartbeat = o.coordinator_heartbeat;
  return c;
}

NodeJobsOptions NodeJobsOptionsOf(const JobsOptions& o, const JobsDeps& d, Reporter& reporter) {
  NodeJobsOptions n;
  n.report = [&reporter](std::vector<pb::NodeJob> parts) { reporter.Add(std::move(parts)); };
  n.node = o.self;
  n.heartbeat = o.node_heartbeat;
  n.base_env = d.base_env;
  n.gone = d.gone;
  n.scopes = o.scopes;
  // Unguessable, so that no other process can take the name before the agent binds it.
  if (o.training_reports) n.training_socket = "dlagent/" + o.self + "/training/" + RandomHex(8);
  return n;
}

Status MayRead(const pb::JobSpec& spec, const Caller& caller) {
  if (caller.uid == 0 || caller.uid == spec.uid()) return Status::Ok();
  return Status::PermissionDenied("jobs", "job " + spec.id() + " belongs to " + spec.user() + "; only they or root may read or stop it");
}

}  // namespace

Jobs::Jobs(JobsDeps deps, JobsOptions options)
    : deps_(std::move(deps)),
      o_(std::move(options)),
      reporter_(ReporterOptions{
          o_.self, [this](const std::string& node, const std::string& addr, const pb::NodeRequest& req) { return Call(node, addr, req); },
          deps_.gone}),
      local_(NodeJobsOptionsOf(o_, deps_, reporter_)),
      endpoint_(local_, nullptr, deps_.health),
      server_(deps_.keyring, endpoint_),
      coordinator_(*this, CoordinatorOptionsOf(o_)) {
  endpoint_.SetCoordinator(&coordinator_);
}

Jobs::~Jobs() {
  reporter_.Stop();  // its calls reach endpoint_ and the coordinator, which go first
  endpoint_.SetCoordinator(nullptr);
}

Result<pb::NodeReply> Jobs::Call(const std::string& instance_id, const std::string& addr, const pb::NodeRequest& req) {
  if (instance_id == o_.self) return endpoint_.Dispatch(req);
  const std::shared_ptr<const swim::Keyring> ring = deps_.keyring();
  if (!ring) return Status::FailedPrecondition("jobs", "no cluster key: jobs need gossip.key_file");
  Result<pb::NodeReply> reply = CallNode(*deps_.client, *ring, addr, req);
  if (!reply.ok()) return reply.status().Annotate(instance_id);  // which node, not only its address
  return reply;
}

Result<pb::JobSummary> Jobs::Run(const pb::RunJobRequest& req, const Caller& caller) {
  if (std::string why; !deps_.ready(&why)) {
    return Status::FailedPrecondition("jobs", "the cluster is not ready (" + why + "); wait for it with agentctl wait, or pass --wait-ready");
  }
  return coordinator_.Run(req, caller, deps_.roster);
}

Result<pb::JobSpec> Jobs::FindSpec(const std::string& job) {
  if (job.empty()) return Status::InvalidArgument("jobs", "which job? give its id (agentctl jobs lists them)");
  if (Result<pb::JobSpec> s = coordinator_.Spec(job); s.ok()) return s;
  pb::QueryRequest q;
  q.set_job(job);
  if (Result<pb::QueryReply> r = local_.Query(q); r.ok() && r->jobs_size() == 1) return r->jobs(0).spec();
  // Started elsewhere and with no ranks here: whichever roster node knows it.
  const std::vector<JobNode> roster = deps_.roster();
  std::vector<std::optional<pb::JobSpec>> found(roster.size());
  ForEachConcurrently(roster.size(), [&](size_t i) {
    if (roster[i].instance_id == o_.self) return;
    pb::NodeRequest r;
    r.set_from(o_.self);
    r.mutable_query()->set_job(job);
    if (Result<pb::NodeReply> a = Answer(Call(roster[i].instance_id, roster[i].addr, r)); a.ok() && a->query().jobs_size() == 1) {
      found[i] = a->query().jobs(0).spec();
    }
  });
  for (const auto& f : found) {
    if (f) return *f;
  }
  return Status::NotFound("jobs", "no job " + job + " on any node of the roster (agentctl jobs lists them)");
}

Result<pb::JobList> Jobs::List(const Caller& caller, const std::string& after, uint32_t limit) {
  ASSIGN_OR_RETURN(pb::JobList all, ListAll(caller));
  return ListPage(std::move(all), after, limit);
}

Result<pb::JobList> Jobs::ListAll(const Caller&) {
  const std::vector<JobNode> roster = deps_.roster();
  std::vector<Result<pb::NodeReply>> answers(roster.size(), Status::Internal("jobs", "not asked"));
  ForEachConcurrently(roster.size(), [&](size_t i) {
    pb::NodeRequest r;
    r.set_from(o_.self);
    r.mutable_query();
    answers[i] = Answer(Call(roster[i].instance_id, roster[i].addr, r));
  });
  pb::JobList out;
  std::map<std::string, std::vector<pb::NodeJob>> by_job;
  for (size_t i = 0; i < roster.size(); ++i) {
    if (!answers[i].ok()) {
      out.add_unreachable(roster[i].instance_id);
      continue;
    }
    for (const pb::NodeJob& j : answers[i]->query().jobs()) by_job[j.spec().id()].push_back(j);
  }
  for (auto& [id, parts] : by_job) {
    const pb::NodeJob* with_summary = nullptr;
    for (const pb::NodeJob& j : parts) {
      if (j.has_summary()) with_summary = &j;
    }
    if (with_summary) {
      *out.add_jobs() = with_summary->summary();
      continue;
    }
    // Its coordinator did not answer: the parts that did tell what they can, after the latest attempt's spec.
    std::vector<NodePart> np;
    const pb::JobSpec* latest = &parts.front().spec();
    for (const pb::NodeJob& j : parts) {
      np.push_back({j.node(), &j, false});
      if (j.spec().attempt() > latest->attempt()) latest = &j.spec();
    }
    *out.add_jobs() = Summarize(*latest, np, Decision{});
  }
  std::sort(out.mutable_jobs()->begin(), out.mutable_jobs()->end(), ListOrder);
  return out;
}

Result<pb::JobOutputReply> Jobs::Output(const pb::JobOutputRequest& req, const Caller& caller) {
  ASSIGN_OR_RETURN(pb::JobSpec spec, FindSpec(req.job()));
  RETURN_IF_ERROR(MayRead(spec, caller));
  const size_t n = static_cast<size_t>(spec.nodes_size());
  if (!req.node().empty() && std::find(spec.nodes().begin(), spec.nodes().end(), req.node()) == spec.nodes().end()) {
    return Status::InvalidArgument("jobs", "--node " + req.node() + " runs no rank of job " + spec.id());
  }
  std::vector<Result<pb::NodeReply>> answers(n, Status::Internal("jobs", "not asked"));
  const bool coordinator_runs_ranks = std::find(spec.nodes().begin(), spec.nodes().end(), spec.coordinator()) != spec.nodes().end();
  ForEachConcurrently(n, [&](size_t i) {
    const std::string& node = spec.nodes(static_cast<int>(i));
    if (!req.node().empty() && node != req.node() && node != spec.coordinator()) return;
    pb::NodeRequest r;
    r.set_from(o_.self);
    pb::QueryRequest* q = r.mutable_query();
    q->set_job(spec.id());
    auto cursor = req.after_seq().find(node);
    q->set_after_seq(cursor == req.after_seq().end() ? 0 : cursor->second);
    q->set_max_lines(req.tail() > 0 ? 10000 : 2000);
    q->set_summary(node == spec.coordinator());
    answers[i] = Answer(Call(node, spec.node_addrs(static_cast<int>(i)), r));
  });
  pb::JobOutputReply out;
  std::vector<NodePart> parts;
  struct Tagged {
    const pb::LogLine* line;
    const std::string* node;
  };
  std::vector<Tagged> lines;
  const pb::JobSummary* summary = nullptr;
  for (size_t i = 0; i < n; ++i) {
    const std::string& node = spec.nodes(static_cast<int>(i));
    if (!answers[i].ok()) {
      if (answers[i].status().code() != StatusCode::kInternal || req.node().empty()) out.add_unreachable(node);
      parts.push_back({node, nullptr, false});
      continue;
    }
    const pb::NodeJob& j = answers[i]->query().jobs(0);
    parts.push_back({node, &j, false});
    if (j.has_summary()) summary = &j.summary();
    if (!req.node().empty() && node != req.node()) continue;
    (*out.mutable_after_seq())[node] = j.next_seq() > 0 ? j.next_seq() - 1 : 0;
    out.set_dropped(out.dropped() + j.dropped());
    for (const pb::RankState& rs : j.ranks()) {
      if (req.rank() >= 0 && rs.rank() == static_cast<uint32_t>(req.rank())) *out.add_ranks() = rs;
    }
    for (const pb::LogLine& l : j.lines()) {
      if (req.rank() < 0 || l.rank() == static_cast<uint32_t>(req.rank())) lines.push_back({&l, &node});
    }
  }
  if (!summary && !coordinator_runs_ranks) {
    pb::NodeRequest r;
    r.set_from(o_.self);
    r.mutable_query()->set_job(spec.id());
    r.mutable_query()->set_summary(true);
    if (Result<pb::NodeReply> a = Answer(Call(spec.coordinator(), spec.coordinator_addr(), r));
        a.ok() && a->query().jobs_size() == 1 && a->query().jobs(0).has_summary()) {
      *out.mutable_summary() = a->query().jobs(0).summary();
    }
  }
  if (summary) *out.mutable_summary() = *summary;
  if (!out.has_summary()) *out.mutable_summary() = Summarize(spec, parts, Decision{});
  std::stable_sort(lines.begin(), lines.end(), [](const Tagged& a, const Tagged& b) { return a.line->unix_ms() < b.line->unix_ms(); });
  const size_t skip = req.tail() > 0 && lines.size() > req.tail() ? lines.size() - req.tail() : 0;
  for (size_t i = skip; i < lines.size(); ++i) {
    pb::OutputLine* o = out.add_lines();
    o->set_node(*lines[i].node);
    o->set_rank(lines[i].line->rank());
    o->set_stderr(lines[i].line->stderr());
    o->set_text(lines[i].line->text());
    o->set_unix_ms(lines[i].line->unix_ms());
  }
  return out;
}

Result<pb::KillJobReply> Jobs::Kill(const pb::KillJobRequest& req, const Caller& caller) {
  const int sig = req.signal() == 0 ? SIGTERM : req.signal();
  if (sig <= 0 || sig >= NSIG) return Status::InvalidArgument("jobs", "signal " + std::to_string(sig) + " is not a signal");
  ASSIGN_OR_RETURN(pb::JobSpec spec, FindSpec(req.job()));
  RETURN_IF_ERROR(MayRead(spec, caller));
  pb::KillJobReply out;
  if (spec.coordinator() == o_.self) {
    ASSIGN_OR_RETURN(uint32_t n, coordinator_.Kill(spec.id(), sig, caller));
    out.set_signalled(n);
    return out;
  }
  // Started elsewhere: every node is told directly (its coordinator too, through its ranks' parts), so that a
  // kill works even when the coordinator is gone.
  const std::string reason = KillReason(sig, caller, o_.self);
  const uint32_t signalled = SignalJob(*this, o_.self, spec, {}, sig, reason, true);
  spdlog::info("job {}: {}", spec.id(), reason);
  out.set_signalled(signalled);
  return out;
}

Result<pb::HealthReport> Jobs::Health(const pb::HealthCheckRequest& req, const Caller& caller) {
  const std::vector<JobNode> roster = deps_.roster();
  if (roster.empty()) return Status::FailedPrecondition("jobs", "the cluster has no roster yet (agentctl status says where it stands)");
  std::string workdir = req.workdir();
  if (workdir.empty()) workdir = HomeOf(caller.uid);
  const uint64_t min_free = req.min_free_bytes() ? req.min_free_bytes() : uint64_t{1} << 30;
  const int64_t max_offset = req.max_clock_offset_ms() ? req.max_clock_offset_ms() : 1000;
  std::vector<std::string> alive = deps_.alive ? deps_.alive() : std::vector<std::string>{};
  std::sort(alive.begin(), alive.end());

  pb::HealthReport out;
  out.mutable_nodes()->Reserve(static_cast<int>(roster.size()));
  for (size_t i = 0; i < roster.size(); ++i) out.add_nodes();
  ForEachConcurrently(roster.size(), [&](size_t i) {
    pb::NodeHealth& h = *out.mutable_nodes(static_cast<int>(i));
    h.set_node(roster[i].instance_id);
    h.set_ip(roster[i].ip);
    h.set_rank(static_cast<uint32_t>(i));
    h.set_roster_gpus(roster[i].gpus);
    pb::NodeRequest r;
    r.set_from(o_.self);
    r.mutable_health()->set_workdir(workdir);
    r.mutable_health()->set_uid(caller.uid);
    r.mutable_health()->set_gid(caller.gid);
    for (uint32_t g : caller.groups) r.mutable_health()->add_groups(g);
    const auto sent = std::chrono::system_clock::now();
    const auto t0 = std::chrono::steady_clock::now();
    Result<pb::NodeReply> a = Answer(Call(roster[i].instance_id, roster[i].addr, r));
    const auto rtt = std::chrono::steady_clock::now() - t0;
    auto fail = [&](std::string what) { h.add_failures(std::move(what)); };
    if (!a.ok()) {
      h.set_round_trip_us(-1);
      fail("agent unreachable: " + std::string(a.status().message()));
      return;
    }
    h.set_round_trip_us(std::chrono::duration_cast<std::chrono::microseconds>(rtt).count());
    const pb::HealthReply& n = a->health();
    *h.mutable_reply() = n;
    // The node's clock against ours, at the middle of the round trip.
    const int64_t mid_ms = std::chrono::duration_cast<std::chrono::milliseconds>((sent + rtt / 2).time_since_epoch()).count();
    h.set_clock_offset_ms(n.unix_ms() - mid_ms);
    if (std::abs(h.clock_offset_ms()) > max_offset) fail("clock " + std::to_string(h.clock_offset_ms()) + " ms off (check NTP / chrony)");
    std::vector<std::string> theirs(n.alive().begin(), n.alive().end());
    std::sort(theirs.begin(), theirs.end());
    if (theirs != alive) {
      std::string diff;
      for (const std::string& m : alive) {
        if (!std::binary_search(theirs.begin(), theirs.end(), m)) diff += " missing " + m;
      }
      for (const std::string& m : theirs) {
        if (!std::binary_search(alive.begin(), alive.end(), m)) diff += " extra " + m;
      }
      fail("gossip view differs (" + std::to_string(theirs.size()) + " alive there, " + std::to_string(alive.size()) + " here:" + diff + ")");
    }
    if (n.gpus() != roster[i].gpus) fail(std::to_string(n.gpus()) + " GPUs counted, the roster says " + std::to_string(roster[i].gpus));
    if (n.storage_configured()) {
      if (!n.storage_mounted())
        fail("shared storage not mounted");
      else if (!n.storage_error().empty())
        fail("shared storage: " + n.storage_error());
      else if (n.storage_free_bytes() < min_free)
        fail("shared storage has " + std::to_string(n.storage_free_bytes() >> 20) + " MiB free");
    }
    if (n.dlps_enabled() && !n.dlps_error().empty()) fail("dlps shard: " + n.dlps_error());
    if (!n.workdir_error().empty())
      fail("working directory: " + n.workdir_error());
    else if (n.workdir_free_bytes() < min_free)
      fail(n.workdir() + " has " + std::to_string(n.workdir_free_bytes() >> 20) + " MiB free");
  });
  out.set_ok(true);
  for (pb::NodeHealth& h : *out.mutable_nodes()) {
    h.set_ok(h.failures_size() == 0);
    out.set_ok(out.ok() && h.ok());
  }
  return out;
}

Result<pb::AttachReply> Jobs::Attach(const pb::AttachRequest& req, const Caller& caller) {
  if (req.argv().empty()) return Status::InvalidArgument("jobs", "no command to start");
  ASSIGN_OR_RETURN(pb::JobSpec spec, FindSpec(req.job()));
  RETURN_IF_ERROR(MayRead(spec, caller));
  int index = -1;
  const std::vector<JobNode> roster = deps_.roster();
  for (int i = 0; i < spec.nodes_size(); ++i) {
    if (spec.nodes(i) == req.host()) index = i;
    for (const JobNode& n : roster) {
      if (n.instance_id == spec.nodes(i) && n.ip == req.host()) index = i;
    }
  }
  if (index < 0) return Status::NotFound("jobs", req.host() + " is no node of job " + spec.id());
  // As ssh would: the words joined, run by the shell.
  std::string command;
  for (const std::string& a : req.argv()) command += (command.empty() ? "" : " ") + a;
  pb::NodeRequest r;
  r.set_from(o_.self);
  pb::StartRequest* start = r.mutable_start();
  *start->mutable_spec() = spec;
  start->set_attach(true);
  pb::RankSpec* rank = start->add_ranks();
  rank->set_rank(spec.num_ranks() + static_cast<uint32_t>(index));  // past the job's own ranks: one a node
  rank->set_role("launched");
  rank->add_env("DLAGENT_JOB=" + spec.id());
  rank->add_env("DLAGENT_NODE_RANK=" + std::to_string(index));
  for (const char* a : {"/bin/sh", "-c"}) rank->add_argv(a);
  rank->add_argv(command);
  ASSIGN_OR_RETURN(pb::NodeReply started, Answer(Call(spec.nodes(index), spec.node_addrs(index), r)));
  spdlog::info("job {}: started rank {} on {} for the job's launcher: {}", spec.id(), rank->rank(), spec.nodes(index), command);
  pb::AttachReply out;
  out.set_node(spec.nodes(index));
  out.set_rank(rank->rank());
  return out;
}

Jobs::Metrics Jobs::metrics() {
  Metrics m;
  for (const pb::JobSummary& s : coordinator_.List()) ++m.coordinated[std::string(JobStateName(s.state()))];
  m.coordinator = coordinator_.counters();
  m.reporter = reporter_.counters();
  m.node = local_.counters();
  m.refused_calls = server_.refused();
  m.training = local_.Training(kTrainingKept);
  return m;
}

}  // namespace dlagent::jobs
