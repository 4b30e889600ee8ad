#include "bootstrap/membership/swim.h"

namespace dlagent::swim {

std::string EncodeState(const std::vector<MemberInfo>& members) {
  std::string out;
  for (const MemberInfo& m : members) {
    AppendToPacket(out, Encode(Alive{m.incarnation, m.name, m.addr, m.meta}));
    if (m.state == MemberState::kSuspect) AppendToPacket(out, Encode(Suspect{m.incarnation, m.name, ""}));
    if (m.state == MemberState::kDead) AppendToPacket(out, Encode(Dead{m.incarnation, m.name, ""}));
    if (m.state == MemberState::kLeft) AppendToPacket(out, Encode(Dead{m.incarnation, m.name, m.name}));
  }
  return out;
}

Result<std::vector<MemberInfo>> DecodeState(std::string_view bytes, size_t max_members) {
  if (bytes.empty()) return std::vector<MemberInfo>();
  ASSIGN_OR_RETURN(std::vector<Message> messages, DecodePacket(bytes));
  std::vector<MemberInfo> out;
  for (const Message& m : messages) {
    if (const auto* a = std::get_if<Alive>(&m)) {
      if (out.size() >= max_members) return Status::ResourceExhausted("gossip", "state has more than " + std::to_string(max_members) + " members");
      out.push_back({a->node, a->addr, a->meta, a->incarnation, MemberState::kAlive, {}, 0});
      continue;
    }
    const std::string* node = nullptr;
    MemberState state = MemberState::kAlive;
    if (const auto* s = std::get_if<Suspect>(&m)) node = &s->node, state = MemberState::kSuspect;
    if (const auto* d = std::get_if<Dead>(&m)) node = &d->node, state = d->from == d->node ? MemberState::kLeft : MemberState::kDead;
    if (!node || out.empty() || out.back().name != *node) {
      return Status::InvalidArgument("gossip", "malformed state: a status without its member");
    }
    out.back().state = state;
  }
  return out;
}

}  // namespace dlagent::swim
