#include "bootstrap/membership/messages.h"

#include <gtest/gtest.h>

#include "bootstrap/membership/packet_crypto.h"

namespace dlagent::swim {
namespace {

TEST(SwimMessagesTest, EveryMessageRoundTrips) {
  std::vector<Message> all = {
      Ping{7, "i-b", "i-a", "10.0.0.1:7946"},
      IndirectPing{8, "i-c", "10.0.0.3:7946", "i-a", "10.0.0.1:7946", true},
      Ack{9},
      Nack{10},
      Alive{3, "i-a", "10.0.0.1:7946", EncodeMeta({"i-a", "master", 8, "us-east-1a", "0.1.0", 7947})},
      Suspect{4, "i-b", "i-a"},
      Dead{5, "i-b", "i-b"},
  };
  std::string packet;
  for (const Message& m : all) AppendToPacket(packet, Encode(m));
  Result<std::vector<Message>> back = DecodePacket(packet);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(Encode((*back)[i]), Encode(all[i])) << i;
  const Alive& alive = std::get<Alive>((*back)[4]);
  Result<MemberMeta> meta = DecodeMeta(alive.meta);
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->role, "master");
  EXPECT_EQ(meta->gpus, 8u);
  EXPECT_EQ(meta->rpc_port, 7947);
}

TEST(SwimMessagesTest, MetaCarriesTheRosterTheAckAndTheVote) {
  MemberMeta m{"i-b", "worker", 4, "us-east-1b", "0.2.0", 7946, 3, "i-a", 2, 4, "i-c"};
  Result<MemberMeta> back = DecodeMeta(EncodeMeta(m));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->roster_gen, 3u);
  EXPECT_EQ(back->roster_leader, "i-a");
  EXPECT_EQ(back->applied_gen, 2u);
  EXPECT_EQ(back->vote_gen, 4u);
  EXPECT_EQ(back->vote_leader, "i-c");
  EXPECT_EQ(back->gpus, 4u);
  // Members on earlier formats still decode: V2 (no vote), V1 (no roster fields either).
  std::string v2 = EncodeMeta(m);
  v2[0] = 2;
  EXPECT_FALSE(DecodeMeta(v2).ok()) << "V2 header with V3 fields is trailing junk";
  v2.resize(v2.size() - (4 + 2 + 3));
  Result<MemberMeta> older = DecodeMeta(v2);
  ASSERT_TRUE(older.ok()) << older.status().ToString();
  EXPECT_EQ(older->roster_gen, 3u);
  EXPECT_EQ(older->vote_gen, 0u);
  std::string v1 = v2;
  v1[0] = 1;
  EXPECT_FALSE(DecodeMeta(v1).ok()) << "V1 header with V2 fields is trailing junk";
  v1.resize(v1.size() - (4 + 2 + 3 + 4));
  Result<MemberMeta> old = DecodeMeta(v1);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->roster_gen, 0u);
  EXPECT_EQ(old->instance_id, "i-b");
  EXPECT_FALSE(DecodeMeta(EncodeMeta(m).substr(0, EncodeMeta(m).size() - 1)).ok());
}

TEST(SwimMessagesTest, MalformedInputIsRefusedWhole) {
  const std::string ping = Encode(Ping{1, "b", "a", "x"});
  std::string packet;
  AppendToPacket(packet, ping);
  std::vector<std::string> bad = {
      "",                                   // empty packet
      packet.substr(0, packet.size() - 1),  // truncated
      packet + "\x01",                      // trailing junk in framing
      std::string("\x02\x00\x63\x00", 4),   // unknown type 0x63
  };
  std::string trailing = ping + "zz";
  std::string framed;
  AppendToPacket(framed, trailing);
  bad.push_back(framed);  // trailing bytes inside a message
  std::string long_name = Encode(Suspect{1, std::string(200, 'n'), "a"});
  std::string framed_long;
  AppendToPacket(framed_long, long_name);
  bad.push_back(framed_long);  // a name over the limit
  for (const std::string& b : bad) {
    Result<std::vector<Message>> r = DecodePacket(b);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  EXPECT_FALSE(DecodeMeta("junk").ok());
}

std::string Key(char c) { return std::string(32, c); }

constexpr int64_t kNow = 1'700'000'000'000;  // Unix ms

TEST(KeyringTest, SealsAndOpens) {
  Keyring ring = *Keyring::Create({{1, Key('a')}}, 1, "demo");
  const std::string sealed = ring.Seal("hello gossip", kNow);
  EXPECT_EQ(sealed.size(), 12 + Keyring::kOverhead);
  EXPECT_EQ(sealed.find("hello"), std::string::npos);
  Result<Keyring::Opened> opened = ring.Open(sealed);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(opened->plaintext, "hello gossip");
  EXPECT_EQ(opened->sent_unix_ms, kNow);
  EXPECT_EQ(opened->nonce, sealed.substr(1, 12));
  EXPECT_NE(ring.Seal("hello gossip", kNow), sealed) << "nonces must differ";
}

TEST(KeyringTest, RefusesWrongKeyClusterAndTampering) {
  Keyring ring = *Keyring::Create({{1, Key('a')}}, 1, "demo");
  const std::string sealed = ring.Seal("hello gossip", kNow);
  Keyring other_key = *Keyring::Create({{1, Key('b')}}, 1, "demo");
  Keyring other_cluster = *Keyring::Create({{1, Key('a')}}, 1, "prod");
  Keyring other_id = *Keyring::Create({{2, Key('a')}}, 2, "demo");
  EXPECT_EQ(other_key.Open(sealed).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(other_cluster.Open(sealed).status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(other_id.Open(sealed).status().code(), StatusCode::kPermissionDenied);
  for (size_t i = 1; i < sealed.size(); i += 7) {
    std::string t = sealed;
    t[i] ^= 0x01;
    EXPECT_FALSE(ring.Open(t).ok()) << "flipped byte " << i;
  }
  EXPECT_EQ(ring.Open("short").status().code(), StatusCode::kInvalidArgument);
}

TEST(KeyringTest, RotationOpensWithEveryInstalledKey) {
  Keyring old_ring = *Keyring::Create({{1, Key('a')}}, 1, "demo");
  Keyring rotating = *Keyring::Create({{1, Key('a')}, {2, Key('b')}}, 2, "demo");
  Keyring new_ring = *Keyring::Create({{2, Key('b')}}, 2, "demo");
  EXPECT_EQ(rotating.Open(old_ring.Seal("x", kNow))->plaintext, "x");
  EXPECT_EQ(new_ring.Open(rotating.Seal("y", kNow))->plaintext, "y");
  EXPECT_FALSE(old_ring.Open(rotating.Seal("z", kNow)).ok());
  EXPECT_FALSE(Keyring::Create({{1, "short"}}, 1, "demo").ok());
  EXPECT_FALSE(Keyring::Create({{1, Key('a')}}, 2, "demo").ok());
}

TEST(ReplayWindowTest, ACapturedPacketIsAdmittedOnceAndAStaleOneNever) {
  Keyring ring = *Keyring::Create({{1, Key('a')}}, 1, "demo");
  ReplayWindow window(std::chrono::seconds(60));
  const Keyring::Opened first = *ring.Open(ring.Seal("alive i-1", kNow));
  EXPECT_TRUE(window.Admit(first, kNow + 5).ok());
  Status again = window.Admit(first, kNow + 1000);
  EXPECT_EQ(again.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(again.ToString().find("packet replayed"), std::string::npos) << again.ToString();
  Status stale = window.Admit(*ring.Open(ring.Seal("alive i-1", kNow - 61'000)), kNow);
  EXPECT_NE(stale.ToString().find("sealed 61 s ago (a replay, or clocks apart by more than 60 s: check NTP"), std::string::npos) << stale.ToString();
  EXPECT_FALSE(window.Admit(*ring.Open(ring.Seal("x", kNow + 61'000)), kNow).ok()) << "from too far ahead";
  EXPECT_TRUE(window.Admit(*ring.Open(ring.Seal("x", kNow - 30'000)), kNow).ok()) << "late but inside the window";
  // Long after, the first packet's nonce is forgotten, and its time refuses it.
  EXPECT_FALSE(window.Admit(first, kNow + 120'000).ok());
}

TEST(ReplayWindowTest, AFloodShrinksTheWindowInsteadOfReopeningIt) {
  Keyring ring = *Keyring::Create({{1, Key('a')}}, 1, "demo");
  ReplayWindow window(std::chrono::seconds(60), 4);
  std::vector<Keyring::Opened> packets;
  for (int i = 0; i < 6; ++i) packets.push_back(*ring.Open(ring.Seal("p", kNow + i)));
  for (const auto& p : packets) ASSERT_TRUE(window.Admit(p, kNow + 10).ok());
  for (const auto& p : packets) EXPECT_FALSE(window.Admit(p, kNow + 10).ok()) << "sealed at " << p.sent_unix_ms;
  EXPECT_FALSE(window.Admit(*ring.Open(ring.Seal("q", kNow + 1)), kNow + 10).ok()) << "at or before what was forgotten";
  EXPECT_TRUE(window.Admit(*ring.Open(ring.Seal("q", kNow + 9)), kNow + 10).ok());
}

}  // namespace
}  // namespace dlagent::swim
