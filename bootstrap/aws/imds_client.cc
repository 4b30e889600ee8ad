#include "bootstrap/aws/imds_client.h"

#include "bootstrap/common/duration.h"

namespace dlagent {
namespace {

constexpr std::string_view kImds = "imds";
constexpr size_t kMaxAnswer = 1 << 20;  // user-data is at most 16 KiB; leave room

Duration Left(MonoTime deadline, MonoTime now) { return std::max(Duration(0), deadline - now); }

}  // namespace

ImdsClient::ImdsClient(HttpClient& http, Env& env, ImdsOptions options) : http_(http), env_(env), options_(std::move(options)) {}

int ImdsClient::token_fetches() const {
  MutexLock lock(token_mu_);
  return token_fetches_;
}

Result<std::string> ImdsClient::Token(MonoTime deadline) {
  MutexLock lock(token_mu_);
  const MonoTime now = env_.NowMono();
  // Refresh a minute early, so that a token never expires in flight.
  if (!token_.empty() && now + std::chrono::minutes(1) < token_expiry_) return token_;
  HttpRequest req;
  req.method = "PUT";
  req.url = options_.endpoint + "/latest/api/token";
  const auto ttl_s = std::chrono::duration_cast<std::chrono::seconds>(options_.token_ttl).count();
  req.headers = {{"X-aws-ec2-metadata-token-ttl-seconds", std::to_string(ttl_s)}};
  req.timeout = std::min<Duration>(options_.attempt_timeout, Left(deadline, now));
  req.connect_timeout = req.timeout;
  req.max_response_bytes = 4096;
  req.service = "imds";
  ++token_fetches_;
  ASSIGN_OR_RETURN(HttpResponse resp, http_.Send(req));
  switch (resp.status) {
    case 200: break;
    case 400: return Status::InvalidArgument(kImds, "token PUT refused (400): TTL " + std::to_string(ttl_s) + " s is outside 1..21600");
    case 403:
      return Status::PermissionDenied(kImds,
                                      "token PUT refused (403): the instance metadata endpoint may be disabled "
                                      "(aws ec2 modify-instance-metadata-options --http-endpoint enabled)");
    case 404:
    case 405:
      return Status::FailedPrecondition(
          kImds, "token PUT got " + std::to_string(resp.status) + " from " + options_.endpoint + ": this endpoint does not speak IMDSv2");
    default:
      if (resp.status == 429) return Status::ResourceExhausted(kImds, "token PUT throttled (429)");
      return Status::Unavailable(kImds, "token PUT answered " + std::to_string(resp.status));
  }
  if (resp.body.empty()) return Status::Unavailable(kImds, "token PUT returned an empty token");
  token_ = resp.body;
  token_expiry_ = now + options_.token_ttl;
  return token_;
}

void ImdsClient::DropToken(const std::string& token) {
  MutexLock lock(token_mu_);
  if (token_ == token) token_.clear();
}

Status ImdsClient::Attempt(const std::string& path, MonoTime deadline, std::string* body, bool retry) {
  // At most two passes: a 401 means the token was revoked or expired early; fetch a new one once.
  for (int pass = 0; pass < 2; ++pass) {
    ASSIGN_OR_RETURN(std::string token, Token(deadline));
    HttpRequest req;
    req.url = options_.endpoint + "/latest/" + path;
    req.headers = {{"X-aws-ec2-metadata-token", token}};
    req.timeout = std::min<Duration>(options_.attempt_timeout, Left(deadline, env_.NowMono()));
    req.connect_timeout = req.timeout;
    req.max_response_bytes = kMaxAnswer;
    req.service = "imds";
    req.retry = retry || pass > 0;
    ASSIGN_OR_RETURN(HttpResponse resp, http_.Send(req));
    if (resp.status == 200) {
      *body = std::move(resp.body);
      return Status::Ok();
    }
    if (resp.status == 401) {
      DropToken(token);
      continue;
    }
    if (resp.status == 404) return Status::NotFound(kImds, path + " is not in the instance metadata");
    if (resp.status == 403) return Status::PermissionDenied(kImds, path + ": access denied (403)");
    if (resp.status == 429) return Status::ResourceExhausted(kImds, path + ": throttled (429)");
    return Status::Unavailable(kImds, path + ": answered " + std::to_string(resp.status));
  }
  return Status::Unavailable(kImds, path + ": token refused twice (401)");
}

Result<std::string> ImdsClient::Get(const std::string& path) {
  if (options_.disabled) {
    return Status::FailedPrecondition(kImds, "instance metadata is disabled (AWS_EC2_METADATA_DISABLED or aws.imds_disabled)");
  }
  const MonoTime start = env_.NowMono();
  const MonoTime deadline = start + options_.deadline;
  BackoffPolicy policy = options_.backoff;
  policy.max_elapsed = options_.deadline;
  std::string body;
  int attempts = 0;
  Status last;  // the last real answer: an attempt squeezed into the deadline's last moments says nothing
  Status st = Retry(env_, policy, [&] {
    if (Left(deadline, env_.NowMono()) < std::min<Duration>(options_.attempt_timeout, std::chrono::milliseconds(50))) {
      return last.ok() ? Status::DeadlineExceeded(kImds, path + ": deadline passed") : last;
    }
    ++attempts;
    last = Attempt(path, deadline, &body, attempts > 1);
    return last;
  });
  if (!st.ok()) {
    if (!st.retryable()) return st;
    // The last real answer says what went wrong; Retry's own note would only repeat the attempt count.
    const Status& cause = last.ok() ? st : last;
    return Status(st.code(), kImds,
                  "GET " + path + " from " + options_.endpoint + " failed " + std::to_string(attempts) + " times in " +
                      FormatDuration(env_.NowMono() - start) + "; last: " + std::string(cause.message()));
  }
  return body;
}

Result<InstanceIdentity> ImdsClient::Identify() {
  ASSIGN_OR_RETURN(std::string doc, Get("dynamic/instance-identity/document"));
  ASSIGN_OR_RETURN(InstanceIdentity id, ParseIdentityDocument(doc));
  ASSIGN_OR_RETURN(id.mac, Get("meta-data/mac"));
  if (id.local_ipv4.empty()) {
    ASSIGN_OR_RETURN(id.local_ipv4, Get("meta-data/local-ipv4"));
  }
  return id;
}

Result<std::string> ImdsClient::UserData() {
  Result<std::string> data = Get("user-data");
  if (!data.ok() && data.status().code() == StatusCode::kNotFound) return std::string();
  return data;
}

Result<std::vector<std::pair<std::string, std::string>>> ImdsClient::Tags() {
  std::vector<std::pair<std::string, std::string>> tags;
  Result<std::string> keys = Get("meta-data/tags/instance");
  if (!keys.ok()) {
    if (keys.status().code() == StatusCode::kNotFound) return tags;  // tags not enabled in metadata
    return keys.status();
  }
  size_t i = 0;
  while (i < keys->size()) {
    size_t nl = keys->find('\n', i);
    if (nl == std::string::npos) nl = keys->size();
    std::string key = keys->substr(i, nl - i);
    i = nl + 1;
    if (key.empty()) continue;
    ASSIGN_OR_RETURN(std::string value, Get("meta-data/tags/instance/" + key));
    tags.emplace_back(std::move(key), std::move(value));
  }
  return tags;
}

Result<AwsCredentials> ImdsClient::RoleCredentials() {
  Result<std::string> roles = Get("meta-data/iam/security-credentials/");
  if (!roles.ok()) {
    if (roles.status().code() == StatusCode::kNotFound) {
      return Status::NotFound(kImds, "this instance has no IAM role (no instance profile attached)");
    }
    return roles.status();
  }
  std::string role = roles->substr(0, roles->find('\n'));
  if (role.empty()) return Status::NotFound(kImds, "this instance has no IAM role (no instance profile attached)");
  ASSIGN_OR_RETURN(std::string json, Get("meta-data/iam/security-credentials/" + role));
  return ParseImdsCredentials(json, role);
}

Result<std::optional<SpotNotice>> ImdsClient::SpotInterruption() {
  Result<std::string> json = Get("meta-data/spot/instance-action");
  if (!json.ok()) {
    if (json.status().code() == StatusCode::kNotFound) return std::optional<SpotNotice>();
    return json.status();
  }
  ASSIGN_OR_RETURN(SpotNotice notice, ParseSpotNotice(*json));
  return std::optional<SpotNotice>(notice);
}

Result<std::vector<ScheduledEvent>> ImdsClient::ScheduledEvents() {
  Result<std::string> json = Get("meta-data/events/maintenance/scheduled");
  if (!json.ok()) {
    if (json.status().code() == StatusCode::kNotFound) return std::vector<ScheduledEvent>();
    return json.status();
  }
  return ParseScheduledEvents(*json);
}

}  // namespace dlagent
