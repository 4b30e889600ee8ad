#include "agent/ps/wire.h"

#include <random>

#include <gtest/gtest.h>

#include "proto/dlps.pb.h"

namespace dlagent::ps {
namespace {

std::string Flatten(const grpc::ByteBuffer& b) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(b.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// The same bytes cut into slices at the given offsets, as gRPC may deliver them.
grpc::ByteBuffer Cut(const std::string& bytes, std::vector<size_t> cuts) {
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  cuts.push_back(bytes.size());
  for (size_t c : cuts) {
    slices.emplace_back(bytes.data() + at, c - at);
    at = c;
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

TEST(WireTest, HandEncodedPushIsTheGeneratedProtoByteForByte) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> values(rng() % 300);
    for (float& v : values) v = static_cast<float>(static_cast<int64_t>(rng() % 2001) - 1000) / 7.0f;
    PushHeader h{rng() >> (rng() % 64), static_cast<uint32_t>(rng() % 5), static_cast<uint32_t>(rng() % 9), rng() % 3, trial % 4 == 0};
    const std::string hand = Flatten(EncodePush(h, values.data(), values.size()));

    dlps::v1::PushRequest p;
    p.set_key(h.key);
    p.set_chunk(h.chunk);
    p.set_rank(h.rank);
    p.set_round(h.round);
    p.set_assign(h.assign);
    p.set_values(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
    ASSERT_EQ(hand, p.SerializeAsString()) << "trial " << trial;

    // And back: the generated encoding, cut at every possible place, decodes to the same fields and values.
    const std::string bytes = p.SerializeAsString();
    for (size_t cut = 0; cut <= bytes.size(); cut += 1 + bytes.size() / 17) {
      PushHeader d;
      Payload payload;
      ASSERT_TRUE(DecodePush(Cut(bytes, {cut}), &d, &payload).ok()) << cut;
      EXPECT_EQ(d.key, h.key);
      EXPECT_EQ(d.chunk, h.chunk);
      EXPECT_EQ(d.rank, h.rank);
      EXPECT_EQ(d.round, h.round);
      EXPECT_EQ(d.assign, h.assign);
      ASSERT_EQ(payload.floats(), values.size());
      std::vector<float> out(values.size(), -1);
      payload.CopyTo(out.data());
      EXPECT_EQ(out, values);
    }
  }
}

TEST(WireTest, PullReplyRoundTripsThroughTheGeneratedProto) {
  std::vector<float> values = {1.5f, -2.25f, 3e-7f};
  auto keep = std::make_shared<std::vector<float>>(values);
  grpc::ByteBuffer b = EncodePullReply({42, 3, 9}, keep->data(), keep->size(), keep);
  keep.reset();  // the buffer's slice holds its own reference
  dlps::v1::PullReply p;
  ASSERT_TRUE(p.ParseFromString(Flatten(b)));
  EXPECT_EQ(p.key(), 42u);
  EXPECT_EQ(p.chunk(), 3u);
  EXPECT_EQ(p.version(), 9u);
  ASSERT_EQ(p.values().size(), 12u);
  PullReplyHeader h;
  Payload payload;
  ASSERT_TRUE(DecodePullReply(b, &h, &payload).ok());
  std::vector<float> out(3);
  payload.CopyTo(out.data());
  EXPECT_EQ(out, values);
  EXPECT_EQ(h.version, 9u);
}

TEST(WireTest, UnknownFieldsAreSkipped) {
  dlps::v1::PushRequest p;
  p.set_key(5);
  p.set_values(std::string(8, '\0'));
  std::string bytes = p.SerializeAsString();
  bytes += std::string("\x30\x07", 2);                  // field 6, varint 7
  bytes += std::string("\x3a\x03" "abc", 5);            // field 7, bytes
  bytes += std::string("\x45\x01\x02\x03\x04", 5);      // field 8, fixed32
  PushHeader h;
  Payload payload;
  ASSERT_TRUE(DecodePush(Cut(bytes, {}), &h, &payload).ok());
  EXPECT_EQ(h.key, 5u);
  EXPECT_EQ(payload.floats(), 2u);
}

TEST(WireTest, MalformedMessagesAreRefusedWithTheReason) {
  struct Case {
    std::string bytes, reason;
  };
  const std::vector<Case> cases = {
      {std::string("\x08", 1), "truncated field 1"},
      {std::string("\x7a\x06" "abcdef", 8), "not a whole number of floats"},
      {std::string("\x7a\x08" "abcd", 6), "shorter than their length"},
      {std::string("\x78\x01", 2), "values is not a bytes field"},
      {std::string("\x0b", 1), "wire type 3"},
      {std::string("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12), "truncated field 1"},
  };
  for (const Case& c : cases) {
    PushHeader h;
    Payload payload;
    Status st = DecodePush(Cut(c.bytes, {}), &h, &payload);
    ASSERT_FALSE(st.ok()) << c.reason;
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.ToString().find(c.reason), std::string::npos) << st.ToString();
  }
}

}  // namespace
}  // namespace dlagent::ps
