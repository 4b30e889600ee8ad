#include "tests/support/secrets_emulator.h"

#include <ctime>

#include <nlohmann/json.hpp>

namespace dlagent::testing {

SecretsEmulator::SecretsEmulator(AwsCredentials credentials, std::string region) : credentials_(std::move(credentials)), region_(std::move(region)) {
  server_.server().Post("/", [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
}

SecretsEmulator::~SecretsEmulator() { server_.Stop(); }

Status SecretsEmulator::Start(const std::string& host) { return server_.Start(host); }

void SecretsEmulator::PutSecret(const std::string& id, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  secrets_[id] = value;
}

void SecretsEmulator::PutParameter(const std::string& name, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  parameters_[name] = value;
}

std::vector<std::string> SecretsEmulator::problems() const {
  std::lock_guard<std::mutex> lock(mu_);
  return problems_;
}

int SecretsEmulator::served(const std::string& action) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = served_.find(action);
  return it == served_.end() ? 0 : it->second;
}

void SecretsEmulator::Refuse(httplib::Response& res, int status, const std::string& type, const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    problems_.push_back(type + ": " + why);
  }
  res.status = status;
  res.set_content(nlohmann::json({{"__type", type}, {"Message", why}}).dump(), "application/x-amz-json-1.1");
}

void SecretsEmulator::Handle(const httplib::Request& req, httplib::Response& res) {
  const std::string target = req.get_header_value("X-Amz-Target");
  const bool secrets = target == "secretsmanager.GetSecretValue", ssm = target == "AmazonSSM.GetParameter";
  if (!secrets && !ssm) return Refuse(res, 400, "UnknownOperationException", "X-Amz-Target \"" + target + "\" is not served here");
  if (req.get_header_value("Content-Type") != "application/x-amz-json-1.1") {
    return Refuse(res, 400, "SerializationException", "Content-Type must be application/x-amz-json-1.1");
  }
  // The signature: the credential scope names our key, the region and the service; the signature is what SigV4
  // gives for the signed headers at X-Amz-Date.
  const std::string auth = req.get_header_value("Authorization");
  const std::string service = secrets ? "secretsmanager" : "ssm";
  const std::string date = req.get_header_value("X-Amz-Date");
  const std::string scope = credentials_.access_key_id + "/" + date.substr(0, 8) + "/" + region_ + "/" + service + "/aws4_request";
  if (auth.rfind("AWS4-HMAC-SHA256 Credential=" + scope + ", SignedHeaders=", 0) != 0) {
    return Refuse(res, 403, "UnrecognizedClientException", "Authorization \"" + auth.substr(0, 120) + "\" is not for " + scope);
  }
  const size_t sh = auth.find("SignedHeaders=") + 14;
  const std::string signed_headers = auth.substr(sh, auth.find(',', sh) - sh);
  SigV4Request sv{"POST", req.path, "", {}, req.body};
  for (size_t start = 0; start <= signed_headers.size();) {
    size_t end = signed_headers.find(';', start);
    if (end == std::string::npos) end = signed_headers.size();
    const std::string name = signed_headers.substr(start, end - start);
    if (!req.has_header(name)) return Refuse(res, 403, "InvalidSignatureException", "signed header " + name + " is missing");
    sv.headers.emplace_back(name, req.get_header_value(name));
    start = end + 1;
  }
  std::tm tm{};
  if (date.size() != 16 || !::strptime(date.c_str(), "%Y%m%dT%H%M%SZ", &tm)) return Refuse(res, 400, "IncompleteSignature", "X-Amz-Date is missing");
  const WallTime at = std::chrono::system_clock::from_time_t(::timegm(&tm));
  if (SignV4(sv, credentials_, region_, service, at).authorization != auth) {
    return Refuse(res, 403, "InvalidSignatureException", "the signature does not match");
  }
  if (!credentials_.session_token.empty() && req.get_header_value("X-Amz-Security-Token") != credentials_.session_token) {
    return Refuse(res, 403, "UnrecognizedClientException", "X-Amz-Security-Token is missing or wrong");
  }
  const nlohmann::json body = nlohmann::json::parse(req.body, nullptr, false);
  if (!body.is_object()) return Refuse(res, 400, "SerializationException", "the body is not a JSON object");
  std::lock_guard<std::mutex> lock(mu_);
  if (secrets) {
    if (!body.contains("SecretId") || !body["SecretId"].is_string()) {
      problems_.push_back("ValidationException: no SecretId");
      res.status = 400;
      return;
    }
    auto it = secrets_.find(body["SecretId"].get<std::string>());
    if (it == secrets_.end()) {
      res.status = 400;
      res.set_content(R"({"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."})",
                      "application/x-amz-json-1.1");
      return;
    }
    ++served_["GetSecretValue"];
    res.set_content(nlohmann::json({{"ARN", "arn:aws:secretsmanager:" + region_ + ":123456789012:secret:" + it->first},
                                    {"Name", it->first},
                                    {"SecretString", it->second},
                                    {"VersionId", "v1"},
                                    {"VersionStages", {"AWSCURRENT"}}})
                        .dump(),
                    "application/x-amz-json-1.1");
    return;
  }
  if (!body.contains("Name") || !body["Name"].is_string() || body.value("WithDecryption", false) != true) {
    problems_.push_back("ValidationException: GetParameter needs Name and WithDecryption true for a SecureString");
    res.status = 400;
    return;
  }
  auto it = parameters_.find(body["Name"].get<std::string>());
  if (it == parameters_.end()) {
    res.status = 400;
    res.set_content(R"({"__type":"ParameterNotFound"})", "application/x-amz-json-1.1");
    return;
  }
  ++served_["GetParameter"];
  res.set_content(nlohmann::json({{"Parameter", {{"Name", it->first}, {"Type", "SecureString"}, {"Value", it->second}, {"Version", 1}}}}).dump(),
                  "application/x-amz-json-1.1");
}

}  // namespace dlagent::testing
