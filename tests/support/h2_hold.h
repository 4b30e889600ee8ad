#pragma once
// An HTTP/2 client that does what an attacker of a gRPC port does: it opens calls whose gRPC message declares
// `declared` bytes and sends all of them but the last byte, as fast as the server's flow control lets it, and
// never finishes them. The server holds what it received for each call. Enough of the protocol is spoken for
// a real gRPC server to take it as a client: the preface, SETTINGS and their acknowledgement, PING replies,
// and the connection's and streams' flow-control windows. It never sends past a window.
//
// Thread safety: a function, one call at a time per thread.

#include <sys/socket.h>

#include <chrono>
#include <cstddef>
#include <string>

namespace dlagent::testing {

struct H2HoldOptions {
  sockaddr_storage addr{};  // REQUIRED: a TCP or unix stream socket address
  socklen_t addr_len = 0;   // REQUIRED
  std::string path;         // REQUIRED: the method, "/package.Service/Method"
  int connections = 10;
  int streams = 16;                          // calls opened on each connection
  size_t declared = 8 << 20;                 // the message size each call declares
  std::chrono::milliseconds duration{3000};  // how long to keep sending
};

struct H2HoldResult {
  int connected = 0;          // connections that completed the preface
  int closed_by_server = 0;   // connections the server closed (GOAWAY or EOF) while held
  int streams_reset = 0;      // calls the server reset
  size_t accepted_bytes = 0;  // DATA payload the server's windows let through, all connections together
};

// Holds the calls for `duration`, then closes every connection.
H2HoldResult HoldIncompleteMessages(const H2HoldOptions& options);

// A loopback TCP address, or a unix socket path, for H2HoldOptions.
void SetTcpLoopback(H2HoldOptions& options, int port);
void SetUnixPath(H2HoldOptions& options, const std::string& path);

}  // namespace dlagent::testing
