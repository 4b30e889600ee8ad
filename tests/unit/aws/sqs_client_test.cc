#include "bootstrap/aws/sqs_client.h"

#include <gtest/gtest.h>

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/aws/fake_http_client.h"
#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

using namespace std::chrono;

class SqsClientTest : public ::testing::Test {
 protected:
  SqsClient Client() {
    SqsOptions o;
    o.endpoint = "http://127.0.0.1:4566";
    o.region = "us-east-1";
    return SqsClient(http_, creds_, env_, o);
  }
  FakeHttpClient http_;
  FakeEnv env_;
  StaticCredentials creds_{{"AKIDEXAMPLE", "secret", "token", std::nullopt, "test"}};
};

TEST_F(SqsClientTest, SendsASignedJsonRequest) {
  http_.SetHandler([](const HttpRequest&) { return FakeHttpClient::Reply(200, R"({"QueueUrl":"http://q/1/a"})"); });
  ASSERT_EQ(*Client().GetQueueUrl("dlagent-demo"), "http://q/1/a");
  const std::vector<HttpRequest> requests = http_.requests();
  ASSERT_EQ(requests.size(), 1u);
  const HttpRequest& req = requests[0];
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.url, "http://127.0.0.1:4566");
  auto header = [&](const std::string& name) {
    for (const auto& [k, v] : req.headers)
      if (k == name) return v;
    return std::string("<missing>");
  };
  EXPECT_EQ(header("X-Amz-Target"), "AmazonSQS.GetQueueUrl");
  EXPECT_EQ(header("Content-Type"), "application/x-amz-json-1.0");
  EXPECT_EQ(header("Host"), "127.0.0.1:4566");
  EXPECT_EQ(header("X-Amz-Security-Token"), "token");
  EXPECT_EQ(header("X-Amz-Date"), "20260101T000000Z");
  EXPECT_EQ(header("Authorization").rfind("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/sqs/aws4_request", 0), 0u);
  EXPECT_EQ(req.body, R"({"QueueName":"dlagent-demo"})");
}

TEST_F(SqsClientTest, RetriesThrottlingThreeAttemptsInAll) {
  int calls = 0;
  http_.SetHandler([&](const HttpRequest&) {
    ++calls;
    return FakeHttpClient::Reply(400, R"({"__type":"com.amazonaws.sqs#RequestThrottled"})");
  });
  const MonoTime start = env_.NowMono();
  Result<std::string> r = Client().GetQueueUrl("q");
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_LE(env_.NowMono() - start, seconds(3));  // full jitter under 1 s then 2 s
  calls = 0;
  http_.SetHandler(
      [&](const HttpRequest&) { return ++calls == 1 ? FakeHttpClient::Reply(503, "") : FakeHttpClient::Reply(200, R"({"QueueUrl":"u"})"); });
  EXPECT_EQ(*Client().GetQueueUrl("q"), "u");
  EXPECT_EQ(calls, 2);
}

TEST_F(SqsClientTest, DoesNotRetryPermanentErrors) {
  int calls = 0;
  http_.SetHandler([&](const HttpRequest&) {
    ++calls;
    return FakeHttpClient::Reply(400, R"({"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."})",
                                 {{"x-amzn-query-error", "AWS.SimpleQueueService.NonExistentQueue;Sender"}});
  });
  Result<std::string> r = Client().GetQueueUrl("missing");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().ToString().find("The specified queue does not exist"), std::string::npos);
}

TEST_F(SqsClientTest, ValidatesBeforeSending) {
  SqsClient sqs = Client();
  EXPECT_EQ(sqs.SendMessage("u", std::string("bad\x02")).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sqs.GetQueueUrl("has space").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sqs.ReceiveMessage("u", {.max_messages = 11}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sqs.ReceiveMessage("u", {.wait = seconds(21)}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(http_.requests().empty());
}

TEST_F(SqsClientTest, DetectsABodyCorruptedInTransit) {
  http_.SetHandler(
      [](const HttpRequest&) { return FakeHttpClient::Reply(200, R"({"MessageId":"m","MD5OfMessageBody":"00000000000000000000000000000000"})"); });
  Result<std::string> r = Client().SendMessage("u", "hello");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().ToString().find("MD5"), std::string::npos);
}

TEST(SqsEndpointTest, Resolution) {
  EXPECT_EQ(*ResolveSqsEndpoint("", "eu-west-1"), "https://sqs.eu-west-1.amazonaws.com");
  EXPECT_EQ(*ResolveSqsEndpoint("http://127.0.0.1:4566", "eu-west-1"), "http://127.0.0.1:4566");
  EXPECT_EQ(ResolveSqsEndpoint("", "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(ResolveSqsEndpoint("127.0.0.1:4566", "r").ok());
}

}  // namespace
}  // namespace dlagent
