#pragma once
// An emulator of the two calls the agent makes to fetch the cluster key: Secrets Manager's GetSecretValue and
// Systems Manager's GetParameter (AWS JSON 1.1 over HTTP POST). It checks each request's shape as the services
// would: the content type, X-Amz-Target, the JSON fields (SecretId; Name with WithDecryption true), and the
// SigV4 signature, recomputed over the signed headers with the credentials it was given (region and service
// from the credential scope). A request that fails a check is answered as AWS answers it (400/403 with a
// __type) and counted in problems().
//
// Thread safety: the server runs on its own thread; every method may be called from any thread.

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "bootstrap/aws/sigv4.h"
#include "tests/support/local_http_server.h"

namespace dlagent::testing {

class SecretsEmulator {
 public:
  SecretsEmulator(AwsCredentials credentials, std::string region);
  ~SecretsEmulator();

  void PutSecret(const std::string& id, const std::string& value);  // by name or ARN
  void PutParameter(const std::string& name, const std::string& value);
  Status Start(const std::string& host = "127.0.0.1");
  std::string url() const { return server_.url(); }

  std::vector<std::string> problems() const;    // why requests were refused, one line each
  int served(const std::string& action) const;  // "GetSecretValue", "GetParameter": answered with a value

 private:
  void Handle(const httplib::Request& req, httplib::Response& res);
  void Refuse(httplib::Response& res, int status, const std::string& type, const std::string& why);

  const AwsCredentials credentials_;
  const std::string region_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> secrets_, parameters_;  // protected by mu_
  std::vector<std::string> problems_;                        // protected by mu_
  std::map<std::string, int> served_;                        // protected by mu_
  LocalHttpServer server_;
};

}  // namespace dlagent::testing
