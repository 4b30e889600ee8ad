#pragma once
// dlps's wire (docs/ps.md, "Wire"): one plain TCP connection from each worker to each server carries
// everything, as frames: the tensors and the control requests (Init, Barrier, checkpoints). The values are
// read straight from the socket into buffers that their owner allocated once (the server's per-rank receive
// buffers, the caller's `out`), and written straight from the tensor's memory: no copy, no allocation per
// message. No gRPC or protobuf: the client library (libdlps, the Python package) needs nothing but the C and
// C++ runtimes and OpenSSL.
//
//   worker -> server   Hello, then requests: kPush (values follow), kPull, and the control requests below
//   server -> worker   Hello (accepted) or kError (refused, then close), then one reply per request,
//                      matched by id: kPushReply, kPullReply (values follow), kControlReply or kError
//                      (message follows). Replies come out of order: a pull waits for its round while later
//                      requests go on.
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
#include <vector>

#include "agent/ps/optimizer.h"
#include "bootstrap/common/status.h"

namespace dlagent::ps {

static_assert(std::endian::native == std::endian::little, "dlps frames are little-endian");

inline constexpr uint32_t kHelloMagic = 0x53504c44;  // "DLPS" on the wire
inline constexpr uint32_t kProtocolVersion = 3;      // 2: the Hello carries the job's credentials; 3: control on the connection

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

enum class Op : uint32_t {
  kPush = 1,
  kPull = 2,
  kPushReply = 3,
  kPullReply = 4,
  kError = 5,
  // Control requests, each answered by kControlReply (or kError) with a payload of at most kMaxControlBytes:
  kInit = 6,              // key, chunk; payload InitBody. Reply: version = the slice's version (0: new)
  kBarrier = 7,           // version = the worker's barrier generation, from 1 (server 0). Reply once every worker entered it
  kCheckpoint = 8,        // chunk = this server's index in the job's list, aux = the list's length; payload: the name.
                          // Reply: payload = EncodeCheckpointFiles of the one file written
  kCommitCheckpoint = 9,  // server 0: payload = the name, '\n', EncodeCheckpointFiles of every server's file, in order
  kRestore = 10,          // chunk = index, aux = count; payload: the name
  kControlReply = 11,
};

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
// A control request's or reply's payload above this is refused, and the connection closed.
inline constexpr uint64_t kMaxControlBytes = uint64_t{1} << 20;

bool IsControl(Op op);
// "push", "pull", "init", "barrier", ...
const char* OpName(Op op);

// kInit's payload: the slice's length and the optimizer as the caller gave it (OptimizerSpec: zero fields take
// the defaults, and the server checks the ranges).
struct InitBody {
  uint64_t length = 0;  // floats
  char kind[8] = {};    // "sgd", "adam", "sum"; "" is "sum"
  float learning_rate = 0, momentum = 0, weight_decay = 0, beta1 = 0, beta2 = 0, epsilon = 0, rescale = 0;
  uint32_t reserved = 0;
};
static_assert(sizeof(InitBody) == 48);
// The two sides of kInit: the body a worker sends for a slice of `length` floats, and the spec the server
// resolves (and checks) from it.
InitBody MakeInitBody(uint64_t length, const OptimizerSpec& spec);
OptimizerSpec SpecOf(const InitBody& body);

// One server's checkpoint file, as kCheckpoint's reply and kCommitCheckpoint's request carry it.
struct CheckpointFile {
  std::string name;
  uint64_t bytes = 0;
  std::string sha256;  // hex
};
// One line "name bytes sha256" per file. Decoding refuses anything else (a name or hash with a space or a
// newline, a bad number), naming the line.
std::string EncodeCheckpointFiles(const std::vector<CheckpointFile>& files);
Result<std::vector<CheckpointFile>> DecodeCheckpointFiles(std::string_view text);

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
