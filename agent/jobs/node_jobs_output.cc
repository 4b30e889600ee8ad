// NodeJobs, its part that holds the ranks' output: reading the pipes into lines, the buffers and their bounds
// in lines and bytes, and the queries over them (node_jobs.h). The processes themselves are node_jobs.cc's.
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "agent/jobs/node_jobs.h"  // the class this file completes
#include "agent/jobs/summary.h"
#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::jobs {

size_t NodeJobs::HeldBytes() const {
  MutexLock lock(mu_);
  return held_bytes_;
}

NodeJobs::Counters NodeJobs::counters() const {
  MutexLock lock(mu_);
  Counters c = counters_;
  c.ranks_running = RunningRanks();
  c.held_bytes = held_bytes_;
  return c;
}

pb::NodeJob NodeJobs::Describe(const Job& job, bool with_lines, uint64_t after, uint32_t max_lines) const {
  pb::NodeJob out;
  *out.mutable_spec() = job.spec;
  out.set_node(o_.node);
  for (const Rank& r : job.ranks) {
    if (r.state.attempt() == job.spec.attempt()) *out.add_ranks() = r.state;  // earlier attempts' output only
  }
  out.set_failure(job.failure);
  out.set_killed(job.killed);
  out.set_next_seq(job.next_seq);
  out.set_ended(job.ended != MonoTime::max());
  out.set_version(job.version);
  out.set_leaving(leaving_);
  if (job.training.reports() > 0) *out.mutable_training() = job.training;
  if (!with_lines) return out;
  // Every rank's held lines after the cursor, in the order they were read.
  std::vector<const pb::LogLine*> held;
  for (const Rank& r : job.ranks) {
    auto from = std::lower_bound(r.lines.begin(), r.lines.end(), after + 1, [](const pb::LogLine& l, uint64_t seq) { return l.seq() < seq; });
    for (; from != r.lines.end(); ++from) held.push_back(&*from);
  }
  std::sort(held.begin(), held.end(), [](const pb::LogLine* a, const pb::LogLine* b) { return a->seq() < b->seq(); });
  uint64_t next = job.next_seq;  // the cursor after this reply: past everything, unless a limit stops it early
  size_t bytes = 0;              // a reply stays far below the RPC's message limit
  for (const pb::LogLine* l : held) {
    if (out.lines_size() >= static_cast<int>(max_lines) || bytes >= (1 << 20)) {
      next = l->seq();
      break;
    }
    bytes += l->text().size() + 32;
    *out.add_lines() = *l;
  }
  // Lines between the cursor and the next one that no rank's buffer holds any more.
  const uint64_t span = next > after + 1 ? next - 1 - after : 0;  // a cursor from the future holds nothing
  out.set_dropped(span - std::min<uint64_t>(span, static_cast<uint64_t>(out.lines_size())));
  out.set_next_seq(next);
  return out;
}

bool NodeJobs::Live(const std::string& job, Duration grace) const {
  MutexLock lock(mu_);
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return Prepared(job).has_value();
  return it->second->ended == MonoTime::max() || std::chrono::steady_clock::now() - it->second->ended < grace;
}

std::optional<uint32_t> NodeJobs::Prepared(const std::string& job) const {
  auto it = prepared_.find(job);
  if (it == prepared_.end() || std::chrono::steady_clock::now() - it->second.at > kPreparedFor) return std::nullopt;
  return it->second.uid;
}

std::optional<uint32_t> NodeJobs::Owner(const std::string& job) const {
  MutexLock lock(mu_);
  auto it = jobs_.find(job);
  if (it == jobs_.end()) return Prepared(job);
  return it->second->spec.uid();
}

Result<pb::QueryReply> NodeJobs::Query(const pb::QueryRequest& req) {
  MutexLock lock(mu_);
  pb::QueryReply reply;
  if (req.job().empty()) {
    for (const auto& [id, job] : jobs_) {
      pb::NodeJob* j = reply.add_jobs();
      *j = Describe(*job, false, 0, 0);
      Brief(j->mutable_spec());  // a list: every job's, so each one short
    }
    return reply;
  }
  auto it = jobs_.find(req.job());
  if (it == jobs_.end()) return Status::NotFound("jobs", "no job " + req.job() + " on " + o_.node);
  *reply.add_jobs() = Describe(*it->second, req.max_lines() > 0, req.after_seq(), std::min<uint32_t>(req.max_lines(), 10000));
  return reply;
}

void NodeJobs::AddLine(Job& job, Rank& rank, bool stderr_stream, std::string text, std::vector<Echo>& echo) {
  if (o_.journal) {
    // Consecutive lines of one rank's stream go to the log as one record (one journal entry): a record a line
    // would cost more than everything else a line costs.
    if (echo.empty() || echo.back().rank != rank.state.rank() || echo.back().stderr_stream != stderr_stream ||
        echo.back().text.size() >= kEchoBatchBytes || echo.back().job != job.spec.id()) {
      echo.push_back({job.spec.id(), rank.state.rank(), stderr_stream, "job " + job.spec.id() + " rank " + std::to_string(rank.state.rank()) + ": "});
    } else {
      echo.back().text += '\n';
    }
    echo.back().text += text;
  }
  pb::LogLine line;
  line.set_seq(job.next_seq++);
  line.set_rank(rank.state.rank());
  line.set_stderr(stderr_stream);
  line.set_text(std::move(text));
  line.set_unix_ms(swim::NowUnixMs());
  const size_t cost = line.text().size() + kLineOverhead;
  ++counters_.output_lines;
  counters_.output_bytes += line.text().size();
  rank.lines.push_back(std::move(line));
  rank.held_bytes += cost;
  held_bytes_ += cost;
  while (rank.lines.size() > o_.max_lines_per_rank || rank.held_bytes > o_.max_bytes_per_rank) DropOldest(rank);
  if (held_bytes_ > o_.max_bytes) Shed(rank);
}

void NodeJobs::DropOldest(Rank& rank) {
  const size_t cost = rank.lines.front().text().size() + kLineOverhead;
  rank.lines.pop_front();
  rank.held_bytes -= cost;
  held_bytes_ -= cost;
  ++counters_.dropped_lines;
  rank.state.set_dropped_lines(rank.state.dropped_lines() + 1);
  rank.state.set_dropped_bytes(rank.state.dropped_bytes() + cost - kLineOverhead);
}

void NodeJobs::Shed(Rank& rank) {
  // The jobs that ended first give up their lines first: who is still looking at a job is more likely to
  // look at the running ones.
  if (finished_bytes_ > 0) {
    std::vector<Job*> finished;
    for (auto& [id, job] : jobs_) {
      if (job->ended != MonoTime::max()) finished.push_back(job.get());
    }
    std::sort(finished.begin(), finished.end(), [](const Job* a, const Job* b) { return a->ended < b->ended; });
    for (Job* job : finished) {
      for (Rank& r : job->ranks) {
        finished_bytes_ -= r.held_bytes;
        while (!r.lines.empty()) DropOldest(r);
      }
      if (held_bytes_ <= o_.max_bytes) return;
    }
  }
  // Then the rank that writes: the others' lines stay (its newest line always fits, max_line_bytes being
  // below max_bytes).
  while (held_bytes_ > o_.max_bytes && rank.lines.size() > 1) DropOldest(rank);
}

size_t NodeJobs::Drain(Job& job, Rank& rank, Stream& s, bool stderr_stream, std::vector<Echo>& echo) {
  char buf[16384];
  size_t total = 0;
  for (int round = 0; round < 8; ++round) {  // at most 128 KiB a stream a turn: one chatty rank cannot starve the rest
    const ssize_t n = ::read(s.fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR)) continue;
    if (n < 0 && errno == EAGAIN) return total;
    if (n <= 0) {
      if (!s.partial.empty()) AddLine(job, rank, stderr_stream, std::move(s.partial), echo);
      s.partial.clear();
      ::close(s.fd);
      s.fd = -1;
      return total;
    }
    total += static_cast<size_t>(n);
    s.partial.append(buf, static_cast<size_t>(n));
    size_t start = 0;
    for (;;) {
      const size_t nl = s.partial.find('\n', start);
      if (nl == std::string::npos) break;
      AddLine(job, rank, stderr_stream, s.partial.substr(start, nl - start), echo);
      start = nl + 1;
    }
    s.partial.erase(0, start);
    while (s.partial.size() >= o_.max_line_bytes) {
      AddLine(job, rank, stderr_stream, s.partial.substr(0, o_.max_line_bytes), echo);
      s.partial.erase(0, o_.max_line_bytes);
    }
  }
  return total;
}

}  // namespace dlagent::jobs
