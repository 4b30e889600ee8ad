#pragma once
// The instance metadata guard: only root reaches instance metadata (169.254.169.254 and fd00:ec2::254), through
// an nftables table of its own, `inet dlagent_imds`, that rejects any other user's packets to it on this
// host's network namespace. Metadata serves the instance role's credentials, and the role may read the cluster
// key, which is root on the cluster (docs/jobs.md, "Threat model"): without the guard, any job's rank or local
// user could take the key. Removed again when the guard is off (aws.imds_root_only = false) and at purge.
//
// Thread safety: functions only.

#include <string>

#include "bootstrap/common/env.h"
#include "bootstrap/common/status.h"

namespace dlagent {

inline constexpr const char* kImdsGuardTable = "dlagent_imds";

// The nft commands that make the table (root_only) or remove it, as one atomic batch.
std::string ImdsGuardRules(bool root_only);
// Applies them with `nft` (from PATH, 10 s at most). An error names what failed and what to do.
Status ApplyImdsGuard(Env& env, bool root_only);

}  // namespace dlagent
