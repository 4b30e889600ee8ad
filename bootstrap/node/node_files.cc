#include "bootstrap/node/node_files.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "bootstrap/common/atomic_file.h"

namespace dlagent {
namespace {

constexpr std::string_view kBegin = "# BEGIN dlagent managed block";
constexpr std::string_view kEnd = "# END dlagent managed block";

std::string WorkerName(size_t rank) { return "deeplearning-worker" + std::to_string(rank + 1); }

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

std::vector<std::pair<std::string, std::string>> Variables(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus) {
  std::vector<std::pair<std::string, std::string>> v = {{"DEEPLEARNING_WORKERS_PATH", o.workers_path},
                                                        {"DEEPLEARNING_WORKERS_COUNT", std::to_string(r.nodes.size())},
                                                        {"DEEPLEARNING_WORKER_GPU_COUNT", std::to_string(self_gpus)},
                                                        {"EFS_MOUNT", o.efs_mount}};
  if (o.dlps_port > 0) {
    std::string servers;
    for (const RosterNode& n : r.nodes) servers += (servers.empty() ? "" : ",") + n.ip + ":" + std::to_string(o.dlps_port);
    v.insert(v.end(), {{"DLPS_SERVERS", servers}, {"DLPS_NUM_WORKERS", std::to_string(r.nodes.size())}});
    for (size_t i = 0; i < r.nodes.size(); ++i) {
      if (r.nodes[i].instance_id == o.self_instance_id) v.emplace_back("DLPS_RANK", std::to_string(i));
    }
  }
  return v;
}

std::string Header(const Roster& r, std::string_view comment) {
  return std::string(comment) + " Written by dlagent for cluster " + r.cluster + ", roster generation " +
         std::to_string(r.generation) + ". Do not edit: it is replaced when the roster changes.\n";
}

}  // namespace

Status CheckRosterNodes(const std::vector<RosterNode>& nodes) {
  std::set<std::string> ids, ips;
  int masters = 0;
  for (const RosterNode& n : nodes) {
    in_addr a;
    if (inet_pton(AF_INET, n.ip.c_str(), &a) != 1) {
      return Status::InvalidArgument("roster", "node " + n.instance_id + " has address \"" + n.ip + "\", not an IPv4 address");
    }
    if (!ids.insert(n.instance_id).second) return Status::InvalidArgument("roster", "instance " + n.instance_id + " appears twice");
    if (!ips.insert(n.ip).second) return Status::InvalidArgument("roster", "address " + n.ip + " appears twice");
    masters += n.master;
  }
  if (masters > 1) return Status::InvalidArgument("roster", std::to_string(masters) + " nodes claim the master role; at most one may");
  return Status::Ok();
}

Status OrderRoster(std::vector<RosterNode>& nodes) {
  RETURN_IF_ERROR(CheckRosterNodes(nodes));
  auto key = [](const RosterNode& n) {
    in_addr a;
    inet_pton(AF_INET, n.ip.c_str(), &a);
    return std::make_pair(!n.master, ntohl(a.s_addr));
  };
  std::sort(nodes.begin(), nodes.end(), [&](const RosterNode& a, const RosterNode& b) { return key(a) < key(b); });
  return Status::Ok();
}

std::string RenderWorkers(const Roster& r) {
  std::string out;
  for (size_t i = 0; i < r.nodes.size(); ++i) out += WorkerName(i) + "\n";
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
  for (const auto& [k, v] : Variables(r, o, self_gpus)) out += "export " + k + "=" + ShellQuote(v) + "\n";
  return out;
}

std::string RenderEnvFile(const Roster& r, const NodeFilesOptions& o, uint32_t self_gpus) {
  std::string out = Header(r, "#");
  for (const auto& [k, v] : Variables(r, o, self_gpus)) out += k + "=" + EnvQuote(v) + "\n";
  return out;
}

std::string RenderHostfile(const Roster& r) {
  std::string out;
  for (size_t i = 0; i < r.nodes.size(); ++i) out += WorkerName(i) + " slots=" + std::to_string(std::max<uint32_t>(1, r.nodes[i].gpus)) + "\n";
  return out;
}

std::string RenderRosterJson(const Roster& r) {
  nlohmann::json nodes = nlohmann::json::array();
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    const RosterNode& n = r.nodes[i];
    nodes.push_back({{"rank", i}, {"name", WorkerName(i)}, {"instance_id", n.instance_id}, {"ip", n.ip}, {"gpus", n.gpus},
                     {"role", n.master ? "master" : "worker"}});
  }
  nlohmann::json j = {{"cluster", r.cluster}, {"generation", r.generation}, {"leader", r.leader}, {"nodes", nodes}};
  if (!r.failure.empty()) j["failure"] = r.failure;
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Result<Roster> ParseRosterJson(std::string_view text) {
  auto bad = [](const std::string& what) { return Status::InvalidArgument("roster", "malformed roster: " + what); };
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  Roster r;
  try {
    r.cluster = j.at("cluster").get<std::string>();
    if (!j.at("generation").is_number_unsigned()) return bad("\"generation\" must be a whole number >= 0");
    r.generation = j.at("generation").get<uint64_t>();
    r.leader = j.at("leader").get<std::string>();
    if (j.contains("failure")) r.failure = j.at("failure").get<std::string>();
    const nlohmann::json& nodes = j.at("nodes");
    if (!nodes.is_array() || nodes.size() > 100000) return bad("\"nodes\" must be an array");
    for (const nlohmann::json& n : nodes) {
      RosterNode node;
      node.instance_id = n.at("instance_id").get<std::string>();
      node.ip = n.at("ip").get<std::string>();
      if (!n.at("gpus").is_number_unsigned() || n.at("gpus").get<uint64_t>() > 1024) return bad("\"gpus\" must be 0..1024");
      node.gpus = n.at("gpus").get<uint32_t>();
      const std::string role = n.at("role").get<std::string>();
      if (role != "master" && role != "worker") return bad("role \"" + role + "\"");
      node.master = role == "master";
      r.nodes.push_back(std::move(node));
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (Status st = CheckRosterNodes(r.nodes); !st.ok()) return bad(std::string(st.message()));
  return r;
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
