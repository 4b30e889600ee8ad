#include "bootstrap/aws/credentials.h"

#include "bootstrap/aws/aws_json.h"

namespace dlagent {
namespace {
constexpr std::string_view kCreds = "credentials";
}  // namespace

CredentialChain::CredentialChain(HttpClient& http, Env& env, ImdsClient* imds, GetEnvVar getenv, uint64_t seed)
    : http_(http), env_(env), imds_(imds), getenv_(std::move(getenv)), refresh_margin_(std::chrono::minutes(10)), rng_(seed) {}

int CredentialChain::fetches() const {
  MutexLock lock(mu_);
  return fetches_;
}

bool CredentialChain::DueForRefresh(const AwsCredentials& c, WallTime now) const { return c.expiration && now + refresh_margin_ >= *c.expiration; }

Result<AwsCredentials> CredentialChain::Get() {
  // Lock order: refresh_mu_ is only ever try-locked while mu_ is held, and blocking-locked without it.
  std::unique_lock<std::mutex> refresh(refresh_mu_, std::defer_lock);
  {
    MutexLock lock(mu_);
    if (cached_ && !DueForRefresh(*cached_, env_.NowWall())) return *cached_;
    // Due but still valid: one caller refreshes, the others go on with these.
    if (cached_ && env_.NowWall() < *cached_->expiration && !refresh.try_lock()) return *cached_;
  }
  if (!refresh.owns_lock()) refresh.lock();
  {
    MutexLock lock(mu_);
    if (cached_ && !DueForRefresh(*cached_, env_.NowWall())) return *cached_;  // another caller refreshed
  }
  Result<AwsCredentials> fresh = Fetch();
  MutexLock lock(mu_);
  ++fetches_;
  if (!fresh.ok()) {
    // A failed refresh keeps credentials that are still valid.
    if (cached_ && cached_->expiration && env_.NowWall() < *cached_->expiration) return *cached_;
    return fresh.status();
  }
  cached_ = *fresh;
  refresh_margin_ = std::chrono::seconds(std::uniform_int_distribution<int>(600, 900)(rng_));
  return *fresh;
}

Result<AwsCredentials> CredentialChain::Fetch() {
  auto env = [&](const char* name) { return getenv_(name).value_or(""); };
  const std::string key = env("AWS_ACCESS_KEY_ID"), secret = env("AWS_SECRET_ACCESS_KEY");
  if (!key.empty() || !secret.empty()) {
    if (key.empty() || secret.empty()) {
      return Status::InvalidArgument(kCreds, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    }
    return AwsCredentials{key, secret, env("AWS_SESSION_TOKEN"), std::nullopt, "environment"};
  }
  std::string container = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  if (container.empty() && !env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").empty()) {
    container = "http://169.254.170.2" + env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  }
  if (!container.empty()) return FromContainer(container);
  if (imds_) {
    Result<AwsCredentials> c = imds_->RoleCredentials();
    if (c.ok() || c.status().code() != StatusCode::kNotFound) return c;
  }
  return Status::NotFound(kCreds,
                          "no AWS credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, run with a "
                          "container credentials endpoint, or attach an IAM instance profile");
}

Result<AwsCredentials> CredentialChain::FromContainer(const std::string& url) {
  HttpRequest req;
  req.url = url;
  req.timeout = std::chrono::seconds(5);
  req.max_response_bytes = 64 << 10;
  req.service = "credentials";
  auto getenv = [&](const char* n) { return getenv_(n).value_or(""); };
  std::string auth = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  if (const std::string file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"); !file.empty()) {
    ASSIGN_OR_RETURN(auth, env_.ReadFile(file, 16 << 10));
    while (!auth.empty() && (auth.back() == '\n' || auth.back() == '\r')) auth.pop_back();
  }
  if (!auth.empty()) req.headers.emplace_back("Authorization", auth);
  HttpResponse resp;
  int attempt = 0;
  Status st = Retry(env_, {std::chrono::milliseconds(200), std::chrono::seconds(2), 2.0, 3, std::chrono::seconds(15)}, [&] {
    req.retry = attempt++ > 0;
    Result<HttpResponse> r = http_.Send(req);
    if (!r.ok()) return r.status();
    if (r->status >= 500 || r->status == 429) return Status::Unavailable(kCreds, url + " answered " + std::to_string(r->status));
    resp = std::move(*r);
    return Status::Ok();
  });
  RETURN_IF_ERROR(st);
  if (resp.status != 200) {
    return Status::PermissionDenied(kCreds, "container credentials endpoint " + url + " answered " + std::to_string(resp.status));
  }
  const std::string what = "container credentials from " + url;
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonObject(resp.body, kCreds, what, 64 << 10));
  AwsCredentials c;
  ASSIGN_OR_RETURN(c.access_key_id, JsonString(j, "AccessKeyId", true, kCreds, what));
  ASSIGN_OR_RETURN(c.secret_access_key, JsonString(j, "SecretAccessKey", true, kCreds, what));
  ASSIGN_OR_RETURN(c.session_token, JsonString(j, "Token", false, kCreds, what));
  ASSIGN_OR_RETURN(std::string expiration, JsonString(j, "Expiration", false, kCreds, what));
  if (!expiration.empty()) {
    ASSIGN_OR_RETURN(WallTime t, ParseIso8601(expiration));
    c.expiration = t;
  }
  c.source = "container";
  return c;
}

}  // namespace dlagent
