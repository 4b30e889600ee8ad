#include "agent/daemon/status_page.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <set>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "agent/jobs/summary.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {

// page/*: embedded by page/embed.cmake.
namespace page {
extern const std::string_view kIndexHtml, kScript, kStyle;
}

namespace {

namespace pb = jobs::v1;
using nlohmann::json;

int64_t UnixMs(WallTime t) { return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count(); }

std::string Dump(const json& j) {
  // Names and output are the users' bytes: what is not UTF-8 is shown as U+FFFD, never an exception.
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

metrics::HttpReply Json(int status, const json& j) { return {status, "application/json", Dump(j), ""}; }

metrics::HttpReply Error(int status, const std::string& why) { return Json(status, json{{"error", why}}); }

// The value of name in an undecoded query ("job=j-1&after=3"); "" when absent.
std::string QueryValue(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
    const size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) return std::string(pair.substr(eq + 1));
  }
  return "";
}

bool JobId(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; });
}

json Training(const pb::Training& t) {
  json values = json::object();
  for (const auto& [name, v] : t.values()) values[name] = std::isfinite(v) ? json(v) : json(nullptr);
  return {{"step", t.step()}, {"step_unix_ms", t.step_unix_ms() > 0 ? json(t.step_unix_ms()) : json(nullptr)}, {"values", values}};
}

json History(const TrainingHistory& h) {
  json points = json::array();
  for (const TrainingPoint& p : h.points()) {
    json values = json::object();
    for (const auto& [name, v] : p.values) values[name] = std::isfinite(v) ? json(v) : json(nullptr);
    points.push_back(json::array({p.unix_ms, p.step, values}));
  }
  return points;
}

json Job(const pb::JobSummary& s, const StatusPageInput& in) {
  json per_node = json::object();
  for (const pb::RankExit& r : s.rank_exits()) per_node[r.node()] = per_node.value(r.node(), 0) + 1;
  json restarts = json::array();
  for (const pb::JobRestart& r : s.restarts()) restarts.push_back({{"attempt", r.attempt()}, {"reason", r.reason()}, {"unix_ms", r.unix_ms()}});
  json j = {{"id", s.id()},
            {"state", std::string(jobs::JobStateName(s.state()))},
            {"launcher", s.launcher()},
            {"ranks", s.ranks()},
            {"running", s.running()},
            {"exited", s.exited()},
            {"nodes", s.nodes()},
            {"ranks_per_node", per_node},
            {"coordinator", s.coordinator()},
            {"attempt", s.attempt()},
            {"max_restarts", s.max_restarts()},
            {"restarts", restarts},
            {"started_unix_ms", s.started_unix_ms()},
            {"ended_unix_ms", s.ended_unix_ms() > 0 ? json(s.ended_unix_ms()) : json(nullptr)},
            {"training", s.has_training() ? Training(s.training()) : json(nullptr)}};
  if (s.ended_unix_ms() > 0) j["exit_code"] = s.exit_code();
  // Names, users, command lines and failures only with the token: /api/status is as open as /metrics.
  if (in.logs_allowed) {
    j["name"] = s.name();
    j["user"] = s.user();
    j["argv"] = json(std::vector<std::string>(s.argv().begin(), s.argv().end()));
    j["failure"] = s.failure();
  }
  auto h = in.history.find(s.id());
  j["history"] = h == in.history.end() ? json::array() : History(*h->second);
  return j;
}

}  // namespace

void TrainingHistory::Add(const pb::Training& latest) {
  if (latest.step_unix_ms() <= 0) return;
  if (!points_.empty()) {
    const TrainingPoint& last = points_.back();
    if (last.step == latest.step() || latest.step_unix_ms() - last.unix_ms < kMinGapMs) return;
  }
  if (points_.size() == kMaxPoints) {
    std::vector<TrainingPoint> kept;
    kept.reserve(kMaxPoints);
    for (size_t i = 0; i < points_.size(); i += 2) kept.push_back(std::move(points_[i]));
    points_ = std::move(kept);
  }
  TrainingPoint p;
  p.unix_ms = latest.step_unix_ms();
  p.step = latest.step();
  p.values.insert(latest.values().begin(), latest.values().end());
  points_.push_back(std::move(p));
}

std::string StatusPageJson(const StatusPageInput& in) {
  const StatusSnapshot& st = in.status;
  json out;
  out["agent"] = {{"instance_id", st.identity.instance_id},
                  {"address", st.identity.local_ipv4},
                  {"instance_type", st.identity.instance_type},
                  {"availability_zone", st.identity.availability_zone},
                  {"gpus", st.identity.gpu_count},
                  {"cluster", st.cluster_name},
                  {"phase", std::string(AgentPhaseName(st.phase))},
                  {"detail", st.phase_detail},
                  {"version", st.version},
                  {"uptime_ms", st.uptime_ms},
                  {"started_unix_ms", st.started_unix_ms},
                  {"ready_after_ms", st.ready_after_ms >= 0 ? json(st.ready_after_ms) : json(nullptr)}};
  json timeline = json::array();
  for (size_t i = 0; i < st.phases.size(); ++i) {
    const PhaseMark& m = st.phases[i];
    const bool last = i + 1 == st.phases.size();
    timeline.push_back({{"phase", std::string(AgentPhaseName(m.phase))},
                        {"at_ms", m.at_ms},
                        {"took_ms", last ? json(nullptr) : json(st.phases[i + 1].at_ms - m.at_ms)}});
  }
  out["timeline"] = timeline;
  if (in.members.enabled) {
    json members = json::array();
    for (const MemberSnapshot& m : in.members.members) {
      members.push_back({{"name", m.name},
                         {"state", m.status},
                         {"role", m.role},
                         {"gpus", m.gpus},
                         {"address", m.address},
                         {"incarnation", m.incarnation},
                         {"flaps", m.flaps},
                         {"availability_zone", m.availability_zone},
                         {"version", m.version},
                         {"changed_ms_ago", m.last_change_ms_ago}});
    }
    out["members"] = members;
  } else {
    out["members"] = nullptr;
  }
  if (st.cluster) {
    const ClusterSnapshot& c = *st.cluster;
    json nodes = json::array();
    for (const RosterMemberSnapshot& r : c.roster) {
      nodes.push_back({{"rank", r.rank}, {"instance_id", r.instance_id}, {"ip", r.ip}, {"gpus", r.gpus}, {"role", r.role}, {"prepared", r.prepared}});
    }
    out["roster"] = {{"generation", c.generation}, {"leader", c.leader},   {"sealed_by", c.sealed_by}, {"rank", c.rank}, {"alive", c.alive},
                     {"expected", c.expected},     {"failure", c.failure}, {"dead", c.dead},           {"nodes", nodes}};
  } else {
    out["roster"] = nullptr;
  }
  json generations = json::array();
  for (const auto& g : in.generations)
    generations.push_back({{"generation", g.generation}, {"first_seen_unix_ms", g.first_seen_unix_ms}, {"members", g.members}});
  out["generations"] = generations;
  if (in.jobs) {
    json list = json::array();
    for (const pb::JobSummary& s : in.jobs->jobs()) list.push_back(Job(s, in));
    out["jobs"] = {{"as_of_unix_ms", in.jobs_unix_ms},
                   {"error", in.jobs_error},
                   {"unreachable", json(std::vector<std::string>(in.jobs->unreachable().begin(), in.jobs->unreachable().end()))},
                   {"list", list}};
  } else {
    out["jobs"] = in.jobs_error.empty() ? json(nullptr) : json{{"error", in.jobs_error}, {"list", nullptr}};
  }
  if (in.dlps) {
    json points = json::array();
    for (const DlpsPoint& p : *in.dlps) points.push_back(json::array({p.unix_ms, p.bytes_in, p.bytes_out, p.rounds}));
    out["dlps"] = {{"points", points}};
  } else {
    out["dlps"] = nullptr;
  }
  out["logs"] = in.logs_allowed;
  return Dump(out);
}

StatusPage::StatusPage(Env& env, StatusPageSources sources, std::string token)
    : env_(env), src_(std::move(sources)), token_(std::move(token)), viewed_until_(env.NowMono()) {
  thread_ = std::thread([this] { Loop(); });
}

StatusPage::~StatusPage() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StatusPage::Loop() {
  MutexLock lock(mu_);
  while (!stop_) {
    lock.Unlock();
    Refresh();
    lock.Lock();
    cv_.wait_for(lock.native(), kRefresh, [&]() NO_THREAD_SAFETY_ANALYSIS { return stop_; });
  }
}

void StatusPage::Refresh() {
  const StatusSnapshot st = src_.status();
  const MonoTime now = env_.NowMono();
  const int64_t now_unix_ms = UnixMs(env_.NowWall());
  std::shared_ptr<jobs::Jobs> jobs = src_.jobs();
  const std::optional<DlpsPoint> dlps = src_.dlps ? src_.dlps() : std::nullopt;
  bool viewed = false;
  std::vector<std::pair<std::string, pb::JobOutputRequest>> asks;
  {
    MutexLock lock(mu_);
    if (st.cluster && st.cluster->generation > 0 && (generations_.empty() || generations_.back().generation != st.cluster->generation)) {
      if (generations_.size() == 64) generations_.erase(generations_.begin() + 1);
      generations_.push_back({st.cluster->generation, now_unix_ms, st.cluster->roster.size()});
    }
    viewed = now < viewed_until_;
    if (dlps) {
      if (dlps_.size() == kMaxDlpsPoints) dlps_.pop_front();
      dlps_.push_back(*dlps);
      dlps_.back().unix_ms = now_unix_ms;
    }
    for (auto it = tails_.begin(); it != tails_.end();) {
      if (now >= it->second.wanted_until) {
        it = tails_.erase(it);
        continue;
      }
      pb::JobOutputRequest r;
      r.set_job(it->first);
      r.set_rank(-1);
      r.mutable_after_seq()->insert(it->second.after.begin(), it->second.after.end());
      if (!it->second.started) r.set_tail(static_cast<uint32_t>(kMaxTailLines));
      asks.emplace_back(it->first, std::move(r));
      ++it;
    }
  }
  if (!jobs) return;
  // Outside the lock: these ask other agents (each call with a deadline).
  const jobs::Jobs::Metrics local = jobs->metrics();
  std::optional<Result<pb::JobList>> listed;
  if (viewed) listed = jobs->ListAll(PeerCredentials{});  // as root: every job
  std::vector<std::pair<std::string, Result<pb::JobOutputReply>>> outputs;
  for (auto& [job, req] : asks) outputs.emplace_back(job, jobs->Output(req, PeerCredentials{}));

  MutexLock lock(mu_);
  std::set<std::string> keep;
  for (const auto& [id, t] : local.training) {
    history_[id].Add(t);
    keep.insert(id);
  }
  if (listed) {
    if (listed->ok()) {
      jobs_ = std::move(**listed);
      // The oldest ended jobs give way past kMaxJobs (the list is oldest first).
      auto* all = jobs_->mutable_jobs();
      for (int i = 0, ended = 0, over = all->size() - kMaxJobs; i < all->size() && ended < over; ++i) {
        if (jobs::Terminal(all->Get(i))) all->Mutable(i)->clear_id(), ++ended;
      }
      all->erase(std::remove_if(all->begin(), all->end(), [](const pb::JobSummary& s) { return s.id().empty(); }), all->end());
      jobs_unix_ms_ = now_unix_ms;
      jobs_error_.clear();
    } else {
      jobs_error_ = listed->status().ToString();
    }
  }
  if (jobs_) {
    for (const pb::JobSummary& s : jobs_->jobs()) {
      const bool recent = s.ended_unix_ms() == 0 ||
                          now_unix_ms - s.ended_unix_ms() < std::chrono::duration_cast<std::chrono::milliseconds>(jobs::Jobs::kTrainingKept).count();
      if (!recent) continue;
      keep.insert(s.id());
      // A job without ranks here: its chart follows the cluster's latest report.
      if (s.has_training() && local.training.count(s.id()) == 0) history_[s.id()].Add(s.training());
    }
  }
  std::erase_if(history_, [&](const auto& h) { return keep.count(h.first) == 0; });
  for (auto& [job, reply] : outputs) {
    auto it = tails_.find(job);
    if (it == tails_.end()) continue;
    Tail& t = it->second;
    if (!reply.ok()) {
      t.error = reply.status().ToString();
      continue;
    }
    t.error.clear();
    t.started = true;
    for (const auto& [node, seq] : reply->after_seq()) t.after[node] = seq;
    for (const pb::OutputLine& l : reply->lines()) t.lines.push_back(l);
    while (t.lines.size() > kMaxTailLines) {
      t.lines.pop_front();
      ++t.first_seq;
    }
  }
}

std::optional<metrics::HttpReply> StatusPage::Serve(const metrics::HttpRequest& req) {
  if (req.path == "/" || req.path == "/index.html") return metrics::HttpReply{200, "text/html; charset=utf-8", std::string(page::kIndexHtml), ""};
  if (req.path == "/page.js") return metrics::HttpReply{200, "text/javascript; charset=utf-8", std::string(page::kScript), ""};
  if (req.path == "/page.css") return metrics::HttpReply{200, "text/css; charset=utf-8", std::string(page::kStyle), ""};
  const bool authorized = ConstantTimeEquals(req.authorization, "Bearer " + token_);
  if (req.path == "/api/logs") return Logs(req, authorized);
  if (req.path != "/api/status") return std::nullopt;
  StatusPageInput in;
  in.status = src_.status();
  in.members = src_.members();
  in.logs_allowed = authorized;
  bool first_look = false;
  MutexLock lock(mu_);
  first_look = env_.NowMono() >= viewed_until_;
  viewed_until_ = env_.NowMono() + kViewed;
  in.jobs = jobs_;
  in.jobs_unix_ms = jobs_unix_ms_;
  in.jobs_error = jobs_error_;
  for (const auto& [id, h] : history_) in.history[id] = &h;
  in.generations = generations_;
  if (src_.dlps) in.dlps.emplace(dlps_.begin(), dlps_.end());
  std::string body = StatusPageJson(in);
  lock.Unlock();
  if (first_look) cv_.notify_all();  // ask the cluster now, not at the next turn
  lock.Lock();
  return metrics::HttpReply{200, "application/json", std::move(body), ""};
}

metrics::HttpReply StatusPage::Logs(const metrics::HttpRequest& req, bool authorized) {
  if (!authorized) {
    return Error(401, "the output of jobs needs the page token: open the URL `agentctl page` prints (as root)");
  }
  const std::string job = QueryValue(req.query, "job");
  if (!JobId(job)) return Error(400, "job=ID is missing or not a job id");
  uint64_t after = 0;
  if (const std::string a = QueryValue(req.query, "after"); !a.empty()) {
    if (a.size() > 19 || !std::all_of(a.begin(), a.end(), [](char c) { return c >= '0' && c <= '9'; })) return Error(400, "after=N is not a number");
    after = std::stoull(a);
  }
  bool fresh = false;
  MutexLock lock(mu_);
  auto it = tails_.find(job);
  if (it == tails_.end()) {
    if (tails_.size() >= kMaxFollowed)
      return Error(503, "the page follows " + std::to_string(kMaxFollowed) + " jobs' output already; close a page and retry");
    it = tails_.emplace(job, Tail{}).first;
    fresh = true;
  }
  Tail& t = it->second;
  t.wanted_until = env_.NowMono() + kViewed;
  json lines = json::array();
  const uint64_t from = std::max(after, t.first_seq);
  for (uint64_t seq = from; seq < t.first_seq + t.lines.size(); ++seq) {
    const pb::OutputLine& l = t.lines[seq - t.first_seq];
    lines.push_back({{"seq", seq}, {"node", l.node()}, {"rank", l.rank()}, {"stderr", l.stderr()}, {"text", l.text()}, {"unix_ms", l.unix_ms()}});
  }
  json out = {
      {"job", job}, {"lines", lines}, {"next", t.first_seq + t.lines.size()}, {"skipped", after > 0 && after < t.first_seq}, {"error", t.error}};
  lock.Unlock();
  if (fresh) cv_.notify_all();
  lock.Lock();
  return Json(200, out);
}

}  // namespace dlagent
