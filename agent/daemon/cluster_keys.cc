#include "agent/daemon/cluster_keys.h"

#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/secrets_client.h"
#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {

ClusterKeyLoader::ClusterKeyLoader(Env& env, const Config& config, KeyFetchClients aws, const std::atomic<bool>* cancel)
    : env_(env), config_(config), source_(KeySourceOf(config.gossip)), aws_(aws), cancel_(cancel) {}

ClusterKeyLoader::~ClusterKeyLoader() = default;

Result<std::vector<std::string>> ClusterKeyLoader::Load() {
  const std::string what = source_.Describe();
  switch (source_.kind) {
    case KeySource::Kind::kNone: return Status::FailedPrecondition("gossip", "no cluster key: set gossip.key_file or gossip.key_source");
    case KeySource::Kind::kFile: {
      Result<std::string> text = env_.ReadFile(source_.where, 4096);
      if (!text.ok())
        return Status(text.status().code(), "gossip", "cannot read the cluster key " + what + ": " + std::string(text.status().message()));
      return ParseClusterKeys(*text, source_.where);
    }
    case KeySource::Kind::kSecretsManager:
    case KeySource::Kind::kSsm: break;
  }
  if (!secrets_) {
    if (!aws_.http || !aws_.credentials)
      return Status::FailedPrecondition("gossip",
                                        "the " + what + " is fetched from AWS, and this loader was made without AWS clients (key files only)");
    ASSIGN_OR_RETURN(std::string region, ResolveAwsRegion(config_.aws.region, aws_.imds));
    const bool ssm = source_.kind == KeySource::Kind::kSsm;
    const AwsJsonService& service = ssm ? kSsm : kSecretsManager;
    SecretsOptions so;
    ASSIGN_OR_RETURN(so.endpoint, ResolveServiceEndpoint(ssm ? config_.aws.ssm_endpoint : config_.aws.secretsmanager_endpoint, service, region));
    so.region = region;
    so.cancel = cancel_;
    secrets_ = std::make_unique<SecretsClient>(*aws_.http, *aws_.credentials, env_, service, so);
  }
  Result<std::string> text =
      source_.kind == KeySource::Kind::kSsm ? secrets_->GetDecryptedParameter(source_.where) : secrets_->GetSecretString(source_.where);
  if (!text.ok()) return text.status().Annotate("fetching the cluster key from the " + what);
  return ParseClusterKeys(*text, "the " + what);
}

}  // namespace dlagent
