#pragma once
// The one conversion between Status and grpc::Status, both ways, used at every gRPC edge (the control socket,
// the cluster service, dlps's control calls). Codes map one to one where both have them.
//
// Thread safety: functions only.

#include <string_view>

#include <grpcpp/support/status.h>

#include "bootstrap/common/status.h"

namespace dlagent {

// The message is s.ToString(): the component and what to do travel to the caller.
grpc::Status ToGrpcStatus(const Status& s);
// Ok for OK; otherwise the code mapped back and "<context>: <grpc message>" as the message.
Status FromGrpcStatus(const grpc::Status& st, std::string_view component, std::string_view context);

}  // namespace dlagent
