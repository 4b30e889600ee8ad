#include "bootstrap/aws/sqs_parse.h"

#include <gtest/gtest.h>

#include "bootstrap/common/crypto.h"

namespace dlagent {
namespace {

TEST(SqsErrorTest, ParsesTypeHeaderAndStatus) {
  struct Case {
    int status;
    const char* header;
    const char* body;
    SqsErrorCode code;
    const char* name;
    StatusCode status_code;
  } cases[] = {
      {400, "AWS.SimpleQueueService.NonExistentQueue;Sender",
       R"({"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."})", SqsErrorCode::kQueueDoesNotExist,
       "AWS.SimpleQueueService.NonExistentQueue", StatusCode::kNotFound},
      {400, "", R"({"__type":"com.amazonaws.sqs#QueueDoesNotExist"})", SqsErrorCode::kQueueDoesNotExist, "QueueDoesNotExist", StatusCode::kNotFound},
      {400, "", R"({"__type":"ThrottlingException","message":"Rate exceeded"})", SqsErrorCode::kThrottling, "ThrottlingException",
       StatusCode::kResourceExhausted},
      {403, "", R"({"__type":"com.amazon.coral.service#InvalidClientTokenId"})", SqsErrorCode::kInvalidSignature, "InvalidClientTokenId",
       StatusCode::kPermissionDenied},
      {400, "", R"({"__type":"com.amazonaws.sqs#ReceiptHandleIsInvalid"})", SqsErrorCode::kReceiptHandleIsInvalid, "ReceiptHandleIsInvalid",
       StatusCode::kInvalidArgument},
      {503, "", "<html>Service Unavailable</html>", SqsErrorCode::kServiceUnavailable, "HTTP 503", StatusCode::kUnavailable},
      {429, "", "", SqsErrorCode::kThrottling, "HTTP 429", StatusCode::kResourceExhausted},
      {500, "", "{\"__type\":", SqsErrorCode::kInternalError, "HTTP 500", StatusCode::kUnavailable},
      {400, "", R"({"__type":"com.amazonaws.sqs#SomethingNew"})", SqsErrorCode::kUnknown, "SomethingNew", StatusCode::kInternal},
  };
  for (const auto& c : cases) {
    SqsError e = ParseSqsError(c.status, c.header, c.body);
    EXPECT_EQ(e.code, c.code) << c.body;
    EXPECT_EQ(e.name, c.name) << c.body;
    Status st = SqsErrorToStatus(e, "GetQueueUrl");
    EXPECT_EQ(st.code(), c.status_code) << st.ToString();
    EXPECT_NE(st.ToString().find("GetQueueUrl"), std::string::npos);
  }
  EXPECT_TRUE(SqsErrorToStatus(ParseSqsError(400, "", R"({"__type":"RequestThrottled"})"), "x").retryable());
  EXPECT_FALSE(SqsErrorToStatus(ParseSqsError(400, "", R"({"__type":"QueueDoesNotExist"})"), "x").retryable());
}

TEST(SqsMessageBodyTest, EnforcesSizeAndCharacterRules) {
  EXPECT_TRUE(ValidateSqsMessageBody("hello").ok());
  EXPECT_TRUE(ValidateSqsMessageBody("tab\tlf\ncr\r \xe1\x88\xb4 \xf0\x9f\x98\x80").ok());  // ሴ and an emoji
  EXPECT_TRUE(ValidateSqsMessageBody(std::string(1 << 20, 'x')).ok());
  struct Case {
    std::string body;
    const char* want;
  } cases[] = {
      {"", "empty"},
      {std::string((1 << 20) + 1, 'x'), "over the SQS limit of 1 MiB"},
      {std::string("a\x01z"), "a character SQS does not allow at byte 1"},
      {"\xff", "invalid UTF-8 at byte 0"},
      {"ab\xe1\x88", "truncated UTF-8 at byte 2"},
      {"\xc0\xaf", "invalid UTF-8"},       // overlong '/'
      {"\xed\xa0\x80", "does not allow"},  // a UTF-16 surrogate
      {"\xef\xbf\xbe", "does not allow"},  // U+FFFE
  };
  for (const auto& c : cases) {
    Status st = ValidateSqsMessageBody(c.body);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.want;
    EXPECT_NE(st.ToString().find(c.want), std::string::npos) << st.ToString();
  }
}

TEST(SqsReceiveTest, ParsesMessagesAndChecksMd5) {
  const std::string good_md5 = HexEncode(Md5("hello"));
  Result<std::vector<SqsMessage>> r = ParseReceiveMessage(
      R"({"Messages":[{"MessageId":"m1","ReceiptHandle":"r1","Body":"hello","MD5OfBody":")" + good_md5 +
      R"(","MessageAttributes":{"cluster":{"DataType":"String","StringValue":"demo"},"bin":{"DataType":"Binary","BinaryValue":"AA=="}}},
        {"MessageId":"m2","ReceiptHandle":"r2","Body":"tampered","MD5OfBody":")" +
      good_md5 + R"("}]})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].body, "hello");
  EXPECT_TRUE((*r)[0].md5_ok);
  EXPECT_EQ((*r)[0].attributes.at("cluster"), "demo");
  EXPECT_EQ((*r)[0].attributes.count("bin"), 0u);
  EXPECT_FALSE((*r)[1].md5_ok);
  EXPECT_TRUE(ParseReceiveMessage("{}")->empty());
  EXPECT_TRUE(ParseReceiveMessage(R"({"Messages":[]})")->empty());
  for (const char* bad : {"", "[]", R"({"Messages":{}})", R"({"Messages":[1]})", R"({"Messages":[{"MessageId":"m"}]})",
                          R"({"Messages":[{"MessageId":1,"ReceiptHandle":"r","Body":"b"}]})"}) {
    EXPECT_EQ(ParseReceiveMessage(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace dlagent
