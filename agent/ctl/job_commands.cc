#include "agent/ctl/job_commands.h"

#include <signal.h>
#include <string.h>

#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/ctl/control_client.h"
#include "agent/jobs/launch.h"   // kMaxPerNode
#include "agent/jobs/summary.h"  // Terminal, JobStateName
#include "bootstrap/common/duration.h"

namespace dlagent {
namespace {

namespace jpb = ::dlagent::jobs::v1;
using jobs::Terminal;
using namespace std::chrono;

constexpr auto kPoll = milliseconds(200);

Result<std::unique_ptr<ControlClient>> Dial(const CtlOptions& opts) {
  ASSIGN_OR_RETURN(Duration timeout, ParseDuration(opts.timeout));
  return ControlClient::Connect(opts.socket, timeout);
}

int Fail(std::ostream& err, const Status& st, int code = 1) {
  err << "agentctl: " << st.message() << "\n";
  return code;
}

std::string Ago(int64_t unix_ms) {
  const int64_t now = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  return FormatDuration(milliseconds(std::max<int64_t>(0, now - unix_ms)));
}

// Prints the lines of one reply: "[rank node] text", stdout lines to out and stderr lines to err; the text
// through ForTerminal unless raw.
void Print(const jpb::JobOutputReply& r, bool raw, std::ostream& out, std::ostream& err) {
  for (const jpb::OutputLine& l : r.lines()) {
    (l.stderr() ? err : out) << "[" << l.rank() << " " << l.node() << "] " << (raw ? l.text() : ForTerminal(l.text())) << "\n";
  }
  if (r.dropped() > 0) err << "agentctl: " << r.dropped() << " lines no longer held by the nodes were skipped\n";
  out.flush();
  err.flush();
}

// Polls a job's output until it ends (follow) or once; returns the last summary.
Result<jpb::JobSummary> Stream(ControlClient& client, jpb::JobOutputRequest req, bool follow, bool raw, const std::atomic<int>& interrupted,
                               const std::function<void()>& on_interrupt, std::ostream& out, std::ostream& err) {
  int failures = 0, handled = 0;
  std::set<std::string> warned;  // nodes said to be unreachable, once each
  int restarts_told = -1;        // the restarts already said (-1: none seen yet, so that older ones are told once)
  uint32_t attempt_told = 0;
  for (;;) {
    if (interrupted.load() > handled) {
      handled = interrupted.load();
      if (handled >= 2 || !on_interrupt) return Status(StatusCode::kCancelled, "agentctl", "interrupted");
      on_interrupt();
    }
    Result<jpb::JobOutputReply> r = client.JobOutput(req);
    if (!r.ok()) {
      // A slow or restarting agent is retried for a while; the job runs on regardless.
      if (++failures >= 10 || r.status().code() == StatusCode::kNotFound || r.status().code() == StatusCode::kPermissionDenied) return r.status();
      std::this_thread::sleep_for(kPoll);
      continue;
    }
    failures = 0;
    Print(*r, raw, out, err);
    for (const std::string& node : r->unreachable()) {
      if (warned.insert(node).second) err << "agentctl: node " << node << " does not answer; its lines are missing\n";
    }
    *req.mutable_after_seq() = r->after_seq();
    req.set_tail(0);
    if (!follow) return r->summary();
    const jpb::JobSummary& s = r->summary();
    if (restarts_told < 0)
      restarts_told = s.state() == jpb::JOB_STATE_RESTARTING ? s.restarts_size() - 1 : s.restarts_size(), attempt_told = s.attempt();
    for (; restarts_told < s.restarts_size(); ++restarts_told) {
      const jpb::JobRestart& x = s.restarts(restarts_told);
      err << "agentctl: job " << s.id() << " attempt " << x.attempt() << " failed: " << ForTerminal(x.reason()) << "; restarting ("
          << restarts_told + 1 << " of " << s.max_restarts() << ")\n";
    }
    if (s.attempt() > attempt_told && s.state() != jpb::JOB_STATE_RESTARTING) {
      attempt_told = s.attempt();
      err << "agentctl: job " << s.id() << " attempt " << s.attempt() << ": " << s.ranks() << (s.ranks() == 1 ? " rank" : " ranks") << " on "
          << s.nodes() << (s.nodes() == 1 ? " node" : " nodes") << "\n";
    }
    if (Terminal(r->summary())) {
      // The last lines may reach their node's buffer after the state: one more look.
      if (Result<jpb::JobOutputReply> last = client.JobOutput(req); last.ok()) Print(*last, raw, out, err);
      return r->summary();
    }
    if (r->lines_size() == 0) std::this_thread::sleep_for(kPoll);
  }
}

nlohmann::json Restarts(const jpb::JobSummary& s) {
  nlohmann::json out = nlohmann::json::array();
  for (const jpb::JobRestart& r : s.restarts()) {
    out.push_back({{"attempt", r.attempt()}, {"reason", r.reason()}, {"unix_ms", r.unix_ms()}, {"nodes", r.nodes()}});
  }
  return out;
}

// What the ranks reported (null: nothing yet).
nlohmann::json Training(const jpb::JobSummary& s) {
  if (!s.has_training()) return nullptr;
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [name, v] : s.training().values()) values[name] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(std::to_string(v));
  return {{"step", s.training().step()}, {"step_unix_ms", s.training().step_unix_ms()}, {"values", values}, {"reports", s.training().reports()}};
}

nlohmann::json RankExits(const jpb::JobSummary& s) {
  nlohmann::json out = nlohmann::json::array();
  for (const jpb::RankExit& e : s.rank_exits()) {
    nlohmann::json r = {{"rank", e.rank()}, {"node", e.node()}, {"running", e.running()}};
    if (!e.running()) {
      r["exit_code"] = e.exit_code();
      r["signal"] = e.signal();
      r["stopped"] = e.stopped();
    }
    r["dropped_lines"] = e.dropped_lines();
    r["dropped_bytes"] = e.dropped_bytes();
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

Result<int> ParseSignal(const std::string& s) {
  if (s.empty()) return SIGTERM;
  if (std::isdigit(static_cast<unsigned char>(s[0]))) {
    int n = 0;
    size_t used = 0;
    try {
      n = std::stoi(s, &used);
    } catch (...) {
      used = 0;
    }
    if (used == s.size() && n > 0 && n < NSIG) return n;
  } else {
    const std::string name = s.rfind("SIG", 0) == 0 ? s.substr(3) : s;
    for (int sig = 1; sig < NSIG; ++sig) {
      const char* abbrev = ::sigabbrev_np(sig);
      if (abbrev && name == abbrev) return sig;
    }
  }
  return Status::InvalidArgument("agentctl", "--signal " + s + " is not a signal (TERM, KILL, INT, USR1, or a number)");
}

int RunRun(const CtlOptions& ctl, const RunOptions& o, const std::atomic<int>& interrupted, std::ostream& out, std::ostream& err) {
  jpb::RunJobRequest req;
  req.set_name(o.name);
  req.set_launcher(o.launcher);
  if (o.per_node == "gpus") {
    req.set_per_node(0);
  } else {
    size_t used = 0;
    int k = 0;
    try {
      k = std::stoi(o.per_node, &used);
    } catch (...) {
      used = 0;
    }
    if (used != o.per_node.size() || k < 1 || k > static_cast<int>(jobs::kMaxPerNode)) {
      err << "agentctl: --per-node " << o.per_node << ": give a number of processes a node (1-" << jobs::kMaxPerNode << ") or gpus\n";
      return 2;
    }
    req.set_per_node(static_cast<uint32_t>(k));
  }
  for (const std::string& n : o.nodes) req.add_nodes(n);
  for (const std::string& e : o.env) req.add_env(e);
  req.set_workdir(o.workdir);
  req.set_user(o.user);
  req.set_restarts(o.restarts);
  req.set_min_nodes(o.min_nodes);
  for (const std::string& a : o.argv) req.add_argv(a);
  for (const auto& [flag, text, field] : {std::tuple{"--grace", &o.grace, 0}, std::tuple{"--timeout", &o.timeout, 1}}) {
    Result<Duration> d = ParseDuration(*text);
    if (!d.ok()) {
      err << "agentctl: " << flag << ": " << d.status().message() << "\n";
      return 2;
    }
    const int64_t ms = duration_cast<milliseconds>(*d).count();
    if (field == 0)
      req.set_grace_ms(ms);
    else
      req.set_timeout_ms(ms);
  }
  if (o.argv.empty()) {
    err << "agentctl: no command: agentctl run [options] -- CMD ARGS...\n";
    return 2;
  }
  if (!o.wait_ready.empty()) {
    CtlOptions w = ctl;
    w.wait_timeout = o.wait_ready;
    w.quiet = true;
    std::ostringstream ignored;
    if (const int rc = RunWait(w, ignored, err); rc != 0) return rc == 3 || rc == 4 || rc == 5 ? 2 : rc;
  }
  Result<std::unique_ptr<ControlClient>> client = Dial(ctl);
  if (!client.ok()) return Fail(err, client.status());
  Result<jpb::JobSummary> job = (*client)->RunJob(req);
  if (!job.ok()) {
    const StatusCode c = job.status().code();
    return Fail(err, job.status(), c == StatusCode::kUnavailable || c == StatusCode::kDeadlineExceeded ? 1 : 2);
  }
  if (o.detach) {
    out << job->id() << "\n";
    return 0;
  }
  err << "agentctl: job " << job->id() << " (" << ForTerminal(job->name()) << "): " << job->ranks() << (job->ranks() == 1 ? " rank" : " ranks")
      << " on " << job->nodes() << (job->nodes() == 1 ? " node" : " nodes") << "; Ctrl-C stops it everywhere\n";
  jpb::JobOutputRequest oreq;
  oreq.set_job(job->id());
  oreq.set_rank(-1);
  bool stopping = false;
  auto stop = [&] {
    stopping = true;
    err << "agentctl: stopping job " << job->id() << " on every node (Ctrl-C again to stop waiting)\n";
    jpb::KillJobRequest k;
    k.set_job(job->id());
    if (Result<jpb::KillJobReply> r = (*client)->KillJob(k); !r.ok()) err << "agentctl: " << r.status().message() << "\n";
  };
  Result<jpb::JobSummary> end = Stream(**client, oreq, true, o.raw, interrupted, stop, out, err);
  if (!end.ok()) {
    if (end.status().code() == StatusCode::kCancelled) {
      err << "agentctl: stopped waiting; job " << job->id() << " is being stopped (agentctl jobs shows it)\n";
      return 130;
    }
    return Fail(err, end.status());
  }
  if (end->state() == jpb::JOB_STATE_SUCCEEDED) return 0;
  err << "agentctl: job " << end->id() << " " << jobs::JobStateName(end->state()) << ": " << ForTerminal(end->failure()) << " (exit "
      << end->exit_code() << ")\n";
  if (stopping) return 130;
  return end->exit_code() == 0 ? 1 : end->exit_code();
}

int RunJobs(const CtlOptions& ctl, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<ControlClient>> client = Dial(ctl);
  if (!client.ok()) return Fail(err, client.status());
  Result<jpb::JobList> list = (*client)->ListJobs();
  if (!list.ok()) return Fail(err, list.status());
  if (ctl.json) {
    nlohmann::json j = nlohmann::json::array();
    for (const jpb::JobSummary& s : list->jobs()) {
      j.push_back({{"id", s.id()},
                   {"name", s.name()},
                   {"state", std::string(jobs::JobStateName(s.state()))},
                   {"launcher", s.launcher()},
                   {"user", s.user()},
                   {"ranks", s.ranks()},
                   {"running", s.running()},
                   {"exited", s.exited()},
                   {"nodes", s.nodes()},
                   {"started_unix_ms", s.started_unix_ms()},
                   {"ended_unix_ms", s.ended_unix_ms()},
                   {"exit_code", s.exit_code()},
                   {"failure", s.failure()},
                   {"coordinator", s.coordinator()},
                   {"argv", s.argv()},
                   {"argv_cut", s.argv_cut()},
                   {"rank_exits", RankExits(s)},
                   {"attempt", s.attempt()},
                   {"max_restarts", s.max_restarts()},
                   {"restarts", Restarts(s)},
                   {"training", Training(s)}});
    }
    out << nlohmann::json({{"jobs", j}, {"unreachable", list->unreachable()}}).dump(2) << "\n";
  } else {
    std::ostringstream t;
    auto row = [&](const std::string& a, const std::string& b, const std::string& c, const std::string& d, const std::string& e, const std::string& f,
                   const std::string& g, const std::string& step, const std::string& h) {
      t << std::left << std::setw(16) << a << std::setw(16) << b << std::setw(17) << c << std::setw(20) << d << std::setw(10) << e << std::setw(10)
        << f << std::setw(10) << g << std::setw(18) << step << h << "\n";
    };
    row("ID", "NAME", "STATE", "RANKS", "USER", "STARTED", "DURATION", "STEP", "EXIT");
    size_t running = 0;
    for (const jpb::JobSummary& s : list->jobs()) {
      const bool done = Terminal(s);
      running += !done;
      const int64_t end = done ? s.ended_unix_ms() : duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
      // With --restarts, the state says the restarts used of those allowed: "running r1/2".
      const std::string restarts = s.max_restarts() > 0 ? " r" + std::to_string(s.restarts_size()) + "/" + std::to_string(s.max_restarts()) : "";
      row(ForTerminal(s.id()), ForTerminal(s.name()), std::string(jobs::JobStateName(s.state())) + restarts,
          std::to_string(s.running()) + " run, " + std::to_string(s.exited()) + "/" + std::to_string(s.ranks()) + " out", ForTerminal(s.user()),
          Ago(s.started_unix_ms()) + " ago", FormatDuration(milliseconds(std::max<int64_t>(0, end - s.started_unix_ms()))),
          // The last step the ranks reported (DLAGENT_METRICS_SOCKET) and how long ago: a stuck trainer shows.
          s.training().step_unix_ms() > 0 ? std::to_string(s.training().step()) + " (" + Ago(s.training().step_unix_ms()) + " ago)" : "-",
          done ? std::to_string(s.exit_code()) + (s.failure().empty() ? "" : " " + ForTerminal(s.failure())) : "-");
    }
    out << t.str();
    if (running > 1) out << running << " jobs are running at once\n";
    for (const std::string& n : list->unreachable()) err << "agentctl: node " << n << " did not answer; its jobs may be missing\n";
  }
  return 0;
}

int RunLogs(const CtlOptions& ctl, const LogsOptions& o, const std::atomic<int>& interrupted, std::ostream& out, std::ostream& err) {
  Result<std::unique_ptr<ControlClient>> client = Dial(ctl);
  if (!client.ok()) return Fail(err, client.status());
  jpb::JobOutputRequest req;
  req.set_job(o.job);
  req.set_rank(o.rank);
  req.set_node(o.node);
  req.set_tail(o.tail);
  Result<jpb::JobSummary> end = Stream(**client, req, o.follow, o.raw, interrupted, nullptr, out, err);
  if (!end.ok()) return end.status().code() == StatusCode::kCancelled ? 130 : Fail(err, end.status());
  return 0;
}

int RunKill(const CtlOptions& ctl, const std::string& job, const std::string& signal, std::ostream& out, std::ostream& err) {
  Result<int> sig = ParseSignal(signal);
  if (!sig.ok()) return Fail(err, sig.status(), 2);
  Result<std::unique_ptr<ControlClient>> client = Dial(ctl);
  if (!client.ok()) return Fail(err, client.status());
  jpb::KillJobRequest req;
  req.set_job(job);
  req.set_signal(*sig);
  Result<jpb::KillJobReply> r = (*client)->KillJob(req);
  if (!r.ok()) return Fail(err, r.status(), r.status().code() == StatusCode::kNotFound || r.status().code() == StatusCode::kPermissionDenied ? 2 : 1);
  out << "signalled " << r->signalled() << " rank" << (r->signalled() == 1 ? "" : "s") << " of job " << job << "\n";
  return 0;
}

std::vector<jpb::JobSummary> StuckJobs(const jpb::JobList& list, int64_t now_unix_ms, Duration stuck_after) {
  std::vector<jpb::JobSummary> out;
  const int64_t limit = duration_cast<milliseconds>(stuck_after).count();
  for (const jpb::JobSummary& s : list.jobs()) {
    if (s.state() == jpb::JOB_STATE_RUNNING && s.training().step_unix_ms() > 0 && now_unix_ms - s.training().step_unix_ms() > limit) out.push_back(s);
  }
  return out;
}

int RunHealth(const CtlOptions& ctl, const std::string& workdir, const std::string& stuck_after, std::ostream& out, std::ostream& err) {
  Result<Duration> stuck_limit = ParseDuration(stuck_after);
  if (!stuck_limit.ok()) {
    err << "agentctl: --stuck-after: " << stuck_limit.status().message() << "\n";
    return 2;
  }
  Result<std::unique_ptr<ControlClient>> client = Dial(ctl);
  if (!client.ok()) return Fail(err, client.status());
  jpb::HealthCheckRequest req;
  req.set_workdir(workdir);
  Result<jpb::HealthReport> r = (*client)->CheckHealth(req);
  if (!r.ok()) return Fail(err, r.status());
  // A stuck trainer: the jobs as the caller may see them (a job list that cannot be had judges none).
  Result<jpb::JobList> list = (*client)->ListJobs();
  const int64_t now_ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  const std::vector<jpb::JobSummary> stuck = list.ok() ? StuckJobs(*list, now_ms, *stuck_limit) : std::vector<jpb::JobSummary>();
  if (ctl.json) {
    nlohmann::json nodes = nlohmann::json::array();
    for (const jpb::NodeHealth& h : r->nodes()) {
      const jpb::HealthReply& n = h.reply();
      nodes.push_back({{"rank", h.rank()},
                       {"node", h.node()},
                       {"ip", h.ip()},
                       {"ok", h.ok()},
                       {"failures", h.failures()},
                       {"round_trip_us", h.round_trip_us()},
                       {"clock_offset_ms", h.clock_offset_ms()},
                       {"phase", n.phase()},
                       {"gpus", n.gpus()},
                       {"roster_gpus", h.roster_gpus()},
                       {"alive", n.alive_size()},
                       {"storage_mounted", n.storage_mounted()},
                       {"storage_probe_ms", n.storage_probe_ms()},
                       {"storage_free_bytes", n.storage_free_bytes()},
                       {"workdir", n.workdir()},
                       {"workdir_free_bytes", n.workdir_free_bytes()},
                       {"dlps_serving", n.dlps_enabled() && n.dlps_error().empty()}});
    }
    nlohmann::json stuck_jobs = nlohmann::json::array();
    for (const jpb::JobSummary& s : stuck) {
      stuck_jobs.push_back({{"id", s.id()}, {"name", s.name()}, {"step", s.training().step()}, {"step_unix_ms", s.training().step_unix_ms()}});
    }
    out << nlohmann::json({{"ok", r->ok() && stuck.empty()}, {"nodes", nodes}, {"stuck_jobs", stuck_jobs}}).dump(2) << "\n";
  } else {
    std::ostringstream t;
    t << std::left << std::setw(5) << "RANK" << std::setw(22) << "NODE" << std::setw(16) << "IP" << std::setw(9) << "RTT" << std::setw(8) << "CLOCK"
      << std::setw(6) << "GPUS" << std::setw(10) << "STORAGE" << std::setw(6) << "DLPS" << std::setw(10) << "FREE"
      << "HEALTH\n";
    for (const jpb::NodeHealth& h : r->nodes()) {
      const jpb::HealthReply& n = h.reply();
      const bool answered = h.round_trip_us() >= 0;
      std::string failures;
      for (const std::string& f : h.failures()) failures += (failures.empty() ? "" : "; ") + f;
      t << std::left << std::setw(5) << h.rank() << std::setw(22) << h.node() << std::setw(16) << h.ip() << std::setw(9)
        << (answered ? std::to_string(h.round_trip_us() / 1000) + "." + std::to_string(h.round_trip_us() % 1000 / 100) + "ms" : "-") << std::setw(8)
        << (answered ? std::to_string(h.clock_offset_ms()) + "ms" : "-") << std::setw(6)
        << (answered ? std::to_string(n.gpus()) + "/" + std::to_string(h.roster_gpus()) : "-") << std::setw(10)
        << (!answered                                          ? "-"
            : !n.storage_configured()                          ? "none"
            : n.storage_mounted() && n.storage_error().empty() ? std::to_string(n.storage_probe_ms()) + "ms"
                                                               : "FAIL")
        << std::setw(6)
        << (!answered                ? "-"
            : !n.dlps_enabled()      ? "off"
            : n.dlps_error().empty() ? "ok"
                                     : "FAIL")
        << std::setw(10) << (answered ? std::to_string(n.workdir_free_bytes() >> 30) + "GiB" : "-") << (h.ok() ? "ok" : failures) << "\n";
    }
    out << t.str();
    for (const jpb::JobSummary& s : stuck) {
      out << "job " << s.id() << " (" << ForTerminal(s.name()) << ") is stuck: its ranks reported no step for " << Ago(s.training().step_unix_ms())
          << " (last: step " << s.training().step() << "; --stuck-after " << stuck_after << ")\n";
    }
  }
  return r->ok() && stuck.empty() ? 0 : 3;
}

int RunMpiRsh(const CtlOptions& ctl, const std::vector<std::string>& args, const std::atomic<int>& interrupted, std::ostream& out,
              std::ostream& err) {
  const char* job = std::getenv("DLAGENT_JOB");
  if (!job || !*job) {
    err << "agentctl mpi-rsh: not in a job (DLAGENT_JOB is unset): it is mpirun's launcher under agentctl run --launcher mpi\n";
    return 255;
  }
  if (args.size() < 2) {
    err << "agentctl mpi-rsh: usage: agentctl mpi-rsh HOST COMMAND...\n";
    return 255;
  }
  Result<std::unique_ptr<ControlClient>> client = Dial(ctl);
  if (!client.ok()) return Fail(err, client.status(), 255);
  jpb::AttachRequest req;
  req.set_job(job);
  req.set_host(args[0]);
  // orted is told to daemonize when its launcher is not ssh: it would leave the job's process group, and the
  // agent could neither see it end nor stop it with the job. Kept in the foreground, it lives as under ssh.
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] != "--daemonize") req.add_argv(args[i]);
  }
  Result<jpb::AttachReply> started = (*client)->AttachProcess(req);
  if (!started.ok()) return Fail(err, started.status(), 255);  // ssh's status for a connection that failed
  jpb::JobOutputRequest o;
  o.set_job(job);
  o.set_node(started->node());
  o.set_rank(static_cast<int32_t>(started->rank()));
  int failures = 0;
  while (interrupted.load() == 0) {
    Result<jpb::JobOutputReply> r = (*client)->JobOutput(o);
    if (!r.ok()) {
      if (++failures >= 10) return Fail(err, r.status(), 255);
      std::this_thread::sleep_for(kPoll);
      continue;
    }
    failures = 0;
    for (const jpb::OutputLine& l : r->lines()) (l.stderr() ? err : out) << l.text() << "\n";
    out.flush();
    *o.mutable_after_seq() = r->after_seq();
    for (const jpb::RankState& s : r->ranks()) {
      if (!s.running()) return s.signal() ? 128 + s.signal() : s.exit_code();
    }
    if (r->lines_size() == 0) std::this_thread::sleep_for(kPoll);
  }
  return 130;
}

}  // namespace dlagent
