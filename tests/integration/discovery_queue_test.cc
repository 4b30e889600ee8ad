// Discovery over the SQS emulator: signed HELLOs are handed over once; forged, foreign, stale and malformed
// messages are deleted, counted and never acted on; the queue is empty afterwards.
#include "bootstrap/discovery/discovery_queue.h"

#include <gtest/gtest.h>

#include "tests/support/sqs_emulator.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

TEST(DiscoveryQueueTest, OnlySignedHellosOfThisClusterAreActedOn) {
  testing::TempDir dir;
  std::string error;
  auto emulator = testing::SqsEmulator::Start(dir.path(), &error);
  ASSERT_TRUE(emulator) << error;
  auto http = NewCurlHttpClient();
  auto env = NewPosixEnv();
  StaticCredentials creds({"AKIDEXAMPLE", "secret", "", std::nullopt, "test"});
  SqsOptions o{emulator->endpoint(), "us-east-1"};
  o.retry.initial = milliseconds(50);
  SqsClient sqs(*http, creds, *env, o);
  const std::string url = *sqs.CreateQueue("dlagent-demo-discovery");
  const std::string key(32, 'k');
  DiscoveryQueue queue(
      sqs, *env, url, [&] { return std::vector<std::string>{key}; }, "demo");

  const int64_t now_ms = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  const Hello good{"demo", "i-0aaa", "10.0.1.17", 7946, "worker", 8, "us-east-1a", now_ms};
  ASSERT_TRUE(queue.SendHello(good).ok());
  ASSERT_TRUE(queue.SendHello(good).ok());  // a resend: handed over once
  Hello other = good;
  other.cluster = "prod";
  ASSERT_TRUE(sqs.SendMessage(url, SignHello(other, key)).ok());
  Hello stale = good;
  stale.instance_id = "i-0old";
  stale.unix_ms = now_ms - 3600 * 1000;
  ASSERT_TRUE(sqs.SendMessage(url, SignHello(stale, key)).ok());
  Hello forged = good;
  forged.instance_id = "i-0evil";
  ASSERT_TRUE(sqs.SendMessage(url, SignHello(forged, std::string(32, 'x'))).ok());
  ASSERT_TRUE(sqs.SendMessage(url, "{\"hello\": \"world\"}").ok());

  std::vector<std::string> joined;
  for (int round = 0; round < 5 && queue.counters().received < 6; ++round) {
    ASSERT_TRUE(queue.PollOnce(seconds(1), [&](const Hello& h) { joined.push_back(h.instance_id + "@" + h.ip); }).ok());
  }
  EXPECT_EQ(joined, std::vector<std::string>{"i-0aaa@10.0.1.17"});
  DiscoveryCounters c = queue.counters();
  EXPECT_EQ(c.sent, 2u);
  EXPECT_EQ(c.received, 6u);
  EXPECT_EQ(c.accepted, 1u);
  EXPECT_EQ(c.duplicates, 1u);
  EXPECT_EQ(c.refused[HelloVerdict::kOtherCluster], 1u);
  EXPECT_EQ(c.refused[HelloVerdict::kStale], 1u);
  EXPECT_EQ(c.refused[HelloVerdict::kBadSignature], 1u);
  EXPECT_EQ(c.refused[HelloVerdict::kMalformed], 1u);
  // Everything read was deleted: the queue is quiet.
  EXPECT_TRUE(sqs.ReceiveMessage(url, {.wait = seconds(0)})->empty());

  // While keys rotate, a HELLO signed with the old key is accepted by an agent that has the new one as
  // primary and the old one still installed, and refused once the old one is removed.
  const std::string next(32, 'n');
  DiscoveryQueue rotating(
      sqs, *env, url,
      [&] {
        return std::vector<std::string>{next, key};
      },
      "demo");
  DiscoveryQueue rotated(
      sqs, *env, url, [&] { return std::vector<std::string>{next}; }, "demo");
  Hello late = good;
  late.instance_id = "i-0late";
  ASSERT_TRUE(queue.SendHello(late).ok());
  joined.clear();
  for (int round = 0; round < 5 && joined.empty(); ++round) {
    ASSERT_TRUE(rotating.PollOnce(seconds(1), [&](const Hello& h) { joined.push_back(h.instance_id); }).ok());
  }
  EXPECT_EQ(joined, std::vector<std::string>{"i-0late"});
  late.instance_id = "i-0later";
  ASSERT_TRUE(queue.SendHello(late).ok());
  for (int round = 0; round < 5 && rotated.counters().received == 0; ++round) {
    ASSERT_TRUE(rotated.PollOnce(seconds(1), [&](const Hello& h) { joined.push_back(h.instance_id); }).ok());
  }
  EXPECT_EQ(rotated.counters().refused[HelloVerdict::kBadSignature], 1u);
  EXPECT_EQ(joined.size(), 1u);
}

}  // namespace
}  // namespace dlagent
