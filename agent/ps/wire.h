#pragma once
// The hand encoding of DlpsData's messages (proto/dlps.proto): the same bytes protobuf would write, built
// as a grpc::ByteBuffer of two slices: a small header (the scalar fields and the tag and length of
// `values`) and the values themselves, a slice over the caller's memory (no copy). Decoding reads the
// scalar fields and leaves the values where gRPC received them, as a Payload that copies them once,
// straight into the float buffer that needs them.
//
// Unknown fields are skipped (a newer peer may add some); a field with the wrong wire type, a truncated
// message or values whose length is not a whole number of floats is InvalidArgument.
//
// Thread safety: functions and values; a Payload may be read from any thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include "bootstrap/common/status.h"

namespace google::protobuf {
class Message;
}

namespace dlagent::ps {

inline constexpr char kPushMethod[] = "/dlps.v1.DlpsData/Push";
inline constexpr char kPullMethod[] = "/dlps.v1.DlpsData/Pull";

struct PushHeader {
  uint64_t key = 0;
  uint32_t chunk = 0;
  uint32_t rank = 0;
  uint64_t round = 0;
  bool assign = false;
};

struct PullReplyHeader {
  uint64_t key = 0;
  uint32_t chunk = 0;
  uint64_t version = 0;
};

// The values of a received message: the received slices, referenced, not copied.
class Payload {
 public:
  size_t floats() const { return bytes_ / sizeof(float); }
  // Copies floats() values into dst.
  void CopyTo(float* dst) const;

 private:
  friend Status DecodeMessage(const grpc::ByteBuffer&, uint64_t*, size_t, Payload*);
  std::vector<grpc::Slice> slices_;
  size_t offset_ = 0;  // where the values start in slices_[0]
  size_t bytes_ = 0;
};

// Who keeps the values alive while gRPC sends them: nullptr means the caller does, until the call
// completes; otherwise the slice holds this reference and drops it when gRPC is done with the bytes.
using Keepalive = std::shared_ptr<const void>;

grpc::ByteBuffer EncodePush(const PushHeader& h, const float* values, size_t n, Keepalive keep = nullptr);
grpc::ByteBuffer EncodePullReply(const PullReplyHeader& h, const float* values, size_t n, Keepalive keep = nullptr);
Status DecodePush(const grpc::ByteBuffer& buffer, PushHeader* h, Payload* values);
Status DecodePullReply(const grpc::ByteBuffer& buffer, PullReplyHeader* h, Payload* values);

// The small messages without values (PullRequest, PushReply) go through protobuf as usual.
grpc::ByteBuffer SerializeSmall(const google::protobuf::Message& m);

// Reads the varint fields 1..field_count-1 of a message into fields[] (absent ones stay 0) and field 15
// (bytes) into *values. The building block of the two decoders above.
Status DecodeMessage(const grpc::ByteBuffer& buffer, uint64_t* fields, size_t field_count, Payload* values);

}  // namespace dlagent::ps
