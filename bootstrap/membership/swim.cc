#include "bootstrap/membership/swim.h"

#include <algorithm>
#include <cmath>

namespace dlagent::swim {

SwimConfig SwimConfig::Fast() {
  SwimConfig c;
  c.probe_interval = std::chrono::milliseconds(500);
  c.probe_timeout = std::chrono::milliseconds(200);
  c.suspicion_mult = 3;
  c.retransmit_mult = 3;
  c.gossip_interval = std::chrono::milliseconds(100);
  c.push_pull_interval = std::chrono::seconds(15);
  return c;
}

const char* MemberStateName(MemberState s) {
  switch (s) {
    case MemberState::kAlive: return "alive";
    case MemberState::kSuspect: return "suspect";
    case MemberState::kDead: return "dead";
    case MemberState::kLeft: return "left";
  }
  return "unknown";
}

namespace {
bool Active(MemberState s) { return s == MemberState::kAlive || s == MemberState::kSuspect; }
Duration Uniform(std::mt19937_64& rng, Duration max) {
  return Duration(std::uniform_int_distribution<Duration::rep>(0, std::max<Duration::rep>(0, max.count()))(rng));
}
}  // namespace

Swim::Swim(SwimConfig config, std::string name, std::string addr, std::string meta, uint64_t seed, MonoTime now)
    : config_(config), self_(std::move(name)), rng_(seed) {
  MemberInfo me{self_, std::move(addr), std::move(meta), 0, MemberState::kAlive, now, 0};
  members_[self_] = me;
  names_.push_back(self_);
  active_ = 1;
  // Staggered, so that members started together do not probe in lockstep.
  next_probe_ = now + Uniform(rng_, config_.probe_interval);
  next_gossip_ = now + Uniform(rng_, config_.gossip_interval);
  next_reconnect_ = now + config_.reconnect_interval;
  // The first push-pull comes early (a tenth to a third of the interval): members started together learn
  // of each other by gossip, but an update that ran out of retransmits before reaching someone would
  // otherwise wait a whole interval (memberlist: ~95 s to converge 2000 members started together).
  next_push_pull_ = now + config_.push_pull_interval / 10 + Uniform(rng_, config_.push_pull_interval * 7 / 30);
  Queue(self_, Alive{0, self_, me.addr, me.meta});
}

// ---- inputs ----

Status Swim::OnPacket(std::string_view bytes, MonoTime now) {
  Result<std::vector<Message>> messages = DecodePacket(bytes);
  if (!messages.ok()) return messages.status();
  for (const Message& m : *messages) Handle(m, now);
  return Status::Ok();
}

void Swim::Handle(const Message& m, MonoTime now) {
  std::visit(
      [&](const auto& msg) {
        using T = std::decay_t<decltype(msg)>;
        if constexpr (std::is_same_v<T, Ping>)
          OnPing(msg, now);
        else if constexpr (std::is_same_v<T, IndirectPing>)
          OnIndirectPing(msg, now);
        else if constexpr (std::is_same_v<T, Ack>)
          OnAck(msg, now);
        else if constexpr (std::is_same_v<T, Nack>)
          OnNack(msg);
        else if constexpr (std::is_same_v<T, Alive>)
          OnAlive(msg, now);
        else if constexpr (std::is_same_v<T, Suspect>)
          OnSuspect(msg, now);
        else if constexpr (std::is_same_v<T, Dead>)
          OnDead(msg, now);
      },
      m);
}

void Swim::OnPing(const Ping& p, MonoTime now) {
  if (left_ || p.target != self_) return;  // not for us (perhaps for a member that had our address before)
  Send(p.source_addr, Ack{p.seq});
}

void Swim::OnIndirectPing(const IndirectPing& p, MonoTime now) {
  if (left_) return;
  const uint32_t seq = ++seq_;
  relays_[seq] = Relay{p.source_addr, p.seq, p.want_nack, now + config_.probe_timeout};
  Send(p.target_addr, Ping{seq, p.target, self_, members_[self_].addr}, p.target);
}

void Swim::OnAck(const Ack& a, MonoTime now) {
  if (probe_ && a.seq == probe_->seq) {
    probe_->acked = true;
    AdjustAwareness(-1);
    probe_.reset();
    return;
  }
  auto relay = relays_.find(a.seq);
  if (relay != relays_.end()) {
    Send(relay->second.requester_addr, Ack{relay->second.requester_seq});
    relays_.erase(relay);
  }
}

void Swim::OnNack(const Nack& n) {
  if (probe_ && n.seq == probe_->seq) ++probe_->nacks;
}

void Swim::OnAlive(const Alive& a, MonoTime now) {
  if (a.node == self_) {
    // An alive for us that we did not send (our earlier life, before a restart): outbid it.
    if (!left_ && a.incarnation >= members_[self_].incarnation && (a.addr != members_[self_].addr || a.incarnation > members_[self_].incarnation)) {
      Refute(a.incarnation);
    }
    return;
  }
  auto it = members_.find(a.node);
  if (it == members_.end()) {
    MemberInfo m{a.node, a.addr, a.meta, a.incarnation, MemberState::kAlive, now, 0};
    members_[a.node] = m;
    names_.push_back(a.node);
    ++active_;
    if (events_.size() < 10000) events_.push_back({a.node, MemberState::kDead, MemberState::kAlive, a.incarnation});
    // A random place in the probe order, so that a newcomer is probed within one round.
    probe_order_.insert(probe_order_.begin() + static_cast<long>(std::uniform_int_distribution<size_t>(0, probe_order_.size())(rng_)), a.node);
    Queue(a.node, a);
    return;
  }
  MemberInfo& m = it->second;
  if (a.incarnation <= m.incarnation) return;  // old news, or a tie that does not refute
  m.incarnation = a.incarnation;
  m.addr = a.addr;
  m.meta = a.meta;
  suspicions_.erase(a.node);
  SetState(m, MemberState::kAlive, now);
  Queue(a.node, a);
}

void Swim::OnSuspect(const Suspect& s, MonoTime now) {
  if (s.node == self_) {
    if (!left_) Refute(s.incarnation);
    return;
  }
  auto it = members_.find(s.node);
  if (it == members_.end() || s.incarnation < it->second.incarnation) return;
  MemberInfo& m = it->second;
  if (m.state == MemberState::kSuspect) {
    auto sus = suspicions_.find(s.node);
    if (sus != suspicions_.end() && s.from != sus->second.origin &&
        std::find(sus->second.confirmations.begin(), sus->second.confirmations.end(), s.from) == sus->second.confirmations.end()) {
      Suspicion& x = sus->second;
      x.confirmations.push_back(s.from);
      // Each independent confirmation brings the timeout down from max towards min on a log scale.
      if (x.needed > 0) {
        const double c = static_cast<double>(std::min<size_t>(x.confirmations.size(), static_cast<size_t>(x.needed)));
        const double frac = std::log(c + 1.0) / std::log(x.needed + 1.0);
        x.deadline = x.start + std::chrono::duration_cast<Duration>(x.max - (x.max - x.min) * frac);
      }
      Queue(s.node, s);
    }
    return;
  }
  if (m.state != MemberState::kAlive) return;
  m.incarnation = s.incarnation;
  StartSuspicion(m, s.from, now);
  Queue(s.node, s);
}

void Swim::OnDead(const Dead& d, MonoTime now) {
  if (d.node == self_) {
    if (!left_) Refute(d.incarnation);
    return;
  }
  auto it = members_.find(d.node);
  if (it == members_.end() || d.incarnation < it->second.incarnation) return;
  MemberInfo& m = it->second;
  if (!Active(m.state)) return;
  m.incarnation = d.incarnation;
  suspicions_.erase(d.node);
  SetState(m, d.from == d.node ? MemberState::kLeft : MemberState::kDead, now);
  Queue(d.node, d);
}

// ---- timers ----

void Swim::Tick(MonoTime now) {
  if (!left_) {
    if (probe_ && !probe_->indirect_sent && now >= probe_->indirect_at) {
      // No direct ack in time: ask others, and expect a nack from each that cannot reach it either.
      probe_->indirect_sent = true;
      const MemberInfo* target = Find(probe_->target);
      if (target) {
        for (const std::string& peer : RandomMembers(config_.indirect_checks, {self_, probe_->target}, false, now)) {
          Send(members_[peer].addr, IndirectPing{probe_->seq, target->name, target->addr, self_, members_[self_].addr, true});
          ++probe_->expected_nacks;
        }
      }
    }
    if (probe_ && now >= probe_->fail_at) FinishProbe(now);
    if (now >= next_probe_) {
      if (probe_) FinishProbe(now);
      Probe(now);
      next_probe_ = now + Scaled(config_.probe_interval);
    }
    for (auto it = relays_.begin(); it != relays_.end();) {
      if (now >= it->second.nack_at) {
        if (it->second.want_nack) Send(it->second.requester_addr, Nack{it->second.requester_seq});
        it = relays_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = suspicions_.begin(); it != suspicions_.end();) {
      if (now >= it->second.deadline) {
        MemberInfo& m = members_[it->first];
        const std::string name = it->first;
        it = suspicions_.erase(it);
        SetState(m, MemberState::kDead, now);
        Queue(name, Dead{m.incarnation, name, self_});
      } else {
        ++it;
      }
    }
    if (now >= next_reconnect_) {
      next_reconnect_ = now + config_.reconnect_interval;
      ForgetOldDead(now);
      // After a partition heals, the other side is dead to us and we to it: push-pull with one of them.
      std::vector<std::string> dead;
      for (const auto& [name, m] : members_) {
        if (m.state == MemberState::kDead) dead.push_back(m.addr);
      }
      if (!dead.empty()) push_pulls_.push_back(dead[std::uniform_int_distribution<size_t>(0, dead.size() - 1)(rng_)]);
    }
    if (now >= next_push_pull_) {
      const double n = static_cast<double>(active_);
      const double scale = n <= 32 ? 1.0 : std::ceil(std::log2(n) - std::log2(32.0)) + 1.0;
      next_push_pull_ = now + std::chrono::duration_cast<Duration>(config_.push_pull_interval * scale);
      for (const std::string& peer : RandomMembers(1, {self_}, false, now)) push_pulls_.push_back(members_[peer].addr);
    }
  }
  if (now >= next_gossip_) {
    next_gossip_ = now + config_.gossip_interval;
    Gossip(now);
  }
}

void Swim::Probe(MonoTime now) {
  for (size_t tries = 0; tries <= members_.size(); ++tries) {
    if (probe_index_ >= probe_order_.size()) {
      probe_order_.clear();
      for (const auto& [name, m] : members_) {
        if (name != self_ && Active(m.state)) probe_order_.push_back(name);
      }
      std::shuffle(probe_order_.begin(), probe_order_.end(), rng_);
      probe_index_ = 0;
      if (probe_order_.empty()) return;
    }
    const std::string target = probe_order_[probe_index_++];
    auto it = members_.find(target);
    if (it == members_.end() || !Active(it->second.state)) continue;
    PendingProbe p;
    p.seq = ++seq_;
    p.target = target;
    p.sent = now;
    p.indirect_at = now + Scaled(config_.probe_timeout);
    p.fail_at = now + Scaled(config_.probe_interval) - Duration(1);
    probe_ = p;
    // Lifeguard's buddy system: a suspect hears of its suspicion on our ping, and can refute at once.
    std::string packet;
    if (it->second.state == MemberState::kSuspect) {
      AppendToPacket(packet, Encode(Suspect{it->second.incarnation, target, self_}));
    }
    AppendToPacket(packet, Encode(Ping{p.seq, target, self_, members_[self_].addr}));
    packet += Piggyback(config_.max_packet - std::min(config_.max_packet, packet.size()), target);
    outbox_.push_back({it->second.addr, std::move(packet)});
    return;
  }
}

void Swim::FinishProbe(MonoTime now) {
  PendingProbe p = *probe_;
  probe_.reset();
  if (p.acked) return;
  // Lifeguard: missing nacks mean the problem may be ours, not the target's.
  AdjustAwareness(p.expected_nacks > 0 ? std::max(0, p.expected_nacks - p.nacks) : 1);
  auto it = members_.find(p.target);
  if (it == members_.end() || !Active(it->second.state)) return;
  // Raises the suspicion, or confirms (independently) one raised by another member.
  OnSuspect(Suspect{it->second.incarnation, p.target, self_}, now);
}

void Swim::StartSuspicion(MemberInfo& m, const std::string& from, MonoTime now) {
  SetState(m, MemberState::kSuspect, now);
  const double n = static_cast<double>(std::max<size_t>(1, active_));
  Suspicion s;
  s.start = now;
  s.min = std::chrono::duration_cast<Duration>(config_.probe_interval * (config_.suspicion_mult * std::max(1.0, std::log10(n))));
  s.max = s.min * config_.suspicion_max_mult;
  s.needed = config_.suspicion_mult - 2;
  if (active_ < static_cast<size_t>(s.needed) + 2) s.needed = 0;  // too few members to expect confirmations
  s.deadline = now + (s.needed > 0 ? s.max : s.min);
  s.origin = from;
  suspicions_[m.name] = s;
}

void Swim::Refute(uint32_t accused_incarnation) {
  MemberInfo& me = members_[self_];
  me.incarnation = std::max(me.incarnation, accused_incarnation) + 1;
  AdjustAwareness(1);
  Queue(self_, Alive{me.incarnation, self_, me.addr, me.meta});
}

void Swim::SetState(MemberInfo& m, MemberState s, MonoTime now) {
  if (m.state == s) return;
  if (s == MemberState::kAlive && !Active(m.state)) ++active_;
  if (!Active(s) && Active(m.state)) --active_;
  if (s == MemberState::kAlive && m.state != MemberState::kAlive) ++m.flaps;
  if (m.name != self_ && events_.size() < 10000) events_.push_back({m.name, m.state, s, m.incarnation});
  m.state = s;
  m.state_change = now;
}

void Swim::ForgetOldDead(MonoTime now) {
  for (auto it = members_.begin(); it != members_.end();) {
    if (!Active(it->second.state) && now - it->second.state_change > config_.dead_memory) {
      names_.erase(std::find(names_.begin(), names_.end(), it->first));
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
}

void Swim::AdjustAwareness(int delta) { awareness_ = std::clamp(awareness_ + delta, 0, std::max(0, config_.awareness_max - 1)); }

// ---- dissemination ----

int Swim::RetransmitLimit() const { return config_.retransmit_mult * static_cast<int>(std::ceil(std::log10(static_cast<double>(active_) + 1.0))); }

void Swim::Queue(const std::string& node, const Message& m) {
  auto [it, inserted] = broadcasts_.try_emplace(node);
  if (!inserted) send_order_.erase({it->second.transmits, ~it->second.id, &it->first});  // replaced by the newer
  it->second = Broadcast{Encode(m), 0, ++broadcast_id_};
  send_order_.insert({0, ~it->second.id, &it->first});
}

std::string Swim::Piggyback(size_t room, const std::string& prefer_about) {
  // The smallest update on the wire (an alive, suspect or dead with short names) costs about 13 bytes.
  constexpr size_t kMinCost = 13;
  std::string out;
  std::vector<std::unordered_map<std::string, Broadcast>::iterator> taken;
  auto take = [&](std::unordered_map<std::string, Broadcast>::iterator it) {
    if (PacketCost(it->second.bytes) > room) return;
    AppendToPacket(out, it->second.bytes);
    room -= PacketCost(it->second.bytes);
    taken.push_back(it);
  };
  // First the update about the member this packet goes to, then the least sent, newest first.
  if (!prefer_about.empty()) {
    if (auto it = broadcasts_.find(prefer_about); it != broadcasts_.end()) take(it);
  }
  // Look at no more updates than could fit in the space we started with.
  const size_t max_looked = room / kMinCost + 1;
  size_t looked = 0;
  for (auto k = send_order_.begin(); k != send_order_.end() && room >= kMinCost && looked < max_looked; ++k, ++looked) {
    if (*std::get<2>(*k) != prefer_about) take(broadcasts_.find(*std::get<2>(*k)));
  }
  const int limit = RetransmitLimit();
  for (auto it : taken) {
    Broadcast& b = it->second;
    send_order_.erase({b.transmits, ~b.id, &it->first});
    if (++b.transmits >= limit) {
      broadcasts_.erase(it);
    } else {
      send_order_.insert({b.transmits, ~b.id, &it->first});
    }
  }
  return out;
}

void Swim::Send(const std::string& addr, const Message& m, const std::string& about) {
  std::string packet;
  AppendToPacket(packet, Encode(m));
  packet += Piggyback(config_.max_packet - std::min(config_.max_packet, packet.size()), about);
  outbox_.push_back({addr, std::move(packet)});
}

void Swim::Gossip(MonoTime now) {
  if (broadcasts_.empty()) return;
  for (const std::string& peer : RandomMembers(config_.gossip_nodes, {self_}, true, now)) {
    std::string packet = Piggyback(config_.max_packet, "");
    if (packet.empty()) return;
    outbox_.push_back({members_[peer].addr, std::move(packet)});
  }
}

std::vector<std::string> Swim::RandomMembers(size_t k, const std::vector<std::string>& exclude, bool include_dead, MonoTime now) {
  std::vector<std::string> out;
  if (names_.empty()) return out;
  std::uniform_int_distribution<size_t> pick(0, names_.size() - 1);
  // Sampling with bounded retries: O(k), not O(N), which matters with thousands of members.
  for (size_t tries = 0; tries < 4 * k + 8 && out.size() < k; ++tries) {
    const std::string& name = names_[pick(rng_)];
    if (std::find(exclude.begin(), exclude.end(), name) != exclude.end()) continue;
    if (std::find(out.begin(), out.end(), name) != out.end()) continue;
    const MemberInfo& m = members_[name];
    const bool ok = Active(m.state) || (include_dead && m.state == MemberState::kDead && now - m.state_change < config_.gossip_to_dead);
    if (ok) out.push_back(name);
  }
  return out;
}

// ---- state exchange and queries ----

std::vector<MemberInfo> Swim::LocalState() const {
  std::vector<MemberInfo> out;
  out.reserve(members_.size());
  for (const auto& [name, m] : members_) out.push_back(m);
  return out;
}

void Swim::MergeState(const std::vector<MemberInfo>& remote, MonoTime now) {
  for (const MemberInfo& r : remote) {
    switch (r.state) {
      case MemberState::kAlive: OnAlive(Alive{r.incarnation, r.name, r.addr, r.meta}, now); break;
      case MemberState::kLeft: OnDead(Dead{r.incarnation, r.name, r.name}, now); break;
      // A member the other side thinks dead or suspect is only suspected here: our own probes decide.
      case MemberState::kDead:
      case MemberState::kSuspect:
        if (!members_.count(r.name) && r.name != self_) OnAlive(Alive{r.incarnation, r.name, r.addr, r.meta}, now);
        OnSuspect(Suspect{r.incarnation, r.name, self_}, now);
        break;
    }
  }
}

std::vector<OutPacket> Swim::TakeOutbox() { return std::exchange(outbox_, {}); }
std::vector<std::string> Swim::TakePushPullRequests() { return std::exchange(push_pulls_, {}); }
std::vector<MemberEvent> Swim::TakeEvents() { return std::exchange(events_, {}); }

void Swim::Leave(MonoTime now) {
  if (left_) return;
  left_ = true;
  MemberInfo& me = members_[self_];
  SetState(me, MemberState::kLeft, now);
  Queue(self_, Dead{me.incarnation, self_, self_});
}

void Swim::UpdateMeta(std::string meta, MonoTime now) {
  MemberInfo& me = members_[self_];
  me.meta = std::move(meta);
  ++me.incarnation;
  Queue(self_, Alive{me.incarnation, self_, me.addr, me.meta});
  (void)now;
}

std::vector<MemberInfo> Swim::Members() const { return LocalState(); }

const MemberInfo* Swim::Find(const std::string& name) const {
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : &it->second;
}

size_t Swim::NumActive() const { return active_; }

}  // namespace dlagent::swim
