#include "bootstrap/node/node_files.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "bootstrap/common/atomic_file.h"

namespace dlagent {
namespace {

constexpr std::string_view kBegin = "# BEGIN dlagent managed block";
constexpr std::string_view kEnd = "# END dlagent managed block";

// Single-quoted for sh: safe for any value.
std::string ShellQuote(const std::string& v) {
  std::string out = "'";
  for (char c : v) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Double-quoted for systemd's EnvironmentFile=.
std::string EnvQuote(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string Header(const Roster& r, std::string_view comment) {
  return std::string(comment) + " Written by dlagent for cluster " + r.cluster + ", roster generation " + std::to_string(r.generation) +
         ". Do not edit: it is replaced when the roster changes.\n";
}

}  // namespace

std::vector<std::pair<std::string, std::string>> NodeVariables(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus) {
  size_t workers = 0, servers = 0;
  for (const RosterNode& n : r.nodes) (n.server ? servers : workers) += 1;
  std::vector<std::pair<std::string, std::string>> v = {{"DEEPLEARNING_WORKERS_PATH", o.workers_path},
                                                        {"DEEPLEARNING_WORKERS_COUNT", std::to_string(workers)},
                                                        {"DEEPLEARNING_WORKER_GPU_COUNT", std::to_string(self_gpus)},
                                                        {"EFS_MOUNT", o.efs_mount}};
  if (o.dlps_port > 0) {
    // The shards of the server nodes when there are any (cluster.role = "server"), else every node's; one
    // worker a worker node, ranked among them.
    std::string list;
    for (const RosterNode& n : r.nodes) {
      if (servers == 0 || n.server) list += (list.empty() ? "" : ",") + n.ip + ":" + std::to_string(o.dlps_port);
    }
    v.insert(v.end(), {{"DLPS_SERVERS", list}, {"DLPS_NUM_WORKERS", std::to_string(workers)}});
    size_t rank = 0;
    for (const RosterNode& n : r.nodes) {
      if (n.server) continue;
      if (n.instance_id == o.self_instance_id) v.emplace_back("DLPS_RANK", std::to_string(rank));
      ++rank;
    }
  }
  return v;
}

std::string RenderWorkers(const Roster& r) {
  std::string out;
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    if (!r.nodes[i].server) out += WorkerName(i) + "\n";  // a server node runs no training
  }
  return out;
}

std::string RenderHostsBlock(const Roster& r) {
  std::string out = std::string(kBegin) + " (cluster " + r.cluster + ", generation " + std::to_string(r.generation) + ")\n";
  if (!r.nodes.empty()) out += r.nodes[0].ip + " deeplearning-master\n";
  for (size_t i = 0; i < r.nodes.size(); ++i) out += r.nodes[i].ip + " " + WorkerName(i) + "\n";
  return out + std::string(kEnd) + "\n";
}

std::string MergeHostsFile(std::string_view existing, std::string_view block) {
  const size_t begin = existing.find(kBegin);
  if (begin == std::string_view::npos) {
    std::string out(existing);
    if (!out.empty() && out.back() != '\n') out += '\n';
    return out + std::string(block);
  }
  // A block whose end marker was deleted by hand runs to the end of the file.
  size_t end = existing.find(kEnd, begin);
  if (end == std::string_view::npos) {
    end = existing.size();
  } else {
    const size_t newline = existing.find('\n', end);
    end = newline == std::string_view::npos ? existing.size() : newline + 1;
  }
  return std::string(existing.substr(0, begin)) + std::string(block) + std::string(existing.substr(end));
}

std::string RenderProfile(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus) {
  std::string out = Header(r, "#");
  for (const auto& [k, v] : NodeVariables(r, o, self_gpus)) out += "export " + k + "=" + ShellQuote(v) + "\n";
  return out;
}

std::string RenderEnvFile(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus) {
  std::string out = Header(r, "#");
  for (const auto& [k, v] : NodeVariables(r, o, self_gpus)) out += k + "=" + EnvQuote(v) + "\n";
  return out;
}

std::string RenderHostfile(const Roster& r) {
  std::string out;
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    if (!r.nodes[i].server) out += WorkerName(i) + " slots=" + std::to_string(std::max<uint32_t>(1, r.nodes[i].gpus)) + "\n";
  }
  return out;
}

Status WriteNodeFiles(Env& env, const NodeFilesOptions& o, const Roster& roster, uint32_t self_gpus) {
  auto path = [&](const std::string& p) { return o.root + p; };
  auto write = [&](const std::string& p, const std::string& contents, uint32_t mode) -> Status {
    RETURN_IF_ERROR(env.CreateDirs(DirName(path(p)), 0755));
    return WriteFileAtomically(env, path(p), contents, mode);
  };
  RETURN_IF_ERROR(write(o.workers_path, RenderWorkers(roster), 0644));
  Result<std::string> hosts = env.ReadFile(path(o.hosts_path), 4 << 20);
  if (!hosts.ok() && hosts.status().code() != StatusCode::kNotFound) return hosts.status().Annotate("reading " + path(o.hosts_path));
  RETURN_IF_ERROR(write(o.hosts_path, MergeHostsFile(hosts.ok() ? *hosts : "", RenderHostsBlock(roster)), 0644));
  RETURN_IF_ERROR(write(o.profile_path, RenderProfile(roster, o, self_gpus), 0644));
  RETURN_IF_ERROR(write(o.env_path, RenderEnvFile(roster, o, self_gpus), 0644));
  RETURN_IF_ERROR(write(o.hostfile_path, RenderHostfile(roster), 0644));
  return write(o.roster_path, RenderRosterJson(roster), 0644);
}

}  // namespace dlagent
