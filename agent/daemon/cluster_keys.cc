#include "agent/daemon/cluster_keys.h"

#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/secrets_client.h"
#include "bootstrap/aws/sqs_client.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {

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
