#include "agent/jobs/run_request.h"

#include <grp.h>
#include <pwd.h>

#include <cctype>
#include <cstdio>
#include <set>

#include "agent/jobs/restart.h"

namespace dlagent::jobs {
namespace {

Status ResolveUser(const pb::RunJobRequest& req, const Caller& caller, pb::JobSpec& spec) {
  char buf[16384];
  struct passwd pw, *found = nullptr;
  if (!req.user().empty()) {
    if (caller.uid != 0) return Status::PermissionDenied("jobs", "only root may run a job as another user (--user)");
    if (::getpwnam_r(req.user().c_str(), &pw, buf, sizeof buf, &found) != 0 || !found) {
      return Status::NotFound("jobs", "--user " + req.user() + ": no such user on this node");
    }
    spec.set_uid(found->pw_uid);
    spec.set_gid(found->pw_gid);
    spec.set_user(found->pw_name);
    std::vector<gid_t> groups(64);
    int n = static_cast<int>(groups.size());
    if (::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n) < 0) {
      groups.resize(static_cast<size_t>(n));
      ::getgrouplist(found->pw_name, found->pw_gid, groups.data(), &n);
    }
    groups.resize(static_cast<size_t>(std::max(n, 0)));
    for (gid_t g : groups) spec.add_groups(g);
    return Status::Ok();
  }
  spec.set_uid(caller.uid);
  spec.set_gid(caller.gid);
  for (uint32_t g : caller.groups) spec.add_groups(g);
  spec.set_user(::getpwuid_r(caller.uid, &pw, buf, sizeof buf, &found) == 0 && found ? found->pw_name : "uid " + std::to_string(caller.uid));
  return Status::Ok();
}

Status CheckEnv(const pb::RunJobRequest& req) {
  for (const std::string& kv : req.env()) {
    const size_t eq = kv.find('=');
    if (eq == 0 || eq == std::string::npos) return Status::InvalidArgument("jobs", "--env \"" + kv + "\" is not NAME=value");
    for (size_t i = 0; i < eq; ++i) {
      const char c = kv[i];
      const bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
      if (!ok) return Status::InvalidArgument("jobs", "--env \"" + kv + "\": a variable name is letters, digits and _, not starting with a digit");
    }
  }
  return Status::Ok();
}

// A name is shown to every user by agentctl jobs: printable ASCII only, so that it cannot drive a terminal.
Status CheckName(const std::string& name) {
  if (name.size() > kMaxJobNameBytes)
    return Status::InvalidArgument("jobs", "--name is " + std::to_string(name.size()) + " bytes; at most " + std::to_string(kMaxJobNameBytes));
  for (const char c : name) {
    if (c < 0x20 || c > 0x7e) return Status::InvalidArgument("jobs", "--name holds a control or non-ASCII character; use printable ASCII");
  }
  return Status::Ok();
}

// The program's base name, made a valid name: every other byte than printable ASCII becomes '?'.
std::string DefaultName(const std::string& program) {
  std::string name = program.substr(program.rfind('/') + 1).substr(0, kMaxJobNameBytes);
  for (char& c : name) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return name;
}

// The command and its environment travel to every node and are kept with the job: bounded.
Status CheckSize(const pb::RunJobRequest& req) {
  size_t bytes = 0;
  for (const std::string& a : req.argv()) bytes += a.size() + 1;
  for (const std::string& kv : req.env()) bytes += kv.size() + 1;
  if (bytes > kMaxCommandBytes) {
    return Status::InvalidArgument("jobs", "the command and its --env add up to " + std::to_string(bytes) + " bytes; at most " +
                                               std::to_string(kMaxCommandBytes) + " (pass long configuration in a file)");
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<JobNode>> SelectNodes(const std::vector<JobNode>& roster, const std::vector<std::string>& selection) {
  if (selection.empty()) return roster;
  std::set<size_t> picked;
  for (const std::string& entry : selection) {
    size_t start = 0;
    for (;;) {
      const size_t comma = entry.find(',', start);
      const std::string item = entry.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      bool matched = false;
      unsigned a = 0, b = 0;
      int used = 0;
      if (std::sscanf(item.c_str(), "%u-%u%n", &a, &b, &used) == 2 && used == static_cast<int>(item.size()) && a <= b) {
        for (unsigned r = a; r <= b && r < roster.size(); ++r) picked.insert(r);
        matched = b < roster.size();
      } else if (std::sscanf(item.c_str(), "%u%n", &a, &used) == 1 && used == static_cast<int>(item.size())) {
        if (a < roster.size()) picked.insert(a), matched = true;
      } else {
        for (size_t i = 0; i < roster.size(); ++i) {
          if (roster[i].instance_id == item || roster[i].ip == item) picked.insert(i), matched = true;
        }
      }
      if (!matched) {
        return Status::InvalidArgument(
            "jobs", "--nodes: \"" + item + "\" is no roster node (ranks 0-" + std::to_string(roster.size() - 1) + ", instance ids or addresses)");
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  std::vector<JobNode> out;
  for (size_t i : picked) out.push_back(roster[i]);
  return out;
}

Result<std::vector<JobNode>> PlaceRoles(Launcher launcher, const std::vector<JobNode>& selected, bool named) {
  std::vector<JobNode> out, servers;
  for (const JobNode& n : selected) (n.server ? servers : out).push_back(n);
  if (named && !servers.empty() && launcher != Launcher::kDlps) {
    return Status::InvalidArgument("jobs", "--nodes: " + servers[0].instance_id +
                                               " is a server node (cluster.role = \"server\"): it runs no ranks, and only --launcher dlps "
                                               "uses it (its shard)");
  }
  if (out.empty()) {
    return Status::FailedPrecondition("jobs", std::string(named ? "every node --nodes names" : "every roster node") +
                                                  " is a server node (cluster.role = \"server\"), and server nodes run no ranks");
  }
  if (launcher == Launcher::kDlps) out.insert(out.end(), servers.begin(), servers.end());  // their shards serve the job
  return out;
}

Result<CheckedRun> CheckRunRequest(const pb::RunJobRequest& req, const Caller& caller, const std::vector<JobNode>& roster, Duration default_grace) {
  if (req.argv().empty()) return Status::InvalidArgument("jobs", "no command: agentctl run [options] -- CMD ARGS...");
  CheckedRun out;
  ASSIGN_OR_RETURN(out.launcher, ParseLauncher(req.launcher().empty() ? "plain" : req.launcher()));
  RETURN_IF_ERROR(CheckEnv(req));
  RETURN_IF_ERROR(CheckSize(req));
  RETURN_IF_ERROR(CheckName(req.name()));
  if (!req.workdir().empty() && req.workdir()[0] != '/')
    return Status::InvalidArgument("jobs", "--workdir " + req.workdir() + " is not an absolute path");
  if (roster.empty()) return Status::FailedPrecondition("jobs", "the cluster has no roster yet");
  ASSIGN_OR_RETURN(std::vector<JobNode> selected, SelectNodes(roster, {req.nodes().begin(), req.nodes().end()}));
  ASSIGN_OR_RETURN(out.nodes, PlaceRoles(out.launcher, selected, !req.nodes().empty()));

  pb::JobSpec& spec = out.spec;
  RETURN_IF_ERROR(ResolveUser(req, caller, spec));
  const std::string& program = req.argv(0);
  spec.set_name(!req.name().empty() ? req.name() : DefaultName(program));
  spec.set_launcher(std::string(LauncherName(out.launcher)));
  *spec.mutable_argv() = req.argv();
  *spec.mutable_env() = req.env();
  spec.set_workdir(req.workdir());
  spec.set_grace_ms(req.grace_ms() > 0 ? req.grace_ms() : std::chrono::duration_cast<std::chrono::milliseconds>(default_grace).count());
  spec.set_timeout_ms(std::max<int64_t>(0, req.timeout_ms()));
  for (const JobNode& n : out.nodes) {
    spec.add_nodes(n.instance_id);
    spec.add_node_addrs(n.addr);
  }
  if (req.restarts() > kMaxRestarts) {
    return Status::InvalidArgument("jobs", "--restarts " + std::to_string(req.restarts()) + ": at most " + std::to_string(kMaxRestarts));
  }
  if (req.min_nodes() > out.nodes.size()) {
    return Status::InvalidArgument(
        "jobs", "--min-nodes " + std::to_string(req.min_nodes()) + " is more than the job's " + std::to_string(out.nodes.size()) + " nodes");
  }
  if (req.min_nodes() > 0 && req.restarts() == 0) return Status::InvalidArgument("jobs", "--min-nodes applies to restarts: give --restarts too");
  spec.set_max_restarts(req.restarts());
  spec.set_min_nodes(req.min_nodes());
  spec.set_every_node(req.nodes().empty());
  return out;
}

}  // namespace dlagent::jobs
