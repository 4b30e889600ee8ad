#include "bootstrap/aws/http_metrics.h"

#include <gtest/gtest.h>

#include "bootstrap/aws/fake_http_client.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

TEST(MeteredHttpClientTest, CountsEachCallByServiceAndOutcomeAndTimesIt) {
  FakeEnv env;
  auto fake = std::make_unique<FakeHttpClient>();
  FakeHttpClient* http = fake.get();
  MeteredHttpClient metered(env, std::move(fake));
  auto send = [&](const char* service, const Result<HttpResponse>& answer, Duration took) {
    http->SetHandler([&env, answer, took](const HttpRequest&) {
      env.Advance(took);  // the call takes this long
      return answer;
    });
    HttpRequest req;
    req.url = "http://x/";
    req.service = service;
    (void)metered.Send(req);
  };
  send("sqs", FakeHttpClient::Reply(200, "{}"), std::chrono::milliseconds(3));
  send("sqs", FakeHttpClient::Reply(400, "{\"__type\":\"com.amazonaws.sqs#ThrottlingException\"}"), std::chrono::milliseconds(40));
  send("sqs", FakeHttpClient::Reply(500, ""), std::chrono::seconds(20));
  send("imds", Status::Unavailable("http", "connection refused"), std::chrono::milliseconds(1));
  send("imds", Status::Cancelled("http", "stopping"), std::chrono::milliseconds(1));
  send("somewhere", FakeHttpClient::Reply(429, ""), std::chrono::seconds(40));
  const std::vector<MeteredHttpClient::ServiceCounts> c = metered.counts();
  ASSERT_EQ(c.size(), 3u) << "only the services called, in their order";
  EXPECT_STREQ(c[0].service, "imds");
  EXPECT_EQ(c[0].calls, (std::array<uint64_t, 5>{0, 0, 0, 1, 1}));
  EXPECT_STREQ(c[1].service, "sqs");
  EXPECT_EQ(c[1].calls, (std::array<uint64_t, 5>{1, 1, 1, 0, 0}));
  EXPECT_EQ(c[1].buckets[0], 1u) << "3 ms";
  EXPECT_EQ(c[1].buckets[3], 1u) << "40 ms";
  EXPECT_EQ(c[1].buckets[11], 1u) << "20 s";
  EXPECT_NEAR(c[1].seconds, 20.043, 1e-6);
  EXPECT_STREQ(c[2].service, "other") << "an unknown service is other, so that the label stays bounded";
  EXPECT_EQ(c[2].calls[1], 1u) << "429 is throttled";
  EXPECT_EQ(c[2].buckets[12], 1u) << "over 30 s: above every bound";
}

// A retry loop marks its second and later attempts: IMDS answers 500 twice, then the value.
TEST(MeteredHttpClientTest, ARetryLoopsLaterAttemptsCountAsRetries) {
  FakeEnv env;
  auto fake = std::make_unique<FakeHttpClient>();
  FakeHttpClient* http = fake.get();
  MeteredHttpClient metered(env, std::move(fake));
  int gets = 0;
  http->SetHandler([&](const HttpRequest& req) -> Result<HttpResponse> {
    if (req.method == "PUT") return FakeHttpClient::Reply(200, "token");
    return ++gets <= 2 ? FakeHttpClient::Reply(500, "") : FakeHttpClient::Reply(200, "i-0abc");
  });
  ImdsClient imds(metered, env, ImdsOptions{});
  Result<std::string> id = imds.Get("meta-data/instance-id");
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  const std::vector<MeteredHttpClient::ServiceCounts> c = metered.counts();
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].calls[0], 2u) << "the token and the value";
  EXPECT_EQ(c[0].calls[2], 2u) << "two 500s";
  EXPECT_EQ(c[0].retries, 2u) << "the second and third GET repeated a failed one; the first GET and the token PUT did not";
}

}  // namespace
}  // namespace dlagent
