#pragma once
// A loopback port free for both TCP and UDP at the time of the call (gossip uses both on one port).
// Another process may take it before the caller binds it: fine for tests, which start at once.

namespace dlagent::testing {

// -1 when none was found in 50 tries.
int FreePort();

}  // namespace dlagent::testing
