#include "bootstrap/common/status.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

TEST(StatusTest, OkCarriesNoMessage) {
  Status st;
  EXPECT_TRUE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kOk);
  EXPECT_EQ(st.ToString(), "ok");
}

TEST(StatusTest, ErrorNamesComponentAndMessage) {
  Status st = Status::Unavailable("imds", "token PUT timed out after 1s");
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(st.retryable());
  EXPECT_EQ(st.ToString(), "imds: token PUT timed out after 1s");
  Status copy = st;  // NOLINT(performance-unnecessary-copy-initialization): the copy is what is tested
  EXPECT_EQ(copy.ToString(), st.ToString());
  EXPECT_EQ(st.Annotate("identify").ToString(), "imds: identify: token PUT timed out after 1s");
}

TEST(StatusTest, RetryableCodes) {
  struct Case {
    Status st;
    bool retryable;
  } cases[] = {
      {Status::Unavailable("x", "y"), true},       {Status::DeadlineExceeded("x", "y"), true},
      {Status::ResourceExhausted("x", "y"), true}, {Status::InvalidArgument("x", "y"), false},
      {Status::NotFound("x", "y"), false},         {Status::PermissionDenied("x", "y"), false},
      {Status::Internal("x", "y"), false},         {Status(), false},
  };
  for (const auto& c : cases) EXPECT_EQ(c.st.retryable(), c.retryable) << c.st.ToString();
}

TEST(StatusTest, FromErrnoMapsCommonErrors) {
  EXPECT_EQ(Status::FromErrno("env", "open /x", ENOENT).code(), StatusCode::kNotFound);
  EXPECT_EQ(Status::FromErrno("env", "open /x", EACCES).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(Status::FromErrno("env", "write /x", ENOSPC).code(), StatusCode::kIoError);
  EXPECT_NE(Status::FromErrno("env", "write /x", ENOSPC).ToString().find("No space left"), std::string::npos);
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("half", std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(ResultTest, PropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  Result<int> r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().ToString(), "half: 3 is odd");
}

TEST(ResultTest, OkStatusWithoutValueIsAnError) {
  Result<int> r{Status()};
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace dlagent
