#include "agent/daemon/imds_guard.h"

namespace dlagent {

std::string ImdsGuardRules(bool root_only) {
  const std::string table = std::string("inet ") + kImdsGuardTable;
  // Adding the table first makes its deletion valid whether or not it was there: the batch replaces it whole.
  std::string rules = "add table " + table + "\ndelete table " + table + "\n";
  if (!root_only) return rules;
  rules += "add table " + table + "\n";
  rules += "add chain " + table + " output { type filter hook output priority 0; policy accept; }\n";
  // A reject, not a drop: a process that may not ask fails at once instead of waiting out its timeouts.
  rules += "add rule " + table + " output ip daddr 169.254.169.254 meta skuid != 0 counter reject with icmpx admin-prohibited\n";
  rules += "add rule " + table + " output ip6 daddr fd00:ec2::254 meta skuid != 0 counter reject with icmpx admin-prohibited\n";
  return rules;
}

Status ApplyImdsGuard(Env& env, bool root_only) {
  ExecRequest req;
  req.argv = {"nft", ImdsGuardRules(root_only)};
  req.timeout = std::chrono::seconds(10);
  req.max_output_bytes = 4096;
  Result<ExecResult> r = env.Exec(req);
  const std::string what = root_only ? "limiting instance metadata to root" : "removing the instance metadata guard";
  if (!r.ok()) {
    return Status::Unavailable("imds-guard", what + ": cannot run nft (" + r.status().ToString() +
                                                 "): install nftables, or set aws.imds_root_only = false to let every local user reach it");
  }
  if (r->timed_out) return Status::DeadlineExceeded("imds-guard", what + ": nft took over 10s");
  if (r->exit_code != 0) return Status::Unavailable("imds-guard", what + ": nft failed (exit " + std::to_string(r->exit_code) + "): " + r->output);
  return Status::Ok();
}

}  // namespace dlagent
