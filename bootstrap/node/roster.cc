#include "bootstrap/node/roster.h"

#include <arpa/inet.h>

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

namespace dlagent {

std::string WorkerName(size_t rank) { return "deeplearning-worker" + std::to_string(rank + 1); }

std::string RoleName(const RosterNode& n) { return n.master ? "master" : n.server ? "server" : "worker"; }

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
    if (n.master && n.server) return Status::InvalidArgument("roster", "node " + n.instance_id + " claims both the master and the server role");
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

std::string RenderRosterJson(const Roster& r) {
  nlohmann::json nodes = nlohmann::json::array();
  for (size_t i = 0; i < r.nodes.size(); ++i) {
    const RosterNode& n = r.nodes[i];
    nodes.push_back({{"rank", i}, {"name", WorkerName(i)}, {"instance_id", n.instance_id}, {"ip", n.ip}, {"gpus", n.gpus}, {"role", RoleName(n)}});
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
      if (role != "master" && role != "worker" && role != "server") return bad("role \"" + role + "\" (master, worker or server)");
      node.master = role == "master";
      node.server = role == "server";
      r.nodes.push_back(std::move(node));
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
  if (Status st = CheckRosterNodes(r.nodes); !st.ok()) return bad(std::string(st.message()));
  return r;
}

}  // namespace dlagent
