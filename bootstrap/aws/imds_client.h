#pragma once
// ImdsClient: the instance metadata service, IMDSv2 only (a session token on every request).
//
// Thread safety: all methods are thread-safe; the token is shared and refreshed by one caller at a time.
// Every call is bounded by options.deadline, with jittered backoff between attempts.

#include <optional>
#include <string>
#include <vector>

#include "bootstrap/aws/http_client.h"
#include "bootstrap/aws/imds_parse.h"
#include "bootstrap/common/backoff.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

struct ImdsOptions {
  std::string endpoint = "http://169.254.169.254";     // Default; AWS_EC2_METADATA_SERVICE_ENDPOINT overrides (config).
  bool disabled = false;                               // AWS_EC2_METADATA_DISABLED: every call fails at once.
  Duration token_ttl = std::chrono::hours(6);          // Default: 21600 s, the most IMDS grants.
  Duration attempt_timeout = std::chrono::seconds(1);  // Default: 1 s per HTTP attempt, as the AWS SDKs.
  Duration deadline = std::chrono::seconds(20);        // Default: 20 s for one call, retries included.
  BackoffPolicy backoff{std::chrono::milliseconds(100), std::chrono::seconds(2), 2.0, 0, Duration(0)};
};

class ImdsClient {
 public:
  // http and env must outlive the client.
  ImdsClient(HttpClient& http, Env& env, ImdsOptions options);

  // GET /latest/<path> ("meta-data/instance-id"). NotFound for 404 (not retried); Unavailable or
  // DeadlineExceeded once the deadline is spent on 5xx, 429 or network errors; FailedPrecondition when
  // disabled; PermissionDenied when IMDS refuses tokens.
  Result<std::string> Get(const std::string& path);

  // The identity document plus the MAC address.
  Result<InstanceIdentity> Identify();
  Result<std::string> UserData();  // "" when the instance has none
  // Instance tags, when the instance allows tags in metadata; empty when it does not.
  Result<std::vector<std::pair<std::string, std::string>>> Tags();
  // The credentials of the instance's IAM role. NotFound when it has none.
  Result<AwsCredentials> RoleCredentials();
  // The pending spot interruption, if any.
  Result<std::optional<SpotNotice>> SpotInterruption();
  Result<std::vector<ScheduledEvent>> ScheduledEvents();

  // Token PUTs so far (tests check caching).
  int token_fetches() const;

 private:
  Result<std::string> Token(MonoTime deadline);
  void DropToken(const std::string& token);
  Status Attempt(const std::string& path, MonoTime deadline, std::string* body, bool retry);  // retry: not the first attempt

  HttpClient& http_;
  Env& env_;
  const ImdsOptions options_;

  mutable Mutex token_mu_;  // held while fetching, so that concurrent callers share one PUT
  std::string token_ GUARDED_BY(token_mu_);
  MonoTime token_expiry_ GUARDED_BY(token_mu_){};
  int token_fetches_ GUARDED_BY(token_mu_) = 0;
};

}  // namespace dlagent
