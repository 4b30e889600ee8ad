#pragma once
// Where the cluster keys come from: gossip.key_file, or gossip.key_source: a file, a Secrets Manager secret or
// a Systems Manager SecureString parameter (docs/aws.md), fetched with the instance role. Either way the text
// is one key a line, 64 hex characters each (openssl rand -hex 32), the first the primary. The keys are held in
// memory only and never logged; errors name the source, never the contents.
//
// Thread safety: a ClusterKeyLoader is used by one thread at a time.

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/daemon/config.h"
#include "agent/daemon/key_source.h"
#include "bootstrap/common/env.h"

namespace dlagent {

class CredentialsProvider;
class HttpClient;
class ImdsClient;
class SecretsClient;

// The clients a fetch from Secrets Manager or SSM goes through (the daemon's). imds may be null
// (aws.imds_disabled); a loader without http and credentials reads key files only.
struct KeyFetchClients {
  HttpClient* http = nullptr;
  ImdsClient* imds = nullptr;
  CredentialsProvider* credentials = nullptr;
};

class ClusterKeyLoader {
 public:
  // env and the clients must outlive the loader. cancel (may be null) ends an AWS fetch's retries.
  ClusterKeyLoader(Env& env, const Config& config, KeyFetchClients aws = {}, const std::atomic<bool>* cancel = nullptr);
  ~ClusterKeyLoader();

  const KeySource& source() const { return source_; }
  // Reads the file, or fetches the secret or parameter (each call retried, bounded); FailedPrecondition when
  // no source is configured.
  Result<std::vector<std::string>> Load();

 private:
  Env& env_;
  const Config config_;
  const KeySource source_;
  const KeyFetchClients aws_;
  const std::atomic<bool>* cancel_;
  std::unique_ptr<SecretsClient> secrets_;  // made at the first fetch (the region may need IMDS)
};

}  // namespace dlagent
