#include "agent/daemon/key_source.h"

#include <cctype>
#include <optional>
#include <sstream>

#include "bootstrap/common/crypto.h"

namespace dlagent {

std::string KeySource::Describe() const {
  switch (kind) {
    case Kind::kFile: return "file " + where;
    case Kind::kSecretsManager: return "Secrets Manager secret " + where;
    case Kind::kSsm: return "SSM parameter " + where;
    case Kind::kNone: break;
  }
  return "no key source";
}

Result<KeySource> ParseKeySource(std::string_view text) {
  const size_t colon = text.find(':');
  const std::string scheme(text.substr(0, colon == std::string_view::npos ? 0 : colon));
  const std::string rest(colon == std::string_view::npos ? "" : text.substr(colon + 1));
  const std::string accepted = "; use file:/PATH, secretsmanager:NAME-OR-ARN or ssm:/PARAMETER/NAME";
  if (rest.empty()) return Status::InvalidArgument("config", "key source \"" + std::string(text) + "\" names no place" + accepted);
  if (scheme == "file") {
    if (rest[0] != '/') return Status::InvalidArgument("config", "key source file:" + rest + " must be an absolute path");
    return KeySource{KeySource::Kind::kFile, rest};
  }
  if (scheme == "secretsmanager") return KeySource{KeySource::Kind::kSecretsManager, rest};
  if (scheme == "ssm") return KeySource{KeySource::Kind::kSsm, rest};
  return Status::InvalidArgument("config", "key source \"" + std::string(text) + "\" is of no known kind" + accepted);
}

KeySource KeySourceOf(const GossipConfig& g) {
  if (!g.key_source.empty()) {
    if (Result<KeySource> s = ParseKeySource(g.key_source); s.ok()) return *s;  // checked when the config was read
  }
  if (!g.key_file.empty()) return KeySource{KeySource::Kind::kFile, g.key_file};
  return KeySource{};
}

Result<std::vector<std::string>> ParseClusterKeys(std::string_view text, const std::string& where) {
  std::vector<std::string> keys;
  std::istringstream lines{std::string(text)};
  for (std::string line; std::getline(lines, line);) {
    std::string hex;
    for (char c : line) {
      if (!std::isspace(static_cast<unsigned char>(c))) hex.push_back(c);
    }
    if (hex.empty()) continue;
    std::optional<std::string> key = hex.size() == 64 ? HexDecode(hex) : std::nullopt;
    if (!key) {
      return Status::InvalidArgument("gossip", where + " line " + std::to_string(keys.size() + 1) +
                                                   " is not 64 hex characters (a 256-bit key); make one with: openssl rand -hex 32");
    }
    keys.push_back(std::move(*key));
  }
  if (keys.empty()) return Status::InvalidArgument("gossip", where + " holds no key; make one with: openssl rand -hex 32");
  return keys;
}

}  // namespace dlagent
