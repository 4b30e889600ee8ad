#include "proto/grpc_status.h"

#include <gtest/gtest.h>

namespace dlagent {
namespace {

TEST(GrpcStatusTest, EveryCodeSurvivesTheRoundTripWithItsMessage) {
  for (StatusCode code : {StatusCode::kInvalidArgument, StatusCode::kNotFound, StatusCode::kAlreadyExists, StatusCode::kPermissionDenied,
                          StatusCode::kFailedPrecondition, StatusCode::kUnavailable, StatusCode::kDeadlineExceeded, StatusCode::kResourceExhausted,
                          StatusCode::kCancelled, StatusCode::kInternal}) {
    const Status ours(code, "dlps-shard", "key 7 is not declared");
    const grpc::Status wire = ToGrpcStatus(ours);
    EXPECT_EQ(wire.error_message(), ours.ToString());
    const Status back = FromGrpcStatus(wire, "dlps-client", "dlps server 10.0.0.1:7070: init");
    EXPECT_EQ(back.code(), code) << StatusCodeName(code);
    EXPECT_NE(back.ToString().find("dlps server 10.0.0.1:7070: init: " + ours.ToString()), std::string::npos) << back.ToString();
  }
  EXPECT_TRUE(ToGrpcStatus(Status::Ok()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, "x", "y").ok());
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no"), "x", "y").code(), StatusCode::kInternal);
  EXPECT_EQ(ToGrpcStatus(Status::IoError("env", "fsync")).error_code(), grpc::StatusCode::INTERNAL);
}

TEST(GrpcStatusTest, AStatusWithoutAMessageSaysWhatItIsAndWhatRanOut) {
  // A server out of threads answers RESOURCE_EXHAUSTED with an empty message: agentctl printed "agentd: ".
  const Status s = FromGrpcStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, ""), "agentctl", "agentd");
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.ToString().find("agentd: gRPC status 8 with no message (the server ran out of threads, memory or connections)"), std::string::npos)
      << s.ToString();
  EXPECT_NE(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNKNOWN, ""), "x", "y").ToString().find("y: gRPC status 2 with no message"),
            std::string::npos);
}

}  // namespace
}  // namespace dlagent
