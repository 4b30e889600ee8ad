// libFuzzer target: a RunJob request (what agentctl sends its agent; any member of the dlagent group can) and
// what the agents make of it before anything runs: the checks (run_request.h), the plan of every launcher
// (launch.h) over a four-node roster, each rank's environment, working directory and program lookup (rank_env.h).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/jobs/launch.h"
#include "agent/jobs/rank_env.h"
#include "agent/jobs/run_request.h"

using namespace dlagent::jobs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  pb::RunJobRequest req;
  if (!req.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  const Caller caller{data[0] & 1 ? 0u : 1000u, 1000, {1000, 27}};
  const std::vector<JobNode> roster = {{"i-0a", "10.0.0.1", "10.0.0.1:7946", 8},
                                       {"i-0b", "10.0.0.2", "10.0.0.2:7946", 0},
                                       {"i-0c", "10.0.0.3", "10.0.0.3:7946", 4},
                                       {"i-0d", "10.0.0.4", "10.0.0.4:7946", 1}};
  auto checked = CheckRunRequest(req, caller, roster, std::chrono::seconds(10));
  if (!checked.ok()) {
    if (checked.status().message().empty()) __builtin_trap();  // a refusal says why
    return 0;
  }
  PlanOptions po;
  po.launcher = checked->launcher;
  po.job_id = "j-000000000001";
  po.per_node = req.per_node();  // as the coordinator takes it
  po.dlps_token = std::string(64, 'a');
  po.argv.assign(req.argv().begin(), req.argv().end());
  po.as_root = checked->spec.uid() == 0;
  std::vector<PlanNode> nodes;
  for (size_t i = 0; i < checked->nodes.size(); ++i) {
    const JobNode& n = checked->nodes[i];
    PlanNode p{n.instance_id, n.ip, n.gpus, {}};
    auto workers = WorkersOn(po, p);
    if (!workers.ok()) return 0;
    for (uint32_t k = 0; k < PortsNeeded(po, i, *workers); ++k) p.ports.push_back(static_cast<uint16_t>(20000 + k));
    nodes.push_back(std::move(p));
  }
  auto plan = PlanRanks(po, nodes);
  if (!plan.ok()) return 0;
  const std::vector<std::string> base = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8"};
  for (const auto& node : *plan) {
    for (const RankPlan& r : node) {
      pb::RankSpec rank;
      rank.set_rank(r.rank);
      rank.set_local_rank(r.local_rank);
      rank.set_role(r.role);
      for (const auto& [k, v] : r.env) rank.add_env(k + "=" + v);
      for (const std::string& a : r.argv) rank.add_argv(a);
      const std::vector<std::string> env = RankEnv(base, checked->spec, rank, "/home/user");
      (void)Workdir(checked->spec);
      const std::string& program = rank.argv().empty() ? checked->spec.argv(0) : rank.argv(0);
      (void)ProgramCandidates(program, env);
    }
  }
  return 0;
}
