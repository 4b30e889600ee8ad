#pragma once
// An instance metadata service for tests and the local cluster, faithful to IMDSv2:
//   PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds 1..21600 (else 400; 403 with
//   X-Forwarded-For), 401 for a GET with a missing, unknown or expired token, 404 for absent items,
//   spot/instance-action 404 until a notice is triggered, IAM credentials with a moving Expiration.
// Faults (500s, slow answers, 429 throttling, refused token PUTs) can be set at start or at run time, in
// process or through control endpoints under /_emulator/ (see README.md beside this file).
//
// The instance is described by a JSON object:
//   {"instance-id": "i-0123456789abcdef0", "instance-type": "p4d.24xlarge", "local-ipv4": "10.0.1.17",
//    "mac": "0e:1f:2a:3b:4c:5d", "availability-zone": "us-east-1a", "region": "us-east-1",
//    "account-id": "123456789012", "ami-id": "ami-0abc", "iam-role": "dlagent-node",
//    "credentials": {"AccessKeyId": "...", "SecretAccessKey": "...", "Token": "...", "expires_in_s": 3600},
//    "user-data": "...", "tags": {"Name": "node-1"}}
// Only instance-id, instance-type, local-ipv4, availability-zone and region are required.
//
// Thread safety: all methods are thread-safe.

#include <memory>
#include <string>

#include "bootstrap/common/status.h"

namespace dlagent::testing {

enum class ImdsFault { kNone, kError500, kSlow, kThrottle, kTokenRefused };

struct ImdsStats {
  int token_puts = 0;
  int gets = 0;
  int unauthorized = 0;  // GETs answered 401
  int faulted = 0;       // requests answered by a fault
};

class ImdsEmulator {
 public:
  // Listens on host:port (port 0: any free port). InvalidArgument for a bad metadata document.
  static Result<std::unique_ptr<ImdsEmulator>> Start(const std::string& metadata_json, const std::string& host = "127.0.0.1", int port = 0);
  virtual ~ImdsEmulator() = default;

  virtual int port() const = 0;
  virtual std::string endpoint() const = 0;  // "http://127.0.0.1:PORT"
  // Applies `fault` to the next `count` metadata requests (-1: until changed). kSlow delays by `delay_ms`.
  virtual void SetFault(ImdsFault fault, int count = -1, int delay_ms = 2000) = 0;
  virtual void TriggerSpotNotice(const std::string& action, const std::string& time) = 0;
  virtual void SetScheduledEvents(const std::string& json_array) = 0;
  // Every token issued so far stops working (as if its TTL had passed).
  virtual void ExpireTokens() = 0;
  virtual ImdsStats stats() const = 0;
};

// "error500", "slow", "throttle", "token-refused", "none".
Result<ImdsFault> ParseImdsFault(const std::string& name);

}  // namespace dlagent::testing
