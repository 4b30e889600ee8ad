#pragma once
// What the node says of itself: who it is (IDENTIFY), its scheduled maintenance, and its health as agentctl
// health shows it. The daemon calls these; none of them builds or owns anything.

#include <set>
#include <string>
#include <vector>

#include "agent/daemon/config.h"
#include "agent/daemon/formation.h"
#include "agent/daemon/membership.h"
#include "agent/rpc/control_handler.h"
#include "bootstrap/aws/imds_client.h"
#include "bootstrap/aws/imds_parse.h"
#include "bootstrap/common/mutex.h"
#include "bootstrap/node/mount_manager.h"
#include "proto/jobs.pb.h"

namespace dlagent {

// IDENTIFY once: the instance from instance metadata (imds; null when aws.imds_disabled, and the configuration
// names the node), gossip.name and gossip.advertise over it, and the GPU count (node.gpus, or counted).
// InvalidArgument when the configuration cannot name the node (not worth a retry); IMDS errors as they came.
Result<IdentitySnapshot> IdentifyNode(const Config& config, ImdsClient* imds);

// "system-reboot not before 21 Jan 2019 09:00:43 GMT: scheduled reboot (instance-event-1)"
std::string DescribeEvent(const ScheduledEvent& e);

// The event poller's view of this instance's scheduled maintenance: the active events for status, and when to
// leave (cluster.leave_before_maintenance before an event's start; 0: never).
// Thread safety: Update from one thread (the poller's); Lines from any.
class MaintenanceWatch {
 public:
  explicit MaintenanceWatch(Duration leave_before) : leave_before_(leave_before) {}
  // The active events now. Returns why the node should leave when one starts within leave_before; "" otherwise.
  // An event time that cannot be read is warned about once.
  std::string Update(const std::vector<ScheduledEvent>& active, WallTime now);
  std::vector<std::string> Lines();

 private:
  const Duration leave_before_;
  Mutex mu_;
  std::vector<std::string> lines_ GUARDED_BY(mu_);
  std::set<std::string> unparsed_;  // Update's thread only
};

// What agentctl health on any node hears of this one. mounts is null without shared storage; ipv4 is the node's
// (the shard is probed there when it binds every interface).
jobs::v1::HealthReply CheckNodeHealth(const jobs::v1::HealthRequest& req, Env& env, const Config& config, Formation& formation,
                                      Membership& membership, MountManager* mounts, const std::string& ipv4);

}  // namespace dlagent
