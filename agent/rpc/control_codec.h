#pragma once
// The one mirror of the control types: the handler's snapshots (control_handler.h) <-> control.proto's
// messages, both ways, used by the control service (to answer) and by agentctl's client (to read). Included
// by those two .cc files only.
//
// Thread safety: functions only.

#include "agent/rpc/control_handler.h"
#include "proto/control.pb.h"

namespace dlagent {

void ToProto(const StatusSnapshot& s, control::v1::AgentStatus* out);
StatusSnapshot FromProto(const control::v1::AgentStatus& p);
void ToProto(const MemberListSnapshot& list, control::v1::MemberList* out);
MemberListSnapshot FromProto(const control::v1::MemberList& p);

}  // namespace dlagent
