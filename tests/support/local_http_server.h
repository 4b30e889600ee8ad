#pragma once
// A cpp-httplib server on loopback for tests and emulators: Start() returns once it accepts connections,
// and the destructor stops it. (httplib's stop() does nothing if it runs before the listening thread has
// started, which would hang the join: Start() waits for that.) An owner whose handlers use its other
// members must call Stop() first in its destructor, so that no handler runs while they are destroyed.
//
// Debian's cpp-httplib (0.11) reads the body of a PUT or POST without Content-Length until the connection
// ends, where real services take it as empty: AWS's own `curl -X PUT .../latest/api/token` (which sends
// none) hangs, then gets 400. With `bodyless_without_length`, a front on the public port passes every
// request to httplib (listening on an internal port) and gives one that has neither Content-Length nor
// Transfer-Encoding a "Content-Length: 0" on the way.

#include <memory>
#include <string>
#include <thread>

#include <httplib.h>

#include "bootstrap/common/status.h"

namespace dlagent::testing {

class LocalHttpServer {
 public:
  LocalHttpServer();
  ~LocalHttpServer();
  LocalHttpServer(const LocalHttpServer&) = delete;
  LocalHttpServer& operator=(const LocalHttpServer&) = delete;

  // Register routes on server() first. port 0: any free port.
  httplib::Server& server() { return server_; }
  Status Start(const std::string& host = "127.0.0.1", int port = 0, bool bodyless_without_length = false);
  void Stop();
  int port() const;
  std::string url(const std::string& path = "") const;

 private:
  class Front;
  httplib::Server server_;
  std::thread thread_;
  std::unique_ptr<Front> front_;
  std::string host_;
  int port_ = -1;
};

}  // namespace dlagent::testing
