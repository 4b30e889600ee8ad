#include "bootstrap/aws/imds_parse.h"

#include <time.h>

#include <ctime>

#include "bootstrap/aws/aws_json.h"

namespace dlagent {
namespace {
constexpr std::string_view kImds = "imds";
}  // namespace

Result<InstanceIdentity> ParseIdentityDocument(std::string_view json) {
  constexpr std::string_view what = "instance identity document";
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonObject(json, kImds, what, 64 << 10));
  InstanceIdentity id;
  ASSIGN_OR_RETURN(id.instance_id, JsonString(j, "instanceId", true, kImds, what));
  ASSIGN_OR_RETURN(id.instance_type, JsonString(j, "instanceType", true, kImds, what));
  ASSIGN_OR_RETURN(id.local_ipv4, JsonString(j, "privateIp", false, kImds, what));
  ASSIGN_OR_RETURN(id.availability_zone, JsonString(j, "availabilityZone", true, kImds, what));
  ASSIGN_OR_RETURN(id.region, JsonString(j, "region", true, kImds, what));
  ASSIGN_OR_RETURN(id.account_id, JsonString(j, "accountId", false, kImds, what));
  ASSIGN_OR_RETURN(id.image_id, JsonString(j, "imageId", false, kImds, what));
  if (id.instance_id.empty() || id.instance_id.size() > 64) {
    return Status::InvalidArgument(kImds, std::string(what) + ": instanceId \"" + id.instance_id.substr(0, 64) + "\" is not an instance id");
  }
  return id;
}

Result<AwsCredentials> ParseImdsCredentials(std::string_view json, const std::string& role) {
  const std::string what = "credentials of role " + role;
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonObject(json, kImds, what, 64 << 10));
  ASSIGN_OR_RETURN(std::string code, JsonString(j, "Code", false, kImds, what));
  if (!code.empty() && code != "Success") {
    ASSIGN_OR_RETURN(std::string message, JsonString(j, "Message", false, kImds, what));
    return Status::Unavailable(kImds, what + ": IMDS says " + code + (message.empty() ? "" : ": " + message));
  }
  AwsCredentials c;
  ASSIGN_OR_RETURN(c.access_key_id, JsonString(j, "AccessKeyId", true, kImds, what));
  ASSIGN_OR_RETURN(c.secret_access_key, JsonString(j, "SecretAccessKey", true, kImds, what));
  ASSIGN_OR_RETURN(c.session_token, JsonString(j, "Token", false, kImds, what));
  ASSIGN_OR_RETURN(std::string expiration, JsonString(j, "Expiration", true, kImds, what));
  Result<WallTime> t = ParseIso8601(expiration);
  if (!t.ok()) return t.status().Annotate(what + ": Expiration");
  c.expiration = *t;
  c.source = "imds:" + role;
  return c;
}

Result<SpotNotice> ParseSpotNotice(std::string_view json) {
  constexpr std::string_view what = "spot instance-action";
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonObject(json, kImds, what, 4096));
  SpotNotice n;
  ASSIGN_OR_RETURN(n.action, JsonString(j, "action", true, kImds, what));
  ASSIGN_OR_RETURN(std::string time, JsonString(j, "time", true, kImds, what));
  ASSIGN_OR_RETURN(n.time, ParseIso8601(time));
  if (n.action != "terminate" && n.action != "stop" && n.action != "hibernate") {
    return Status::InvalidArgument(kImds, std::string(what) + ": unknown action \"" + n.action.substr(0, 32) + "\"");
  }
  return n;
}

Result<std::vector<ScheduledEvent>> ParseScheduledEvents(std::string_view json) {
  constexpr std::string_view what = "scheduled events";
  if (json.size() > (256 << 10)) return Status::InvalidArgument(kImds, std::string(what) + ": answer too large");
  // The document is an array; wrap it so that one parser (with its bounds) reads it.
  ASSIGN_OR_RETURN(nlohmann::json j, ParseJsonObject("{\"e\":" + std::string(json) + "}", kImds, what, (256 << 10) + 8));
  const nlohmann::json& list = j["e"];
  if (!list.is_array()) return Status::InvalidArgument(kImds, std::string(what) + ": expected a JSON array");
  std::vector<ScheduledEvent> out;
  for (const auto& e : list) {
    if (!e.is_object()) return Status::InvalidArgument(kImds, std::string(what) + ": an event is not an object");
    ScheduledEvent ev;
    ASSIGN_OR_RETURN(ev.code, JsonString(e, "Code", true, kImds, what));
    ASSIGN_OR_RETURN(ev.event_id, JsonString(e, "EventId", false, kImds, what));
    ASSIGN_OR_RETURN(ev.state, JsonString(e, "State", false, kImds, what));
    ASSIGN_OR_RETURN(ev.description, JsonString(e, "Description", false, kImds, what));
    ASSIGN_OR_RETURN(ev.not_before, JsonString(e, "NotBefore", false, kImds, what));
    out.push_back(std::move(ev));
  }
  return out;
}

Result<WallTime> ParseEventTime(std::string_view text) {
  // "21 Jan 2019 09:00:43 GMT": strptime with the C locale's month names; always UTC.
  const std::string t(text.substr(0, 64));
  std::tm tm{};
  const char* end = ::strptime(t.c_str(), "%d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end != '\0') {
    return Status::InvalidArgument(kImds, "event time \"" + t + "\" is not like \"21 Jan 2019 09:00:43 GMT\"");
  }
  // Years a system clock's nanoseconds can hold (and EC2 can schedule): anything else is a corrupt answer.
  if (tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 2200) {
    return Status::InvalidArgument(kImds, "event time \"" + t + "\" is outside 1970-2200");
  }
  return WallTime(std::chrono::seconds(::timegm(&tm)));
}

}  // namespace dlagent
