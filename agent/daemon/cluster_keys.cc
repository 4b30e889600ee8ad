#include "agent/daemon/cluster_keys.h"

#include <cctype>
#include <sstream>

#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/secrets_client.h"
#include "bootstrap/aws/sqs_client.h"
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

// The clients an AWS fetch needs: HTTP, instance metadata (credentials, the region), SigV4 credentials.
struct ClusterKeyLoader::Aws {
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<ImdsClient> imds;
  std::unique_ptr<CredentialChain> credentials;
  std::unique_ptr<SecretsClient> client;
};

ClusterKeyLoader::ClusterKeyLoader(Env& env, const Config& config, const std::atomic<bool>* cancel)
    : env_(env), config_(config), source_(KeySourceOf(config.gossip)), cancel_(cancel) {}

ClusterKeyLoader::~ClusterKeyLoader() = default;

Result<std::vector<std::string>> ClusterKeyLoader::Load() {
  const std::string what = source_.Describe();
  switch (source_.kind) {
    case KeySource::Kind::kNone:
      return Status::FailedPrecondition("gossip", "no cluster key: set gossip.key_file or gossip.key_source");
    case KeySource::Kind::kFile: {
      Result<std::string> text = env_.ReadFile(source_.where, 4096);
      if (!text.ok()) return Status(text.status().code(), "gossip", "cannot read the cluster key " + what + ": " + std::string(text.status().message()));
      return ParseClusterKeys(*text, source_.where);
    }
    case KeySource::Kind::kSecretsManager:
    case KeySource::Kind::kSsm:
      break;
  }
  if (!aws_) {
    auto aws = std::make_unique<Aws>();
    aws->http = NewCurlHttpClient();
    if (!config_.aws.imds_disabled) {
      ImdsOptions o;
      o.endpoint = config_.aws.imds_endpoint;
      o.deadline = std::chrono::seconds(5);
      aws->imds = std::make_unique<ImdsClient>(*aws->http, env_, o);
    }
    ASSIGN_OR_RETURN(std::string region, ResolveAwsRegion(config_.aws.region, aws->imds.get()));
    const bool ssm = source_.kind == KeySource::Kind::kSsm;
    const AwsJsonService& service = ssm ? kSsm : kSecretsManager;
    SecretsOptions so;
    ASSIGN_OR_RETURN(so.endpoint, ResolveServiceEndpoint(ssm ? config_.aws.ssm_endpoint : config_.aws.secretsmanager_endpoint, service, region));
    so.region = region;
    so.cancel = cancel_;
    aws->credentials = std::make_unique<CredentialChain>(*aws->http, env_, aws->imds.get(), ProcessGetEnv);
    aws->client = std::make_unique<SecretsClient>(*aws->http, *aws->credentials, env_, service, so);
    aws_ = std::move(aws);
  }
  Result<std::string> text = source_.kind == KeySource::Kind::kSsm ? aws_->client->GetDecryptedParameter(source_.where)
                                                                   : aws_->client->GetSecretString(source_.where);
  if (!text.ok()) return text.status().Annotate("fetching the cluster key from the " + what);
  return ParseClusterKeys(*text, "the " + what);
}

}  // namespace dlagent
