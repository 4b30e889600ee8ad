// The SQS client against the SQS emulator (fauxqs) on 127.0.0.1: every action the agent uses.
#include <gtest/gtest.h>

#include "bootstrap/aws/sqs_client.h"
#include "tests/support/sqs_emulator.h"
#include "tests/support/temp_dir.h"

namespace dlagent {
namespace {

using namespace std::chrono;

class SqsEmulatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::string error;
    emulator_ = testing::SqsEmulator::Start(dir_->path(), &error).release();
    if (!emulator_) error_ = new std::string(error);
  }
  static void TearDownTestSuite() {
    delete emulator_;
    delete dir_;
    delete error_;
  }
  void SetUp() override {
    if (!emulator_) GTEST_FAIL() << "SQS emulator: " << *error_;
    SqsOptions o;
    o.endpoint = emulator_->endpoint();
    o.region = "us-east-1";
    o.retry.initial = milliseconds(50);
    sqs_ = std::make_unique<SqsClient>(*http_, creds_, *env_, o);
  }

  static testing::TempDir* dir_;
  static testing::SqsEmulator* emulator_;
  static std::string* error_;
  std::unique_ptr<HttpClient> http_ = NewCurlHttpClient();
  std::unique_ptr<Env> env_ = NewPosixEnv();
  StaticCredentials creds_{{"AKIDEXAMPLE", "secret", "", std::nullopt, "test"}};
  std::unique_ptr<SqsClient> sqs_;
};
testing::TempDir* SqsEmulatorTest::dir_ = nullptr;
testing::SqsEmulator* SqsEmulatorTest::emulator_ = nullptr;
std::string* SqsEmulatorTest::error_ = nullptr;

TEST_F(SqsEmulatorTest, CreateAndFindAQueue) {
  Result<std::string> url = sqs_->CreateQueue("dlagent-create", {{"VisibilityTimeout", "30"}});
  ASSERT_TRUE(url.ok()) << url.status().ToString();
  EXPECT_NE(url->find("dlagent-create"), std::string::npos);
  EXPECT_EQ(*sqs_->GetQueueUrl("dlagent-create"), *url);
  EXPECT_EQ(*sqs_->CreateQueue("dlagent-create", {{"VisibilityTimeout", "30"}}), *url);  // idempotent
}

TEST_F(SqsEmulatorTest, MissingQueueIsNotFound) {
  Result<std::string> url = sqs_->GetQueueUrl("dlagent-no-such-queue");
  EXPECT_EQ(url.status().code(), StatusCode::kNotFound) << url.status().ToString();
  EXPECT_EQ(sqs_->requests(), 1u);  // not retried
}

TEST_F(SqsEmulatorTest, SendReceiveDelete) {
  const std::string url = *sqs_->CreateQueue("dlagent-roundtrip");
  Result<std::string> id = sqs_->SendMessage(url, "{\"hello\":\"ሴ\"}", {{"cluster", "demo"}, {"kind", "HELLO"}});
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  Result<std::vector<SqsMessage>> got = sqs_->ReceiveMessage(url, {.wait = seconds(1)});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 1u);
  const SqsMessage& m = (*got)[0];
  EXPECT_EQ(m.message_id, *id);
  EXPECT_EQ(m.body, "{\"hello\":\"ሴ\"}");
  EXPECT_TRUE(m.md5_ok);
  EXPECT_EQ(m.attributes.at("cluster"), "demo");
  EXPECT_EQ(m.attributes.at("kind"), "HELLO");
  ASSERT_TRUE(sqs_->DeleteMessage(url, m.receipt_handle).ok());
  EXPECT_TRUE(sqs_->ReceiveMessage(url, {.wait = seconds(0)})->empty());
}

TEST_F(SqsEmulatorTest, VisibilityTimeoutHidesAndChangeVisibilityReleases) {
  const std::string url = *sqs_->CreateQueue("dlagent-visibility");
  ASSERT_TRUE(sqs_->SendMessage(url, "m").ok());
  auto first = sqs_->ReceiveMessage(url, {.wait = seconds(1), .visibility_timeout = seconds(60)});
  ASSERT_EQ(first->size(), 1u);
  EXPECT_TRUE(sqs_->ReceiveMessage(url, {.wait = seconds(0)})->empty()) << "in flight: hidden";
  ASSERT_TRUE(sqs_->ChangeMessageVisibility(url, (*first)[0].receipt_handle, seconds(0)).ok());
  auto again = sqs_->ReceiveMessage(url, {.wait = seconds(1)});
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].message_id, (*first)[0].message_id);
}

TEST_F(SqsEmulatorTest, EmptyLongPollWaitsThenReturnsNothing) {
  const std::string url = *sqs_->CreateQueue("dlagent-empty");
  const auto start = steady_clock::now();
  Result<std::vector<SqsMessage>> got = sqs_->ReceiveMessage(url, {.wait = seconds(2)});
  const auto took = steady_clock::now() - start;
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_TRUE(got->empty());
  EXPECT_GE(took, milliseconds(1800)) << "the long poll should wait";
  EXPECT_LT(took, seconds(5));
}

TEST_F(SqsEmulatorTest, UpToTenMessagesPerReceive) {
  const std::string url = *sqs_->CreateQueue("dlagent-batch");
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(sqs_->SendMessage(url, "m" + std::to_string(i)).ok());
  auto got = sqs_->ReceiveMessage(url, {.max_messages = 10, .wait = seconds(1)});
  ASSERT_TRUE(got.ok());
  EXPECT_GE(got->size(), 1u);
  EXPECT_LE(got->size(), 10u);
}

}  // namespace
}  // namespace dlagent
