#include <gtest/gtest.h>

#include "agent/daemon/membership.h"
#include "agent/daemon/node_report.h"
#include "bootstrap/aws/fake_http_client.h"
#include "bootstrap/common/fake_env.h"

namespace dlagent {
namespace {

Config Parse(const std::string& toml) {
  Result<Config> c = ParseConfig(toml, "t.toml", [](const char*) { return std::nullopt; });
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? *c : Config();
}

TEST(NodeReportTest, WithoutInstanceMetadataTheConfigurationNamesTheNode) {
  Config c = Parse("[aws]\nimds_disabled = true\nregion = \"eu-west-1\"\n[node]\ngpus = 3\n");
  Result<IdentitySnapshot> id = IdentifyNode(c, nullptr);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), StatusCode::kInvalidArgument) << "not worth a retry: " << id.status().ToString();
  EXPECT_NE(id.status().message().find("gossip.name and gossip.advertise"), std::string::npos) << id.status().ToString();

  c = Parse("[aws]\nimds_disabled = true\nregion = \"eu-west-1\"\n[node]\ngpus = 3\n[gossip]\nname = \"i-7\"\nadvertise = \"10.0.0.7\"\n");
  id = IdentifyNode(c, nullptr);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(id->instance_id, "i-7");
  EXPECT_EQ(id->local_ipv4, "10.0.0.7");
  EXPECT_EQ(id->region, "eu-west-1");
  EXPECT_EQ(id->gpu_count, 3u) << "node.gpus wins over counting";
}

TEST(NodeReportTest, AnInstanceMetadataFailureIsNotTakenForABadConfiguration) {
  FakeEnv env;
  FakeHttpClient http;  // no handler: every call fails as unavailable
  ImdsOptions o;
  o.deadline = std::chrono::milliseconds(50);
  ImdsClient imds(http, env, o);
  Config c = Parse("[node]\ngpus = 0\n");
  Result<IdentitySnapshot> id = IdentifyNode(c, &imds);
  ASSERT_FALSE(id.ok());
  EXPECT_NE(id.status().code(), StatusCode::kInvalidArgument) << "the boot retries anything but a bad configuration: " << id.status().ToString();
}

ScheduledEvent Event(std::string code, std::string not_before) {
  ScheduledEvent e;
  e.code = std::move(code);
  e.event_id = "instance-event-1";
  e.description = "scheduled reboot";
  e.not_before = std::move(not_before);
  return e;
}

TEST(NodeReportTest, MaintenanceIsListedAndANearEventSaysWhyToLeave) {
  const std::string start = "21 Jan 2019 09:00:43 GMT";
  Result<WallTime> t = ParseEventTime(start);
  ASSERT_TRUE(t.ok()) << t.status().ToString();

  MaintenanceWatch never(Duration(0));
  EXPECT_EQ(never.Update({Event("system-reboot", start)}, *t + std::chrono::hours(1)), "") << "0: never leave";
  ASSERT_EQ(never.Lines().size(), 1u);
  EXPECT_EQ(never.Lines()[0], "system-reboot not before 21 Jan 2019 09:00:43 GMT: scheduled reboot (instance-event-1)");

  MaintenanceWatch watch(std::chrono::minutes(10));
  EXPECT_EQ(watch.Update({Event("system-reboot", start)}, *t - std::chrono::minutes(11)), "") << "not yet within 10 min";
  const std::string why = watch.Update({Event("bad", "soon"), Event("system-reboot", start)}, *t - std::chrono::minutes(9));
  EXPECT_EQ(why, "system-reboot at " + start + " (cluster.leave_before_maintenance = 10m00s)");
  EXPECT_EQ(watch.Lines().size(), 2u) << "an unreadable time is still shown";
  EXPECT_EQ(watch.Update({}, *t), "");
  EXPECT_TRUE(watch.Lines().empty()) << "events that ended are no longer shown";
}

TEST(NodeReportTest, GossipIsNamedByTheConfigurationOverTheIdentity) {
  GossipIdentity who;
  who.name = "i-1";
  who.advertise = "10.0.0.1";
  who.meta.gpus = 8;
  GossipPlan p = PlanGossip(Parse("[cluster]\nrole = \"worker\"\n[gossip]\nport = 7000\n"), who);
  EXPECT_EQ(p.options.name, "i-1");
  EXPECT_EQ(p.options.advertise_host, "10.0.0.1");
  EXPECT_EQ(p.meta.instance_id, "i-1");
  EXPECT_EQ(p.meta.role, "worker");
  EXPECT_EQ(p.meta.gpus, 8u);
  EXPECT_EQ(p.meta.rpc_port, 7000);
  Result<swim::MemberMeta> carried = swim::DecodeMeta(p.options.meta);
  ASSERT_TRUE(carried.ok());
  EXPECT_EQ(carried->instance_id, "i-1") << "what peers see is what the plan says";

  p = PlanGossip(Parse("[gossip]\nname = \"n\"\nadvertise = \"10.9.9.9\"\n"), who);
  EXPECT_EQ(p.options.name, "n");
  EXPECT_EQ(p.options.advertise_host, "10.9.9.9");

  EXPECT_FALSE(MakeKeyring({}, "c", "the file /k").ok()) << "no key, no keyring";
  EXPECT_TRUE(MakeKeyring({std::string(32, 'a')}, "c", "the file /k").ok());
}

}  // namespace
}  // namespace dlagent
