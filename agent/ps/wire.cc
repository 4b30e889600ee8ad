#include "agent/ps/wire.h"

#include <algorithm>
#include <cstring>
#include <string>

#include <grpcpp/impl/codegen/proto_utils.h>

namespace dlagent::ps {
namespace {

constexpr uint32_t kValuesField = 15;
constexpr int kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5;

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// proto3 leaves fields at their default out; so do we, to write the same bytes.
void PutField(std::string& out, uint32_t field, uint64_t v) {
  if (v == 0) return;
  PutVarint(out, (uint64_t{field} << 3) | kVarint);
  PutVarint(out, v);
}

void DestroyKeepalive(void* p) { delete static_cast<Keepalive*>(p); }

grpc::ByteBuffer Assemble(std::string header, const float* values, size_t n, Keepalive keep) {
  const size_t bytes = n * sizeof(float);
  if (bytes != 0) {
    PutVarint(header, (uint64_t{kValuesField} << 3) | kLen);
    PutVarint(header, bytes);
  }
  grpc::Slice parts[2] = {grpc::Slice(header), grpc::Slice()};
  if (bytes == 0) return grpc::ByteBuffer(parts, 1);
  void* data = const_cast<float*>(values);  // gRPC only reads it
  parts[1] = keep ? grpc::Slice(data, bytes, DestroyKeepalive, new Keepalive(std::move(keep)))
                  : grpc::Slice(values, bytes, grpc::Slice::STATIC_SLICE);
  return grpc::ByteBuffer(parts, 2);
}

// Reads bytes across the slices of a message.
class Reader {
 public:
  explicit Reader(const std::vector<grpc::Slice>& slices) : slices_(slices) {}
  bool done() {
    Settle();
    return index_ == slices_.size();
  }
  bool Byte(uint8_t* b) {
    Settle();
    if (index_ == slices_.size()) return false;
    *b = slices_[index_].begin()[offset_++];
    return true;
  }
  bool Varint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!Byte(&b)) return false;
      *v |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) return true;
    }
    return false;  // more than 10 bytes
  }
  bool Skip(uint64_t n) {
    while (n > 0) {
      Settle();
      if (index_ == slices_.size()) return false;
      const size_t step = std::min<uint64_t>(n, slices_[index_].size() - offset_);
      offset_ += step;
      n -= step;
    }
    return true;
  }
  size_t index() const { return index_; }
  size_t offset() const { return offset_; }

 private:
  void Settle() {
    while (index_ < slices_.size() && offset_ == slices_[index_].size()) {
      ++index_;
      offset_ = 0;
    }
  }
  const std::vector<grpc::Slice>& slices_;
  size_t index_ = 0, offset_ = 0;
};

Status Malformed(const std::string& what) { return Status::InvalidArgument("dlps-wire", "malformed message: " + what); }

}  // namespace

void Payload::CopyTo(float* dst) const {
  auto* out = reinterpret_cast<char*>(dst);
  size_t left = bytes_, offset = offset_;
  for (size_t i = 0; left > 0 && i < slices_.size(); ++i, offset = 0) {
    const size_t n = std::min(left, slices_[i].size() - offset);
    std::memcpy(out, slices_[i].begin() + offset, n);
    out += n;
    left -= n;
  }
}

grpc::ByteBuffer SerializeSmall(const google::protobuf::Message& m) {
  grpc::ByteBuffer out;
  bool own = false;
  (void)grpc::GenericSerialize<grpc::ProtoBufferWriter, google::protobuf::Message>(m, &out, &own);  // fails only past 2 GB
  return out;
}

Status DecodeMessage(const grpc::ByteBuffer& buffer, uint64_t* fields, size_t field_count, Payload* values) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return Malformed("unreadable buffer");
  for (size_t i = 0; i < field_count; ++i) fields[i] = 0;
  *values = Payload();
  Reader r(slices);
  while (!r.done()) {
    uint64_t tag;
    if (!r.Varint(&tag)) return Malformed("truncated tag");
    const uint64_t field = tag >> 3;
    const int type = static_cast<int>(tag & 7);
    if (field == kValuesField) {
      uint64_t len;
      if (type != kLen) return Malformed("values is not a bytes field");
      if (!r.Varint(&len)) return Malformed("truncated values length");
      if (len % sizeof(float) != 0) return Malformed("values of " + std::to_string(len) + " bytes is not a whole number of floats");
      const size_t start_index = r.index(), start_offset = r.offset();
      if (!r.Skip(len)) return Malformed("values shorter than their length");
      values->slices_.assign(slices.begin() + static_cast<ptrdiff_t>(start_index), slices.end());
      values->offset_ = start_offset;
      values->bytes_ = len;
      continue;
    }
    uint64_t v = 0, len = 0;
    switch (type) {
      case kVarint:
        if (!r.Varint(&v)) return Malformed("truncated field " + std::to_string(field));
        if (field > 0 && field < field_count) fields[field] = v;
        break;
      case kFixed64:
        if (!r.Skip(8)) return Malformed("truncated field " + std::to_string(field));
        break;
      case kFixed32:
        if (!r.Skip(4)) return Malformed("truncated field " + std::to_string(field));
        break;
      case kLen:
        if (!r.Varint(&len) || !r.Skip(len)) return Malformed("truncated field " + std::to_string(field));
        break;
      default:
        return Malformed("field " + std::to_string(field) + " has wire type " + std::to_string(type));
    }
  }
  return Status::Ok();
}

grpc::ByteBuffer EncodePush(const PushHeader& h, const float* values, size_t n, Keepalive keep) {
  std::string header;
  PutField(header, 1, h.key);
  PutField(header, 2, h.chunk);
  PutField(header, 3, h.rank);
  PutField(header, 4, h.round);
  PutField(header, 5, h.assign ? 1 : 0);
  return Assemble(std::move(header), values, n, std::move(keep));
}

grpc::ByteBuffer EncodePullReply(const PullReplyHeader& h, const float* values, size_t n, Keepalive keep) {
  std::string header;
  PutField(header, 1, h.key);
  PutField(header, 2, h.chunk);
  PutField(header, 3, h.version);
  return Assemble(std::move(header), values, n, std::move(keep));
}

Status DecodePush(const grpc::ByteBuffer& buffer, PushHeader* h, Payload* values) {
  uint64_t f[6];
  RETURN_IF_ERROR(DecodeMessage(buffer, f, 6, values));
  if (f[2] > UINT32_MAX || f[3] > UINT32_MAX) return Malformed("chunk or rank out of range");
  *h = PushHeader{f[1], static_cast<uint32_t>(f[2]), static_cast<uint32_t>(f[3]), f[4], f[5] != 0};
  return Status::Ok();
}

Status DecodePullReply(const grpc::ByteBuffer& buffer, PullReplyHeader* h, Payload* values) {
  uint64_t f[4];
  RETURN_IF_ERROR(DecodeMessage(buffer, f, 4, values));
  if (f[2] > UINT32_MAX) return Malformed("chunk out of range");
  *h = PullReplyHeader{f[1], static_cast<uint32_t>(f[2]), f[3]};
  return Status::Ok();
}

}  // namespace dlagent::ps
