#include "agent/jobs/summary.h"

#include <signal.h>

#include <algorithm>
#include <cstdlib>

#include "agent/jobs/rank_env.h"
#include "agent/jobs/training.h"

namespace dlagent::jobs {

std::string RankEnding(const pb::RankState& r) {
  return r.signal() != 0 ? "was killed by " + SignalName(r.signal()) : "exited with " + std::to_string(r.exit_code());
}

namespace {

// argv cut to kListArgvBytes; true when anything was left out.
bool Cut(google::protobuf::RepeatedPtrField<std::string>* argv) {
  size_t left = kListArgvBytes;
  for (int i = 0; i < argv->size(); ++i) {
    std::string& a = *argv->Mutable(i);
    if (a.size() <= left) {
      left -= a.size();
      continue;
    }
    a.resize(left);
    argv->DeleteSubrange(i + 1, argv->size() - i - 1);
    return true;
  }
  return false;
}

std::string Cursor(const pb::JobSummary& s) { return std::to_string(s.started_unix_ms()) + "." + s.id(); }

}  // namespace

void Brief(pb::JobSpec* spec) {
  spec->clear_env();
  if (Cut(spec->mutable_argv())) spec->set_argv_cut(true);
}

void Brief(pb::JobSummary* summary) {
  if (Cut(summary->mutable_argv())) summary->set_argv_cut(true);
}

bool ListOrder(const pb::JobSummary& a, const pb::JobSummary& b) {
  return a.started_unix_ms() != b.started_unix_ms() ? a.started_unix_ms() < b.started_unix_ms() : a.id() < b.id();
}

Result<pb::JobList> ListPage(pb::JobList all, const std::string& after, uint32_t limit) {
  if (limit == 0) limit = 100;
  limit = std::min<uint32_t>(limit, 1000);
  int first = 0;
  if (!after.empty()) {
    // "<started_unix_ms>.<id>": the page starts after that job, even when it has gone since.
    pb::JobSummary last;
    const size_t dot = after.find('.');
    char* end = nullptr;
    const long long started = dot == std::string::npos ? 0 : std::strtoll(after.c_str(), &end, 10);
    if (dot == std::string::npos || end != after.c_str() + dot || dot == 0) {
      return Status::InvalidArgument("jobs", "\"" + after.substr(0, 64) + "\" is not a job list cursor (JobList.next)");
    }
    last.set_started_unix_ms(started);
    last.set_id(after.substr(dot + 1));
    first = static_cast<int>(std::upper_bound(all.jobs().begin(), all.jobs().end(), last, ListOrder) - all.jobs().begin());
  }
  pb::JobList page;
  *page.mutable_unreachable() = all.unreachable();
  size_t bytes = 0;
  int i = first;
  for (; i < all.jobs_size() && page.jobs_size() < static_cast<int>(limit); ++i) {
    const size_t size = all.jobs(i).ByteSizeLong();
    if (page.jobs_size() > 0 && bytes + size > kListPageBytes) break;
    bytes += size;
    page.add_jobs()->Swap(all.mutable_jobs(i));
  }
  if (i < all.jobs_size()) page.set_next(Cursor(page.jobs(page.jobs_size() - 1)));
  return page;
}

bool Terminal(pb::JobState s) { return s == pb::JOB_STATE_SUCCEEDED || s == pb::JOB_STATE_FAILED || s == pb::JOB_STATE_KILLED; }

std::string_view JobStateName(pb::JobState s) {
  switch (s) {
    case pb::JOB_STATE_RUNNING: return "running";
    case pb::JOB_STATE_STOPPING: return "stopping";
    case pb::JOB_STATE_RESTARTING: return "restarting";
    case pb::JOB_STATE_SUCCEEDED: return "succeeded";
    case pb::JOB_STATE_FAILED: return "failed";
    case pb::JOB_STATE_KILLED: return "killed";
    default: return "unknown";
  }
}

pb::JobSummary Summarize(const pb::JobSpec& spec, const std::vector<NodePart>& parts, const Decision& decision) {
  pb::JobSummary s;
  s.set_id(spec.id());
  s.set_name(spec.name());
  s.set_launcher(spec.launcher());
  s.set_user(spec.user());
  s.set_ranks(spec.num_ranks());
  s.set_nodes(static_cast<uint32_t>(spec.nodes_size()));
  s.set_started_unix_ms(spec.created_unix_ms());
  s.set_coordinator(spec.coordinator());
  s.set_attempt(spec.attempt());
  s.set_max_restarts(spec.max_restarts());
  *s.mutable_argv() = spec.argv();
  s.set_argv_cut(spec.argv_cut());

  Decision d = decision;
  const pb::RankState* first = nullptr;
  std::string first_node;
  uint32_t running = 0, ended = 0, seen = 0, helpers_running = 0;
  int64_t last_end = 0;
  for (const NodePart& p : parts) {
    if (!p.job) continue;
    if (d.failure.empty() && !p.job->failure().empty()) {
      d.failure = p.job->failure();
      d.killed = p.job->killed();
    }
    for (const pb::RankState& r : p.job->ranks()) {
      // The job's own ranks are counted; processes its launcher added (MPI daemons) only keep it running.
      if (r.attempt() != spec.attempt()) continue;  // an earlier attempt's (a node that was not in this one)
      const bool own = r.rank() < spec.num_ranks();
      const bool live = r.running() && !p.lost;
      seen += own;
      running += own && live;
      ended += own && !live;
      helpers_running += !own && live;
      last_end = std::max(last_end, r.ended_unix_ms());
      const bool failed = !r.running() && (r.exit_code() != 0 || r.signal() != 0) && !r.stopped();
      if (failed && (!first || r.ended_unix_ms() < first->ended_unix_ms())) {
        first = &r;
        first_node = p.node;
      }
    }
  }
  // Ranks of nodes that never answered (lost) count as ended.
  for (const NodePart& p : parts) {
    if (!p.job && p.lost) ended = std::max(ended, spec.num_ranks() - running);
  }
  for (const NodePart& p : parts) {
    if (!p.job) continue;
    for (const pb::RankState& r : p.job->ranks()) {
      if (r.attempt() != spec.attempt()) continue;
      pb::RankExit* e = s.add_rank_exits();
      e->set_rank(r.rank());
      e->set_node(p.node);
      e->set_running(r.running() && !p.lost);
      e->set_exit_code(r.exit_code());
      e->set_signal(r.signal());
      e->set_stopped(r.stopped());
      e->set_dropped_lines(r.dropped_lines());
      e->set_dropped_bytes(r.dropped_bytes());
    }
  }
  std::sort(s.mutable_rank_exits()->begin(), s.mutable_rank_exits()->end(),
            [](const pb::RankExit& a, const pb::RankExit& b) { return a.rank() < b.rank(); });
  s.set_running(running);
  s.set_exited(std::min(ended, spec.num_ranks()));

  bool failed = false;
  if (d.killed) {
    s.set_failure(d.failure);
    s.set_exit_code(d.exit_code ? d.exit_code : 128 + SIGTERM);
  } else if (first && !d.final) {
    failed = true;
    s.set_exit_code(first->signal() ? 128 + first->signal() : first->exit_code());
    s.set_failure("rank " + std::to_string(first->rank()) + " on " + first_node + " " + RankEnding(*first));
  } else if (!d.failure.empty()) {
    failed = true;
    s.set_failure(d.failure);
    s.set_exit_code(d.exit_code ? d.exit_code : 1);
  }
  const bool decided = d.killed || failed;
  if (running > 0 || (decided && helpers_running > 0)) {
    s.set_state(decided ? pb::JOB_STATE_STOPPING : pb::JOB_STATE_RUNNING);
  } else if (d.killed) {
    s.set_state(pb::JOB_STATE_KILLED);
  } else if (failed) {
    s.set_state(pb::JOB_STATE_FAILED);
  } else if (seen == spec.num_ranks() && ended == seen && helpers_running == 0) {
    s.set_state(pb::JOB_STATE_SUCCEEDED);
  } else {
    s.set_state(pb::JOB_STATE_RUNNING);  // not every node has answered yet
  }
  if (Terminal(s)) s.set_ended_unix_ms(last_end);
  std::vector<const pb::Training*> training;
  for (const NodePart& p : parts) {
    if (p.job && p.job->training().reports() > 0) training.push_back(&p.job->training());
  }
  if (!training.empty()) *s.mutable_training() = LatestTraining(training);
  return s;
}

}  // namespace dlagent::jobs
