#include "bootstrap/discovery/hello.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

using namespace std::chrono;

const std::string kKey(32, 'k');
const WallTime kNow = WallTime(seconds(1795000000));

Hello Sample() {
  return {"demo", "i-0123456789abcdef0", "10.0.1.17", 7946, "worker", 8, "us-east-1a", duration_cast<milliseconds>(kNow.time_since_epoch()).count()};
}

TEST(HelloTest, SignedHelloVerifies) {
  HelloCheck c = VerifyHello(SignHello(Sample(), kKey), kKey, "demo", kNow + seconds(3));
  ASSERT_EQ(c.verdict, HelloVerdict::kAccepted) << c.detail;
  EXPECT_EQ(c.hello.instance_id, "i-0123456789abcdef0");
  EXPECT_EQ(c.hello.gossip_port, 7946);
  EXPECT_EQ(c.hello.gpus, 8u);
}

TEST(HelloTest, RefusalsHaveReasons) {
  const std::string good = SignHello(Sample(), kKey);
  struct Case {
    std::string body;
    std::string key, cluster;
    WallTime now;
    HelloVerdict want;
  } cases[] = {
      {good, std::string(32, 'x'), "demo", kNow, HelloVerdict::kBadSignature},
      {good, kKey, "prod", kNow, HelloVerdict::kOtherCluster},
      {good, kKey, "demo", kNow + minutes(16), HelloVerdict::kStale},
      {good, kKey, "demo", kNow - minutes(16), HelloVerdict::kStale},
      {"not json", kKey, "demo", kNow, HelloVerdict::kMalformed},
      {"{\"v\":2}", kKey, "demo", kNow, HelloVerdict::kMalformed},
      {std::string("{\"v\":1,\"hello\":{},\"sig\":\"00\"}"), kKey, "demo", kNow, HelloVerdict::kBadSignature},
      // Found by fuzzing: a "v" of another type threw out of the verifier (and out of the poller's thread).
      {std::string("{\"v\":{\"cluster\":\"fuzz\"},\"sig\":\"00\"}"), kKey, "demo", kNow, HelloVerdict::kMalformed},
      {std::string("{\"v\":\"1\",\"hello\":{},\"sig\":\"00\"}"), kKey, "demo", kNow, HelloVerdict::kMalformed},
  };
  for (const auto& c : cases) {
    HelloCheck r = VerifyHello(c.body, c.key, c.cluster, c.now);
    EXPECT_EQ(r.verdict, c.want) << HelloVerdictName(r.verdict) << ": " << r.detail;
    EXPECT_FALSE(r.detail.empty());
  }
}

TEST(HelloTest, TamperingBreaksTheSignature) {
  std::string body = SignHello(Sample(), kKey);
  const size_t at = body.find("10.0.1.17");
  body.replace(at, 9, "10.0.1.66");
  EXPECT_EQ(VerifyHello(body, kKey, "demo", kNow).verdict, HelloVerdict::kBadSignature);
}

TEST(HelloTest, SignedButIncompleteIsMalformed) {
  Hello h = Sample();
  h.role = "scheduler";
  EXPECT_EQ(VerifyHello(SignHello(h, kKey), kKey, "demo", kNow).verdict, HelloVerdict::kMalformed);
  h = Sample();
  h.ip = "not-an-ip";
  EXPECT_EQ(VerifyHello(SignHello(h, kKey), kKey, "demo", kNow).verdict, HelloVerdict::kMalformed);
}

}  // namespace
}  // namespace dlagent
