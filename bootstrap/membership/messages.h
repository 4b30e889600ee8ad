#pragma once
// SWIM messages and their wire form. A packet is a sequence of messages, each prefixed by its length
// (u16, little endian), so that gossip piggybacks on probes. Decoding bounds every length and rejects
// trailing bytes; it never trusts a count from the wire.
//
// Thread safety: pure functions.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "bootstrap/common/status.h"

namespace dlagent::swim {

struct Ping {
  uint32_t seq = 0;
  std::string target;  // the node meant: a node answers only pings addressed to its own name
  std::string source;
  std::string source_addr;  // where to send the ack
};
struct IndirectPing {  // "ping-req": please probe target for me
  uint32_t seq = 0;
  std::string target;
  std::string target_addr;
  std::string source;
  std::string source_addr;
  bool want_nack = true;
};
struct Ack {
  uint32_t seq = 0;
};
struct Nack {
  uint32_t seq = 0;
};
struct Alive {
  uint32_t incarnation = 0;
  std::string node;
  std::string addr;
  std::string meta;  // opaque to the protocol (see MemberMeta)
};
struct Suspect {
  uint32_t incarnation = 0;
  std::string node;
  std::string from;
};
struct Dead {  // from == node: a graceful leave
  uint32_t incarnation = 0;
  std::string node;
  std::string from;
};

using Message = std::variant<Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead>;

constexpr size_t kMaxNameBytes = 128;
constexpr size_t kMaxAddrBytes = 64;
constexpr size_t kMaxMetaBytes = 512;

std::string Encode(const Message& m);
Result<Message> Decode(std::string_view bytes);

// Appends one length-prefixed message to a packet.
void AppendToPacket(std::string& packet, std::string_view encoded_message);
// The messages of a packet; InvalidArgument for a malformed one (the whole packet is refused).
Result<std::vector<Message>> DecodePacket(std::string_view packet);
// Bytes a message takes in a packet.
inline size_t PacketCost(const std::string& encoded) { return encoded.size() + 2; }

// What a member says about itself, carried in Alive.meta.
struct MemberMeta {
  std::string instance_id;
  std::string role;  // "master", "worker" or "server"
  uint32_t gpus = 0;
  std::string az;
  std::string version;
  uint16_t rpc_port = 0;
  uint32_t roster_gen = 0;    // the roster this member holds: generation (0: none) ...
  std::string roster_leader;  // ... and who sealed it; members adopt the highest (generation, leader)
  uint32_t applied_gen = 0;   // the generation whose files this member has written (its ack)
  uint32_t vote_gen = 0;      // the reseal this member accepted: generation (0: none) ...
  std::string vote_leader;    // ... and the leader it accepted to seal it (itself: the leader's proposal)
};
std::string EncodeMeta(const MemberMeta& m);
Result<MemberMeta> DecodeMeta(std::string_view bytes);

}  // namespace dlagent::swim
