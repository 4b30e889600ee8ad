#include "bootstrap/aws/secrets_client.h"

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/aws/sigv4.h"

namespace dlagent {
namespace {

constexpr std::string_view kSecrets = "secrets";

bool Contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

}  // namespace

Result<std::string> ResolveServiceEndpoint(const std::string& configured, const AwsJsonService& service, const std::string& region) {
  if (!configured.empty()) {
    RETURN_IF_ERROR(ParseUrl(configured).status());
    return configured;
  }
  if (region.empty()) {
    return Status::InvalidArgument(
        kSecrets, "no region for " + service.name + ": set aws.region or AWS_REGION, or let the agent read it from instance metadata");
  }
  return "https://" + service.name + "." + region + ".amazonaws.com";
}

Status AwsJsonErrorToStatus(int http_status, std::string_view body, const AwsJsonService& service, std::string_view action,
                            std::string_view resource) {
  std::string type, message;
  if (Result<nlohmann::json> j = ParseJsonObject(body, kSecrets, "error answer", 64 << 10); j.ok()) {
    auto text = [&](const char* key) {
      Result<std::string> v = JsonString(*j, key, false, kSecrets, "error");
      return v.ok() ? *v : std::string();
    };
    type = text("__type");
    message = text("Message");
    if (message.empty()) message = text("message");
  }
  type = type.substr(type.rfind('#') + 1);  // "com.amazonaws...#ResourceNotFoundException"
  const std::string what = service.name + " " + std::string(action) + " of " + std::string(resource) + ": " +
                           (type.empty() ? "HTTP " + std::to_string(http_status) : type) + (message.empty() ? "" : ": " + message.substr(0, 300));
  if (Contains(type, "ResourceNotFound") || Contains(type, "ParameterNotFound") || Contains(type, "ParameterVersionNotFound")) {
    return Status::NotFound(kSecrets, what + " (check the name or ARN and the region)");
  }
  if (Contains(type, "AccessDenied") || Contains(type, "UnrecognizedClient") || Contains(type, "InvalidSignature") ||
      Contains(type, "SignatureDoesNotMatch") || Contains(type, "ExpiredToken") || Contains(type, "KMS") || Contains(type, "Decryption")) {
    const std::string needs = service.name == "ssm" ? "ssm:GetParameter on the parameter and kms:Decrypt on its key"
                                                    : "secretsmanager:GetSecretValue on the secret (and kms:Decrypt with a customer key)";
    return Status::PermissionDenied(kSecrets, what + " (the instance role needs " + needs + "; see docs/aws.md)");
  }
  if (Contains(type, "Throttl") || Contains(type, "TooManyRequests") || Contains(type, "RequestLimitExceeded") || http_status == 429) {
    return Status::ResourceExhausted(kSecrets, what);
  }
  if (http_status >= 500 || Contains(type, "InternalService") || Contains(type, "ServiceUnavailable")) return Status::Unavailable(kSecrets, what);
  if (http_status >= 400 && http_status < 500) return Status::InvalidArgument(kSecrets, what);
  return Status::Internal(kSecrets, what);
}

SecretsClient::SecretsClient(HttpClient& http, CredentialsProvider& credentials, Env& env, AwsJsonService service, SecretsOptions options)
    : http_(http), credentials_(credentials), env_(env), service_(std::move(service)), options_(std::move(options)) {
  if (Result<Url> url = ParseUrl(options_.endpoint); url.ok()) {
    host_header_ = url->HostHeader();
    path_ = url->path;
  }
}

Result<nlohmann::json> SecretsClient::Call(const std::string& action, const nlohmann::json& input) {
  if (host_header_.empty()) return Status::InvalidArgument(kSecrets, "bad " + service_.name + " endpoint \"" + options_.endpoint + "\"");
  if (options_.region.empty()) return Status::InvalidArgument(kSecrets, "no signing region for " + service_.name);
  const std::string body = input.dump();
  const std::string resource = input.contains("SecretId") ? input["SecretId"].get<std::string>() : input.value("Name", "");
  nlohmann::json output;
  int attempt = 0;
  Status st = Retry(
      env_, options_.retry,
      [&]() -> Status {
        ASSIGN_OR_RETURN(AwsCredentials creds, credentials_.Get());
        SignedJsonPost post{options_.endpoint,
                            host_header_,
                            path_,
                            options_.region,
                            service_.name,
                            "application/x-amz-json-1.1",
                            service_.target_prefix + "." + action,
                            {},
                            options_.call_timeout,
                            options_.cancel,
                            1 << 20};
        post.retry = attempt++ > 0;
        ++requests_;
        ASSIGN_OR_RETURN(HttpResponse resp, SendSignedJson(http_, creds, env_.NowWall(), post, body));
        if (resp.status != 200) return AwsJsonErrorToStatus(resp.status, resp.body, service_, action, resource);
        ASSIGN_OR_RETURN(output, ParseJsonObject(resp.body, kSecrets, service_.name + " " + action + " answer", 1 << 20));
        return Status::Ok();
      },
      options_.cancel);
  if (!st.ok()) return st;
  return output;
}

Result<std::string> SecretsClient::GetSecretString(const std::string& secret_id) {
  if (secret_id.empty() || secret_id.size() > 2048) return Status::InvalidArgument(kSecrets, "a secret id must be 1-2048 characters");
  ASSIGN_OR_RETURN(nlohmann::json out, Call("GetSecretValue", {{"SecretId", secret_id}}));
  auto it = out.find("SecretString");
  if (it == out.end() || !it->is_string()) {
    return Status::InvalidArgument(kSecrets,
                                   "secret " + secret_id + " holds no SecretString (store the keys as text: one 64-hex-character key a line)");
  }
  return it->get<std::string>();
}

Result<std::string> SecretsClient::GetDecryptedParameter(const std::string& name) {
  if (name.empty() || name.size() > 2048) return Status::InvalidArgument(kSecrets, "a parameter name must be 1-2048 characters");
  ASSIGN_OR_RETURN(nlohmann::json out, Call("GetParameter", {{"Name", name}, {"WithDecryption", true}}));
  auto p = out.find("Parameter");
  if (p == out.end() || !p->is_object() || !p->contains("Value") || !(*p)["Value"].is_string()) {
    return Status::InvalidArgument(kSecrets, "parameter " + name + ": the answer holds no Parameter.Value");
  }
  return (*p)["Value"].get<std::string>();
}

}  // namespace dlagent
