#pragma once
// dlps's data connection (docs/ps.md, "Wire"): tensors travel as frames over a plain TCP connection to the
// server's port, beside gRPC's control service on the same port (the server tells the two apart by the
// first bytes: HTTP/2's preface or Hello). The values are read straight from the socket into buffers that
// their owner allocated once (the server's per-rank receive buffers, the caller's `out`), and written
// straight from the tensor's memory: no copy, no allocation per message.
//
//   worker -> server   Hello, then requests: kPush (values follow), kPull
//   server -> worker   Hello (accepted) or kError (refused, then close), then one reply per request,
//                      matched by id: kPushReply, kPullReply (values follow) or kError (message follows).
//                      Replies come out of order: a pull waits for its round while later requests go on.
//
// Frames are little-endian (the only byte order dlps runs on, checked at compile time).
//
// Thread safety: functions only.

#include <sys/uio.h>

#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "bootstrap/common/status.h"

namespace dlagent::ps {

static_assert(std::endian::native == std::endian::little, "dlps frames are little-endian");

inline constexpr uint32_t kHelloMagic = 0x53504c44;  // "DLPS" on the wire
inline constexpr uint32_t kProtocolVersion = 2;      // 2: the Hello carries the job's credentials

struct Hello {
  uint32_t magic = kHelloMagic;
  uint32_t protocol = kProtocolVersion;
  uint32_t rank = 0;         // the worker's rank; every push on the connection is by this rank
  uint32_t num_workers = 0;  // the job's size as the worker knows it; the server refuses a mismatch
  // The job's id and token (DLPS_JOB, DLPS_TOKEN: agentctl run --launcher dlps gives them), for a server that
  // asks for them (agentd's shard); zeros otherwise.
  char job[16] = {};
  uint8_t token[32] = {};
};
static_assert(sizeof(Hello) == 64);

// The token of a job under a cluster key: HMAC-SHA256(key, "dlps-job:" + job), 32 raw bytes. Only a holder of
// the key (an agent) can make one; a worker shows it in its Hello and with every control call.
std::string DlpsJobToken(std::string_view key, std::string_view job);

enum class Op : uint32_t { kPush = 1, kPull = 2, kPushReply = 3, kPullReply = 4, kError = 5 };

struct Frame {
  Op op = Op::kPush;
  uint32_t chunk = 0;
  uint64_t key = 0;
  uint64_t id = 0;       // chosen by the worker, echoed in the reply
  uint64_t version = 0;  // kPush: the round it belongs to (0: set the initial values); kPull: the version to
                         // wait for; replies: the slice's version
  uint64_t bytes = 0;    // payload that follows: float32 values, or kError's message
  uint32_t aux = 0;      // kError: a StatusCode; kPullReply: microseconds the server spent summing and
                         // updating this version
  uint32_t reserved = 0;
};
static_assert(sizeof(Frame) == 48);

// A frame's payload above this is a protocol error (the connection is closed), never an allocation.
inline constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 32;

// Reads exactly n bytes. EOF is Unavailable("connection closed"); a receive timeout (SO_RCVTIMEO) is
// DeadlineExceeded.
Status ReadFull(int fd, void* dst, size_t n);
// Reads and drops n bytes (a payload nobody wants any more).
Status Discard(int fd, uint64_t n);
// Writes every byte of the iovecs (sendmsg, MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE).
Status WriteAll(int fd, iovec* iov, int count);

// "host:port" (host may be a name, an IPv4 or a bracketed IPv6 address).
Status SplitHostPort(const std::string& address, std::string* host, std::string* port);
// Connects within timeout, TCP_NODELAY set, blocking mode.
Result<int> ConnectTcp(const std::string& address, std::chrono::milliseconds timeout);
// Binds and listens; *port gets the port (useful with port 0).
Result<int> ListenTcp(const std::string& address, int* port);

}  // namespace dlagent::ps
