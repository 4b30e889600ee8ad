#pragma once
// Parsers for the JSON answers of the instance metadata service. Pure functions: bad input gives
// InvalidArgument naming the document and the problem, never a crash.

#include <optional>
#include <string>
#include <vector>

#include "bootstrap/aws/sigv4.h"

namespace dlagent {

struct InstanceIdentity {
  std::string instance_id;
  std::string instance_type;
  std::string local_ipv4;
  std::string availability_zone;
  std::string region;
  std::string account_id;
  std::string image_id;
  std::string mac;  // filled from meta-data/mac, not the document
};

struct SpotNotice {
  std::string action;  // "terminate", "stop" or "hibernate"
  WallTime time;
};

struct ScheduledEvent {
  std::string code;  // "system-reboot", "instance-stop", ...
  std::string event_id;
  std::string state;  // "active", "completed", "canceled"
  std::string description;
  std::string not_before;  // as IMDS writes it ("21 Jan 2019 09:00:43 GMT")
};

// ScheduledEvent::not_before as a time; InvalidArgument naming the text when it is not IMDS's format.
Result<WallTime> ParseEventTime(std::string_view text);

// dynamic/instance-identity/document
Result<InstanceIdentity> ParseIdentityDocument(std::string_view json);
// meta-data/iam/security-credentials/<role>; Code must be "Success".
Result<AwsCredentials> ParseImdsCredentials(std::string_view json, const std::string& role);
// meta-data/spot/instance-action
Result<SpotNotice> ParseSpotNotice(std::string_view json);
// meta-data/events/maintenance/scheduled (a JSON array)
Result<std::vector<ScheduledEvent>> ParseScheduledEvents(std::string_view json);

}  // namespace dlagent
