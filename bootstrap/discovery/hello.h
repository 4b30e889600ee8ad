#pragma once
// HELLO: what a booting agent posts on the cluster's SQS queue so that the members already in the cluster
// join it to the gossip. Signed with HMAC-SHA256 under the cluster key, so that a party that can write to
// the queue cannot inject members. A HELLO is accepted only when its signature verifies, its cluster name
// matches, its time is within the replay window, and its body is well formed; every refusal has a reason
// the discovery loop counts and logs before deleting the message.
//
// Thread safety: pure functions.

#include <string>

#include "bootstrap/common/env.h"

namespace dlagent {

struct Hello {
  std::string cluster;
  std::string instance_id;
  std::string ip;  // IPv4 of the gossip endpoint
  uint16_t gossip_port = 0;
  std::string role;  // "master", "worker" or "server"
  uint32_t gpus = 0;
  std::string az;
  int64_t unix_ms = 0;  // when it was sent
};

// The message body: {"v":1,"hello":{...},"sig":"<hex HMAC of the hello object's canonical JSON>"}.
std::string SignHello(const Hello& hello, const std::string& key);

enum class HelloVerdict { kAccepted, kMalformed, kBadSignature, kOtherCluster, kStale };
const char* HelloVerdictName(HelloVerdict v);

struct HelloCheck {
  HelloVerdict verdict = HelloVerdict::kMalformed;
  Hello hello;         // filled when the body parsed
  std::string detail;  // why, in words
};

// window: how far the HELLO's time may be from `now`, either way (clock skew and queue delay).
HelloCheck VerifyHello(std::string_view body, const std::string& key, const std::string& cluster, WallTime now,
                       Duration window = std::chrono::minutes(15));

}  // namespace dlagent
