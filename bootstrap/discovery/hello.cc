#include "bootstrap/discovery/hello.h"

#include <arpa/inet.h>

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/common/crypto.h"

namespace dlagent {
namespace {

nlohmann::json HelloJson(const Hello& h) {
  return {{"cluster", h.cluster}, {"instance_id", h.instance_id}, {"ip", h.ip}, {"gossip_port", h.gossip_port}, {"role", h.role}, {"gpus", h.gpus},
          {"az", h.az},           {"unix_ms", h.unix_ms}};
}

// nlohmann's dump of an object is canonical: keys sorted, no whitespace.
std::string Canonical(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

}  // namespace

const char* HelloVerdictName(HelloVerdict v) {
  switch (v) {
    case HelloVerdict::kAccepted: return "accepted";
    case HelloVerdict::kMalformed: return "malformed";
    case HelloVerdict::kBadSignature: return "bad signature";
    case HelloVerdict::kOtherCluster: return "another cluster";
    case HelloVerdict::kStale: return "stale";
  }
  return "unknown";
}

std::string SignHello(const Hello& hello, const std::string& key) {
  const nlohmann::json body = HelloJson(hello);
  return Canonical({{"v", 1}, {"hello", body}, {"sig", HexEncode(HmacSha256(key, Canonical(body)))}});
}

// 2100-01-01: past it a time is a corrupt one (and its nanoseconds would overflow the clock's type).
constexpr int64_t kLatestUnixMs = 4102444800000;

HelloCheck VerifyHello(std::string_view body, const std::string& key, const std::string& cluster, WallTime now, Duration window) {
  HelloCheck c;
  Result<nlohmann::json> j = ParseJsonObject(body, "discovery", "HELLO", 16 << 10);
  if (!j.ok()) {
    c.detail = std::string(j.status().message());
    return c;
  }
  auto version = j->find("v");
  auto hello = j->find("hello");
  auto sig = j->find("sig");
  // Types checked before any value is read: nlohmann's value() throws on a "v" that is an object (found by
  // fuzzing; anyone who can write to the queue could have sent it).
  if (version == j->end() || !version->is_number_integer() || version->get<int64_t>() != 1 || hello == j->end() || !hello->is_object() ||
      sig == j->end() || !sig->is_string()) {
    c.detail = "not a version 1 HELLO";
    return c;
  }
  // The signature covers the object as sent, re-serialised canonically: check it before trusting any field.
  if (!ConstantTimeEquals(HexEncode(HmacSha256(key, Canonical(*hello))), sig->get<std::string>())) {
    c.verdict = HelloVerdict::kBadSignature;
    c.detail = "signature does not verify under this cluster's key";
    return c;
  }
  const nlohmann::json& h = *hello;
  auto str = [&](const char* k) { return h.contains(k) && h[k].is_string() ? h[k].get<std::string>() : std::string(); };
  auto num = [&](const char* k) { return h.contains(k) && h[k].is_number_integer() ? h[k].get<int64_t>() : int64_t{-1}; };
  c.hello = {str("cluster"), str("instance_id"), str("ip"), 0, str("role"), 0, str("az"), num("unix_ms")};
  const int64_t port = num("gossip_port"), gpus = num("gpus");
  in_addr addr;
  if (c.hello.instance_id.empty() || c.hello.instance_id.size() > 64 || inet_pton(AF_INET, c.hello.ip.c_str(), &addr) != 1 || port < 1 ||
      port > 65535 || gpus < 0 || gpus > 1024 || (c.hello.role != "master" && c.hello.role != "worker" && c.hello.role != "server") ||
      c.hello.unix_ms < 0 || c.hello.unix_ms > kLatestUnixMs) {
    c.detail = "signed but incomplete or out of range (instance_id, ip, gossip_port, role, gpus, unix_ms)";
    return c;
  }
  c.hello.gossip_port = static_cast<uint16_t>(port);
  c.hello.gpus = static_cast<uint32_t>(gpus);
  if (c.hello.cluster != cluster) {
    c.verdict = HelloVerdict::kOtherCluster;
    c.detail = "for cluster \"" + c.hello.cluster.substr(0, 64) + "\", not \"" + cluster + "\"";
    return c;
  }
  const auto sent = WallTime(std::chrono::milliseconds(c.hello.unix_ms));
  const auto skew = sent > now ? sent - now : now - sent;
  if (skew > window) {
    c.verdict = HelloVerdict::kStale;
    c.detail = "sent " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(skew).count()) + " s from now, outside the replay window";
    return c;
  }
  c.verdict = HelloVerdict::kAccepted;
  return c;
}

}  // namespace dlagent
