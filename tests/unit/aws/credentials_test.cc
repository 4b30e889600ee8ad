#include "bootstrap/aws/credentials.h"

#include <map>
#include <thread>

#include <gtest/gtest.h>

#include "bootstrap/aws/aws_json.h"
#include "bootstrap/aws/fake_http_client.h"
#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

using namespace std::chrono;

GetEnvVar Vars(const std::map<std::string, std::string>& vars) {
  return [vars](const char* n) -> std::optional<std::string> {
    auto it = vars.find(n);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

// A container credentials endpoint whose credentials expire `life` after each fetch.
class ContainerEndpoint {
 public:
  ContainerEndpoint(FakeHttpClient& http, FakeEnv& env, Duration life, milliseconds delay = milliseconds(0)) {
    http.SetHandler([&env, life, delay, this](const HttpRequest& req) -> Result<HttpResponse> {
      ++fetches;
      last_auth = req.headers.empty() ? "" : req.headers[0].second;
      if (delay.count()) std::this_thread::sleep_for(delay);
      std::string body = R"({"AccessKeyId":"AKID)" + std::to_string(fetches.load()) + R"(","SecretAccessKey":"s","Token":"t","Expiration":")" +
                         FormatIso8601(env.NowWall() + life) + R"("})";
      return FakeHttpClient::Reply(200, body);
    });
  }
  std::atomic<int> fetches{0};
  std::string last_auth;
};

TEST(CredentialsTest, EnvironmentComesFirst) {
  FakeHttpClient http;
  FakeEnv env;
  CredentialChain chain(http, env, nullptr,
                        Vars({{"AWS_ACCESS_KEY_ID", "AKIDENV"},
                              {"AWS_SECRET_ACCESS_KEY", "s"},
                              {"AWS_SESSION_TOKEN", "t"},
                              {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:1/creds"}}));
  Result<AwsCredentials> c = chain.Get();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "AKIDENV");
  EXPECT_EQ(c->session_token, "t");
  EXPECT_EQ(c->source, "environment");
  EXPECT_TRUE(http.requests().empty());
}

TEST(CredentialsTest, HalfSetEnvironmentIsAnError) {
  FakeHttpClient http;
  FakeEnv env;
  CredentialChain chain(http, env, nullptr, Vars({{"AWS_ACCESS_KEY_ID", "AKIDENV"}}));
  EXPECT_EQ(chain.Get().status().code(), StatusCode::kInvalidArgument);
}

TEST(CredentialsTest, ContainerEndpointWithAuthorization) {
  FakeHttpClient http;
  FakeEnv env;
  ContainerEndpoint endpoint(http, env, hours(1));
  CredentialChain chain(
      http, env, nullptr,
      Vars({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds"}, {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer abc"}}));
  Result<AwsCredentials> c = chain.Get();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->source, "container");
  EXPECT_EQ(c->access_key_id, "AKID1");
  EXPECT_EQ(endpoint.last_auth, "Bearer abc");
  EXPECT_EQ(http.requests()[0].url, "http://127.0.0.1:9/creds");
}

TEST(CredentialsTest, NoSourceSaysWhatToDo) {
  FakeHttpClient http;
  FakeEnv env;
  CredentialChain chain(http, env, nullptr, Vars({}));
  Result<AwsCredentials> c = chain.Get();
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().ToString().find("attach an IAM instance profile"), std::string::npos);
}

// Refreshed between 15 and 10 minutes before expiry, not earlier, not later.
TEST(CredentialsTest, RefreshesTenToFifteenMinutesBeforeExpiry) {
  for (uint64_t seed = 0; seed < 5; ++seed) {
    FakeHttpClient http;
    FakeEnv env;
    ContainerEndpoint endpoint(http, env, hours(1));
    CredentialChain chain(http, env, nullptr, Vars({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://c/"}}), seed);
    ASSERT_EQ(chain.Get()->access_key_id, "AKID1");
    env.Advance(minutes(44));  // 16 minutes left
    EXPECT_EQ(chain.Get()->access_key_id, "AKID1");
    EXPECT_EQ(endpoint.fetches.load(), 1);
    env.Advance(minutes(7));  // 9 minutes left
    EXPECT_EQ(chain.Get()->access_key_id, "AKID2");
    EXPECT_EQ(endpoint.fetches.load(), 2);
  }
}

TEST(CredentialsTest, FailedRefreshKeepsValidCredentials) {
  FakeHttpClient http;
  FakeEnv env;
  ContainerEndpoint endpoint(http, env, hours(1));
  CredentialChain chain(http, env, nullptr, Vars({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://c/"}}));
  ASSERT_TRUE(chain.Get().ok());
  http.SetHandler([](const HttpRequest&) -> Result<HttpResponse> { return Status::Unavailable("http", "down"); });
  env.Advance(minutes(55));
  Result<AwsCredentials> c = chain.Get();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->access_key_id, "AKID1");
  env.Advance(minutes(6));  // now expired: the error surfaces
  EXPECT_FALSE(chain.Get().ok());
}

TEST(CredentialsTest, ConcurrentCallersTriggerOneRefresh) {
  FakeHttpClient http;
  FakeEnv env;
  ContainerEndpoint endpoint(http, env, hours(1), milliseconds(100));
  CredentialChain chain(http, env, nullptr, Vars({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://c/"}}));
  auto hammer = [&] {
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int i = 0; i < 16; ++i) threads.emplace_back([&] { ok += chain.Get().ok(); });
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 16);
  };
  hammer();  // nothing cached: everyone waits for one fetch
  EXPECT_EQ(endpoint.fetches.load(), 1);
  env.Advance(minutes(52));
  hammer();  // due for refresh, still valid: one refreshes
  EXPECT_EQ(endpoint.fetches.load(), 2);
  env.Advance(hours(2));
  hammer();  // expired: everyone waits for one fetch
  EXPECT_EQ(endpoint.fetches.load(), 3);
}

}  // namespace
}  // namespace dlagent
