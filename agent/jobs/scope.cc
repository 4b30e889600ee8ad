#include "agent/jobs/scope.h"

#include "bootstrap/common/duration.h"

#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-login.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace dlagent::jobs {
namespace {

constexpr const char* kSystemd = "org.freedesktop.systemd1";
constexpr const char* kManagerPath = "/org/freedesktop/systemd1";
constexpr const char* kManager = "org.freedesktop.systemd1.Manager";

// One connection and what it read; everything is released when it goes.
struct Call {
  sd_bus* bus = nullptr;
  sd_bus_message* msg = nullptr;
  sd_bus_message* reply = nullptr;
  sd_bus_error error = SD_BUS_ERROR_NULL;
  ~Call() {
    sd_bus_error_free(&error);
    sd_bus_message_unref(reply);
    sd_bus_message_unref(msg);
    sd_bus_flush_close_unref(bus);
  }
};

Status BusError(const std::string& what, int r, const sd_bus_error& e) {
  const std::string why = sd_bus_error_is_set(&e) ? std::string(e.message ? e.message : e.name) : std::strerror(-r);
  return Status::Unavailable("jobs", what + ": " + why);
}

Status Connect(const ScopeOptions& o, Call& c) {
  int r = sd_bus_new(&c.bus);
  if (r >= 0) r = sd_bus_set_address(c.bus, o.bus.c_str());
  if (r >= 0)
    r = sd_bus_set_method_call_timeout(c.bus, static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(o.timeout).count()));
  if (r >= 0) r = sd_bus_start(c.bus);
  if (r < 0) return Status::Unavailable("jobs", "connecting to systemd at " + o.bus + ": " + std::strerror(-r));
  return Status::Ok();
}

// The unit name part a job id may give: systemd allows [A-Za-z0-9:_.\-] and we keep fewer.
std::string UnitPart(const std::string& s) {
  std::string out;
  for (char ch : s.substr(0, 64)) out += std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' ? ch : '_';
  return out;
}

struct Removed {
  std::string job;  // the job path StartTransientUnit answered
  std::string result;
  bool seen = false;
};

int OnJobRemoved(sd_bus_message* m, void* userdata, sd_bus_error* /*error*/) {
  auto* want = static_cast<Removed*>(userdata);
  uint32_t id;
  const char *path, *unit, *result;
  if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0) return 0;
  if (want->job == path) {
    want->seen = true;
    want->result = result;
  }
  return 0;
}

}  // namespace

std::unique_ptr<Scopes> Scopes::Open(ScopeOptions options, std::string* why) {
  if (sd_booted() <= 0) {
    *why = "PID 1 is not systemd";
    return nullptr;
  }
  if (::geteuid() != 0) {
    *why = "agentd is not root";
    return nullptr;
  }
  return std::unique_ptr<Scopes>(new Scopes(std::move(options)));
}

std::string Scopes::OwnService() {
  char* unit = nullptr;
  if (sd_pid_get_unit(0, &unit) < 0 || unit == nullptr) return "";
  std::string s = unit;
  std::free(unit);
  return s.ends_with(".service") ? s : "";
}

Result<std::string> Scopes::Place(pid_t pid, const std::string& job, int32_t rank) {
  static std::atomic<uint64_t> next{0};
  const std::string name = "dlagent-" + UnitPart(job) + "-rank" + std::to_string(rank) + "-" + std::to_string(::getpid()) + "-" +
                           std::to_string(next.fetch_add(1)) + ".scope";
  const std::string desc = "dlagent job " + job + ", rank " + std::to_string(rank);
  Call c;
  RETURN_IF_ERROR(Connect(o_, c));
  // The job's end comes as a signal, which a direct connection gets without asking; it is matched here before
  // the call, so that it cannot pass unseen.
  Removed removed;
  int r = sd_bus_match_signal(c.bus, nullptr, nullptr, kManagerPath, kManager, "JobRemoved", OnJobRemoved, &removed);
  if (r >= 0) r = sd_bus_message_new_method_call(c.bus, &c.msg, kSystemd, kManagerPath, kManager, "StartTransientUnit");
  if (r >= 0) r = sd_bus_message_append(c.msg, "ss", name.c_str(), "fail");
  if (r >= 0) r = sd_bus_message_open_container(c.msg, 'a', "(sv)");
  if (r >= 0) r = sd_bus_message_append(c.msg, "(sv)", "Description", "s", desc.c_str());
  if (r >= 0) r = sd_bus_message_append(c.msg, "(sv)", "PIDs", "au", 1, static_cast<uint32_t>(pid));
  if (r >= 0) r = sd_bus_message_append(c.msg, "(sv)", "CollectMode", "s", "inactive-or-failed");
  if (r >= 0 && o_.tasks_max > 0) r = sd_bus_message_append(c.msg, "(sv)", "TasksMax", "t", o_.tasks_max);
  if (r >= 0 && !o_.bound_to.empty()) r = sd_bus_message_append(c.msg, "(sv)", "BindsTo", "as", 1, o_.bound_to.c_str());
  if (r >= 0) r = sd_bus_message_close_container(c.msg);
  if (r >= 0) r = sd_bus_message_append(c.msg, "a(sa(sv))", 0);
  if (r < 0) return Status::Internal("jobs", "a call to systemd for scope " + name + ": " + std::strerror(-r));
  r = sd_bus_call(c.bus, c.msg, 0, &c.error, &c.reply);
  if (r < 0) return BusError("systemd did not make scope " + name, r, c.error);
  const char* path = nullptr;
  if (sd_bus_message_read(c.reply, "o", &path) < 0 || path == nullptr) {
    return Status::Internal("jobs", "systemd's answer for scope " + name + " names no job");
  }
  removed.job = path;
  const MonoTime until = std::chrono::steady_clock::now() + o_.timeout;
  while (!removed.seen) {
    r = sd_bus_process(c.bus, nullptr);
    if (r < 0) return Status::Unavailable("jobs", "reading systemd's news of scope " + name + ": " + std::strerror(-r));
    if (r > 0) continue;
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::DeadlineExceeded("jobs", "systemd did not start scope " + name + " within " + FormatDuration(o_.timeout));
    r = sd_bus_wait(c.bus, static_cast<uint64_t>(left.count()));
    if (r < 0 && r != -EINTR) return Status::Unavailable("jobs", "waiting for systemd to start scope " + name + ": " + std::strerror(-r));
  }
  if (removed.result != "done") return Status::Unavailable("jobs", "systemd could not start scope " + name + ": " + removed.result);
  return name;
}

Status Scopes::Kill(const std::string& unit, int sig) {
  Call c;
  RETURN_IF_ERROR(Connect(o_, c));
  const int r = sd_bus_call_method(c.bus, kSystemd, kManagerPath, kManager, "KillUnit", &c.error, &c.reply, "ssi", unit.c_str(), "all", sig);
  if (r >= 0) return Status::Ok();
  // A scope whose processes have all ended is gone (CollectMode): nothing is left to signal.
  if (sd_bus_error_has_names(&c.error, "org.freedesktop.systemd1.NoSuchUnit", "org.freedesktop.systemd1.NoSuchProcess")) return Status::Ok();
  return BusError("signalling scope " + unit, r, c.error);
}

}  // namespace dlagent::jobs
