#pragma once
// AWS credentials, found as the SDKs find them: environment, then the container endpoint, then the
// instance's IAM role through IMDS. Temporary credentials are refreshed 10 to 15 minutes (a random point,
// so that a fleet does not refresh at once) before they expire.
//
// Thread safety: Get() is thread-safe. While credentials are valid but due for refresh, one caller
// refreshes and the others keep using the current ones; when they have expired, callers wait for that one
// refresh. Concurrent callers never cause more than one fetch.

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "bootstrap/aws/http_client.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/sigv4.h"
#include "bootstrap/common/crypto.h"
#include "bootstrap/common/mutex.h"

namespace dlagent {

class CredentialsProvider {
 public:
  virtual ~CredentialsProvider() = default;
  virtual Result<AwsCredentials> Get() = 0;
};

// Fixed credentials (tests, and long-term keys).
class StaticCredentials : public CredentialsProvider {
 public:
  explicit StaticCredentials(AwsCredentials c) : c_(std::move(c)) {}
  Result<AwsCredentials> Get() override { return c_; }

 private:
  AwsCredentials c_;
};

using GetEnvVar = std::function<std::optional<std::string>(const char*)>;

class CredentialChain : public CredentialsProvider {
 public:
  // http, env and imds (may be null: no IMDS source) must outlive the chain.
  CredentialChain(HttpClient& http, Env& env, ImdsClient* imds, GetEnvVar getenv, uint64_t seed = RandomSeed());

  Result<AwsCredentials> Get() override;

  int fetches() const;

 private:
  Result<AwsCredentials> Fetch();
  Result<AwsCredentials> FromContainer(const std::string& url);
  bool DueForRefresh(const AwsCredentials& c, WallTime now) const REQUIRES(mu_);

  HttpClient& http_;
  Env& env_;
  ImdsClient* imds_;
  GetEnvVar getenv_;

  std::mutex refresh_mu_;  // held by the one caller that fetches (guards no state: it serialises fetches)
  mutable Mutex mu_;
  std::optional<AwsCredentials> cached_ GUARDED_BY(mu_);
  Duration refresh_margin_ GUARDED_BY(mu_);  // between 10 and 15 minutes, drawn at each fetch
  std::mt19937_64 rng_ GUARDED_BY(mu_);
  int fetches_ GUARDED_BY(mu_) = 0;
};

}  // namespace dlagent
