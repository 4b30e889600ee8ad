#pragma once
// Where the cluster keys come from (gossip.key_file, gossip.key_source) and the key text's format: parsing
// only, with no I/O, so that the configuration can check them (ClusterKeyLoader, cluster_keys.h, fetches them).

#include <string>
#include <string_view>
#include <vector>

#include "agent/daemon/config.h"
#include "bootstrap/common/status.h"

namespace dlagent {

struct KeySource {
  enum class Kind { kNone, kFile, kSecretsManager, kSsm };
  Kind kind = Kind::kNone;
  std::string where;             // the path, the secret's name or ARN, the parameter's name
  std::string Describe() const;  // "file /etc/dlagent/cluster.key", "Secrets Manager secret NAME", "SSM parameter NAME"
};

// "file:/PATH", "secretsmanager:NAME-OR-ARN", "ssm:NAME"; InvalidArgument names what is accepted.
Result<KeySource> ParseKeySource(std::string_view text);
// gossip.key_source when set, else gossip.key_file, else none (gossip off).
KeySource KeySourceOf(const GossipConfig& gossip);

// The keys of a key file's text (raw bytes, the primary first). where names the source in errors. The format:
// one key a line, 64 hex characters each (openssl rand -hex 32), blank lines and surrounding whitespace ignored.
// The first is the primary, which seals; every one opens. Rotation without a restart: add the new key as a
// second line on every node, reload; move it first, reload; remove the old one, reload.
Result<std::vector<std::string>> ParseClusterKeys(std::string_view text, const std::string& where);

}  // namespace dlagent
