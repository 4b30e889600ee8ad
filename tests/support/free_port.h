#pragma once
// A loopback port free for both TCP and UDP at the time of the call (gossip uses both on one port), picked at
// random below the ephemeral range: another test's connections and port-0 binds cannot take it before the
// caller binds it, and never one this process was given before. Thread safety: one thread at a time.

namespace dlagent::testing {

// -1 when none was found in 50 tries.
int FreePort();

}  // namespace dlagent::testing
