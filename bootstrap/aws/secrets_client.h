#pragma once
// The two calls that fetch the cluster key from AWS (gossip.key_source, docs/aws.md): Secrets Manager's
// GetSecretValue and Systems Manager's GetParameter (a SecureString, decrypted), over the AWS JSON 1.1
// protocol, signed with SigV4 with the instance role's credentials.
//
// Thread safety: all methods are thread-safe. Each call is retried as the SDKs' standard mode does (throttling,
// 5xx and network errors; full-jitter backoff, bounded); every attempt has a deadline. The values fetched are
// secrets: they are returned, never logged, and no error message quotes an answer's body.

#include <atomic>
#include <string>

#include <nlohmann/json.hpp>

#include "bootstrap/aws/credentials.h"
#include "bootstrap/aws/http_client.h"
#include "bootstrap/common/backoff.h"

namespace dlagent {

struct AwsJsonService {
  std::string name;           // the signing name: "secretsmanager", "ssm"
  std::string target_prefix;  // X-Amz-Target's: "secretsmanager", "AmazonSSM"
};
inline const AwsJsonService kSecretsManager{"secretsmanager", "secretsmanager"};
inline const AwsJsonService kSsm{"ssm", "AmazonSSM"};

struct SecretsOptions {
  std::string endpoint;                              // REQUIRED: https://secretsmanager.<region>.amazonaws.com, or an emulator's
  std::string region;                                // REQUIRED: the signing region
  Duration call_timeout = std::chrono::seconds(10);  // Default: 10 s per attempt.
  BackoffPolicy retry{std::chrono::seconds(1), std::chrono::seconds(20), 2.0, 5, std::chrono::minutes(2)};
  const std::atomic<bool>* cancel = nullptr;  // Default: none. When it turns true, calls end with Cancelled.
};

// The service's endpoint: the configured one (from the configuration or AWS_ENDPOINT_URL_<SERVICE>), else
// https://<service>.<region>.amazonaws.com.
Result<std::string> ResolveServiceEndpoint(const std::string& configured, const AwsJsonService& service, const std::string& region);

class SecretsClient {
 public:
  // http, credentials and env must outlive the client.
  SecretsClient(HttpClient& http, CredentialsProvider& credentials, Env& env, AwsJsonService service, SecretsOptions options);

  // Secrets Manager: the SecretString of secret_id (a name or an ARN), its current version.
  Result<std::string> GetSecretString(const std::string& secret_id);
  // Systems Manager: the value of a parameter, decrypted when it is a SecureString.
  Result<std::string> GetDecryptedParameter(const std::string& name);

  uint64_t requests() const { return requests_.load(); }

 private:
  Result<nlohmann::json> Call(const std::string& action, const nlohmann::json& input);

  HttpClient& http_;
  CredentialsProvider& credentials_;
  Env& env_;
  const AwsJsonService service_;
  const SecretsOptions options_;
  std::string host_header_, path_;
  std::atomic<uint64_t> requests_{0};
};

// An error answer of a JSON 1.1 service, as a Status: NotFound (ResourceNotFoundException, ParameterNotFound),
// PermissionDenied (AccessDenied, KMS and signature errors: what the instance role needs), ResourceExhausted
// (throttling, retried), Unavailable (5xx, retried), InvalidArgument, Internal. The body is read for its type
// and message only.
Status AwsJsonErrorToStatus(int http_status, std::string_view body, const AwsJsonService& service, std::string_view action,
                            std::string_view resource);

}  // namespace dlagent
