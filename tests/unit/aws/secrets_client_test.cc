// SecretsClient against the project's Secrets Manager / SSM emulator (which checks each request's shape and
// SigV4 signature) over real HTTP, and against scripted answers for errors and retries.
#include "bootstrap/aws/secrets_client.h"

#include <gtest/gtest.h>

#include "bootstrap/aws/fake_http_client.h"
#include "bootstrap/common/env.h"
#include "bootstrap/common/fake_env.h"
#include "tests/support/secrets_emulator.h"

namespace dlagent {
namespace {

const AwsCredentials kCreds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token", std::nullopt, "test"};

class SecretsEmulatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    emulator_.PutSecret("dlagent/cluster-key", "the keys");
    emulator_.PutParameter("/dlagent/cluster-key", "the parameter");
    ASSERT_TRUE(emulator_.Start().ok());
  }
  SecretsClient Client(const AwsJsonService& service, CredentialsProvider& creds) {
    SecretsOptions o;
    o.endpoint = emulator_.url();
    o.region = "us-east-1";
    o.retry.max_attempts = 1;
    return SecretsClient(*http_, creds, *env_, service, o);
  }
  testing::SecretsEmulator emulator_{kCreds, "us-east-1"};
  std::unique_ptr<HttpClient> http_ = NewCurlHttpClient();
  std::unique_ptr<Env> env_ = NewPosixEnv();
  StaticCredentials creds_{kCreds};
};

TEST_F(SecretsEmulatorTest, BothCallsAreSignedAndShapedAsTheServicesWantThem) {
  Result<std::string> secret = Client(kSecretsManager, creds_).GetSecretString("dlagent/cluster-key");
  ASSERT_TRUE(secret.ok()) << secret.status().ToString();
  EXPECT_EQ(*secret, "the keys");
  Result<std::string> parameter = Client(kSsm, creds_).GetDecryptedParameter("/dlagent/cluster-key");
  ASSERT_TRUE(parameter.ok()) << parameter.status().ToString();
  EXPECT_EQ(*parameter, "the parameter");
  EXPECT_EQ(emulator_.served("GetSecretValue"), 1);
  EXPECT_EQ(emulator_.served("GetParameter"), 1);
  EXPECT_TRUE(emulator_.problems().empty()) << emulator_.problems().front();
}

TEST_F(SecretsEmulatorTest, MissingNamesAndWrongKeysAreClearErrors) {
  Result<std::string> missing = Client(kSecretsManager, creds_).GetSecretString("nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("check the name or ARN and the region"), std::string::npos) << missing.status().ToString();
  EXPECT_EQ(Client(kSsm, creds_).GetDecryptedParameter("/nope").status().code(), StatusCode::kNotFound);
  StaticCredentials wrong{{"AKIDEXAMPLE", "not-the-secret", "session-token", std::nullopt, "test"}};
  Result<std::string> refused = Client(kSsm, wrong).GetDecryptedParameter("/dlagent/cluster-key");
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(refused.status().message().find("ssm:GetParameter on the parameter and kms:Decrypt"), std::string::npos) << refused.status().ToString();
  EXPECT_EQ(emulator_.problems().size(), 1u);  // the bad signature, caught by the emulator
}

TEST(SecretsClientTest, ThrottlingAndServerErrorsAreRetriedAndAnswersNeverQuoted) {
  FakeHttpClient http;
  FakeEnv env;
  StaticCredentials creds{kCreds};
  int calls = 0;
  http.SetHandler([&](const HttpRequest& req) {
    ++calls;
    if (calls == 1) return FakeHttpClient::Reply(400, R"({"__type":"ThrottlingException","message":"Rate exceeded"})");
    if (calls == 2) return FakeHttpClient::Reply(500, R"({"__type":"InternalServiceError"})");
    return FakeHttpClient::Reply(200, R"({"SecretString":"k"})");
  });
  SecretsOptions o;
  o.endpoint = "https://secretsmanager.us-east-1.amazonaws.com";
  o.region = "us-east-1";
  SecretsClient client(http, creds, env, kSecretsManager, o);
  Result<std::string> v = client.GetSecretString("s");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(http.requests()[0].body, R"({"SecretId":"s"})");
  // A secret stored as binary is refused, saying how to store it, without its bytes.
  http.SetHandler([](const HttpRequest&) { return FakeHttpClient::Reply(200, R"({"SecretBinary":"c2VjcmV0LWJ5dGVz"})"); });
  Result<std::string> binary = client.GetSecretString("s");
  EXPECT_EQ(binary.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(binary.status().ToString().find("c2VjcmV0"), std::string::npos);
  // Access denied names the permission the instance role lacks.
  http.SetHandler([](const HttpRequest&) { return FakeHttpClient::Reply(400, R"({"__type":"AccessDeniedException","Message":"no"})"); });
  Result<std::string> denied = client.GetSecretString("arn:aws:secretsmanager:us-east-1:1:secret:s");
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("secretsmanager:GetSecretValue"), std::string::npos) << denied.status().ToString();
  EXPECT_EQ(*ResolveServiceEndpoint("", kSsm, "eu-west-1"), "https://ssm.eu-west-1.amazonaws.com");
}

}  // namespace
}  // namespace dlagent
