#include "proto/grpc_status.h"

#include <string>
#include <utility>

namespace dlagent {
namespace {

constexpr std::pair<StatusCode, grpc::StatusCode> kCodes[] = {
    {StatusCode::kInvalidArgument, grpc::StatusCode::INVALID_ARGUMENT},
    {StatusCode::kNotFound, grpc::StatusCode::NOT_FOUND},
    {StatusCode::kAlreadyExists, grpc::StatusCode::ALREADY_EXISTS},
    {StatusCode::kPermissionDenied, grpc::StatusCode::PERMISSION_DENIED},
    {StatusCode::kFailedPrecondition, grpc::StatusCode::FAILED_PRECONDITION},
    {StatusCode::kUnavailable, grpc::StatusCode::UNAVAILABLE},
    {StatusCode::kDeadlineExceeded, grpc::StatusCode::DEADLINE_EXCEEDED},
    {StatusCode::kResourceExhausted, grpc::StatusCode::RESOURCE_EXHAUSTED},
    {StatusCode::kCancelled, grpc::StatusCode::CANCELLED},
    {StatusCode::kInternal, grpc::StatusCode::INTERNAL},  // before kIoError: INTERNAL comes back as kInternal
    {StatusCode::kIoError, grpc::StatusCode::INTERNAL},
};

}  // namespace

grpc::Status ToGrpcStatus(const Status& s) {
  if (s.ok()) return grpc::Status::OK;
  for (const auto& [ours, theirs] : kCodes) {
    if (ours == s.code()) return grpc::Status(theirs, s.ToString());
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, s.ToString());
}

Status FromGrpcStatus(const grpc::Status& st, std::string_view component, std::string_view context) {
  if (st.ok()) return Status::Ok();
  StatusCode code = StatusCode::kInternal;  // UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ...
  for (const auto& [ours, theirs] : kCodes) {
    if (theirs == st.error_code()) {
      code = ours;
      break;
    }
  }
  if (st.error_code() == grpc::StatusCode::ABORTED) code = StatusCode::kUnavailable;
  if (st.error_message().empty()) {
    // gRPC's own failures come without words: one that ran out of threads or memory answers RESOURCE_EXHAUSTED.
    return Status(code, component,
                  std::string(context) + ": gRPC status " + std::to_string(st.error_code()) + " with no message" +
                      (st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? " (the server ran out of threads, memory or connections)" : ""));
  }
  return Status(code, component, std::string(context) + ": " + st.error_message());
}

}  // namespace dlagent
