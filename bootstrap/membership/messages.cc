#include "bootstrap/membership/messages.h"

namespace dlagent::swim {
namespace {

enum class Type : uint8_t { kPing = 1, kIndirectPing, kAck, kNack, kAlive, kSuspect, kDead };
// V2 adds the roster a member holds and the generation it has applied.
enum class MetaVersion : uint8_t { kV1 = 1, kV2 = 2, kV3 = 3 };  // V2: the roster; V3: the reseal vote

class Writer {
 public:
  explicit Writer(Type t) { out_.push_back(static_cast<char>(t)); }
  Writer& U8(uint8_t v) {
    out_.push_back(static_cast<char>(v));
    return *this;
  }
  Writer& U16(uint16_t v) {
    for (int i = 0; i < 2; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  Writer& U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  Writer& Str(std::string_view s) {
    U16(static_cast<uint16_t>(s.size()));
    out_.append(s.data(), s.size());
    return *this;
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v) {
    if (in_.size() < 1) return false;
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool U16(uint16_t* v) {
    if (in_.size() < 2) return false;
    *v = static_cast<uint16_t>(static_cast<uint8_t>(in_[0]) | static_cast<uint8_t>(in_[1]) << 8);
    in_.remove_prefix(2);
    return true;
  }
  bool U32(uint32_t* v) {
    if (in_.size() < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    in_.remove_prefix(4);
    return true;
  }
  bool Str(std::string* s, size_t max) {
    uint16_t n;
    if (!U16(&n) || n > max || in_.size() < n) return false;
    s->assign(in_.data(), n);
    in_.remove_prefix(n);
    return true;
  }
  bool done() const { return in_.empty(); }

 private:
  std::string_view in_;
};

Status Malformed(std::string_view what) { return Status::InvalidArgument("gossip", "malformed " + std::string(what)); }

}  // namespace

std::string Encode(const Message& m) {
  struct Visitor {
    std::string operator()(const Ping& p) { return Writer(Type::kPing).U32(p.seq).Str(p.target).Str(p.source).Str(p.source_addr).Take(); }
    std::string operator()(const IndirectPing& p) {
      return Writer(Type::kIndirectPing).U32(p.seq).Str(p.target).Str(p.target_addr).Str(p.source).Str(p.source_addr).U8(p.want_nack).Take();
    }
    std::string operator()(const Ack& a) { return Writer(Type::kAck).U32(a.seq).Take(); }
    std::string operator()(const Nack& n) { return Writer(Type::kNack).U32(n.seq).Take(); }
    std::string operator()(const Alive& a) { return Writer(Type::kAlive).U32(a.incarnation).Str(a.node).Str(a.addr).Str(a.meta).Take(); }
    std::string operator()(const Suspect& s) { return Writer(Type::kSuspect).U32(s.incarnation).Str(s.node).Str(s.from).Take(); }
    std::string operator()(const Dead& d) { return Writer(Type::kDead).U32(d.incarnation).Str(d.node).Str(d.from).Take(); }
  };
  return std::visit(Visitor{}, m);
}

Result<Message> Decode(std::string_view bytes) {
  Reader r(bytes);
  uint8_t type;
  if (!r.U8(&type)) return Malformed("empty message");
  auto finish = [&](Message m, std::string_view what) -> Result<Message> {
    if (!r.done()) return Malformed(std::string(what) + " (trailing bytes)");
    return m;
  };
  switch (static_cast<Type>(type)) {
    case Type::kPing: {
      Ping p;
      if (!r.U32(&p.seq) || !r.Str(&p.target, kMaxNameBytes) || !r.Str(&p.source, kMaxNameBytes) || !r.Str(&p.source_addr, kMaxAddrBytes))
        return Malformed("ping");
      return finish(p, "ping");
    }
    case Type::kIndirectPing: {
      IndirectPing p;
      uint8_t nack;
      if (!r.U32(&p.seq) || !r.Str(&p.target, kMaxNameBytes) || !r.Str(&p.target_addr, kMaxAddrBytes) || !r.Str(&p.source, kMaxNameBytes) ||
          !r.Str(&p.source_addr, kMaxAddrBytes) || !r.U8(&nack) || nack > 1)
        return Malformed("ping-req");
      p.want_nack = nack;
      return finish(p, "ping-req");
    }
    case Type::kAck: {
      Ack a;
      if (!r.U32(&a.seq)) return Malformed("ack");
      return finish(a, "ack");
    }
    case Type::kNack: {
      Nack n;
      if (!r.U32(&n.seq)) return Malformed("nack");
      return finish(n, "nack");
    }
    case Type::kAlive: {
      Alive a;
      if (!r.U32(&a.incarnation) || !r.Str(&a.node, kMaxNameBytes) || !r.Str(&a.addr, kMaxAddrBytes) || !r.Str(&a.meta, kMaxMetaBytes))
        return Malformed("alive");
      return finish(a, "alive");
    }
    case Type::kSuspect: {
      Suspect s;
      if (!r.U32(&s.incarnation) || !r.Str(&s.node, kMaxNameBytes) || !r.Str(&s.from, kMaxNameBytes)) return Malformed("suspect");
      return finish(s, "suspect");
    }
    case Type::kDead: {
      Dead d;
      if (!r.U32(&d.incarnation) || !r.Str(&d.node, kMaxNameBytes) || !r.Str(&d.from, kMaxNameBytes)) return Malformed("dead");
      return finish(d, "dead");
    }
  }
  return Malformed("message of unknown type " + std::to_string(type));
}

void AppendToPacket(std::string& packet, std::string_view m) {
  packet.push_back(static_cast<char>(m.size() & 0xff));
  packet.push_back(static_cast<char>(m.size() >> 8));
  packet.append(m.data(), m.size());
}

Result<std::vector<Message>> DecodePacket(std::string_view packet) {
  std::vector<Message> out;
  Reader r(packet);
  while (!r.done()) {
    std::string body;
    if (!r.Str(&body, 65535)) return Malformed("packet framing");
    ASSIGN_OR_RETURN(Message m, Decode(body));
    out.push_back(std::move(m));
  }
  if (out.empty()) return Malformed("empty packet");
  return out;
}

std::string EncodeMeta(const MemberMeta& m) {
  std::string out = Writer(Type::kAlive)
                        .U8(static_cast<uint8_t>(MetaVersion::kV3))
                        .Str(m.instance_id)
                        .Str(m.role)
                        .U32(m.gpus)
                        .Str(m.az)
                        .Str(m.version)
                        .U16(m.rpc_port)
                        .U32(m.roster_gen)
                        .Str(m.roster_leader)
                        .U32(m.applied_gen)
                        .U32(m.vote_gen)
                        .Str(m.vote_leader)
                        .Take();
  return out.substr(1);  // no message type byte
}

Result<MemberMeta> DecodeMeta(std::string_view bytes) {
  Reader r(bytes);
  MemberMeta m;
  uint8_t version;
  if (!r.U8(&version) || version < static_cast<uint8_t>(MetaVersion::kV1) || version > static_cast<uint8_t>(MetaVersion::kV3) ||
      !r.Str(&m.instance_id, kMaxNameBytes) || !r.Str(&m.role, 16) || !r.U32(&m.gpus) || !r.Str(&m.az, 32) || !r.Str(&m.version, 32) ||
      !r.U16(&m.rpc_port)) {
    return Malformed("member metadata");
  }
  if (version >= static_cast<uint8_t>(MetaVersion::kV2) &&
      (!r.U32(&m.roster_gen) || !r.Str(&m.roster_leader, kMaxNameBytes) || !r.U32(&m.applied_gen))) {
    return Malformed("member metadata");
  }
  if (version >= static_cast<uint8_t>(MetaVersion::kV3) && (!r.U32(&m.vote_gen) || !r.Str(&m.vote_leader, kMaxNameBytes))) {
    return Malformed("member metadata");
  }
  if (!r.done()) return Malformed("member metadata");
  return m;
}

}  // namespace dlagent::swim
