#pragma once
// A cpp-httplib server on loopback for tests and emulators: Start() returns once it accepts connections,
// and the destructor stops it. (httplib's stop() does nothing if it runs before the listening thread has
// started, which would hang the join: Start() waits for that.) An owner whose handlers use its other
// members must call Stop() first in its destructor, so that no handler runs while they are destroyed.

#include <string>
#include <thread>

#include <httplib.h>

#include "bootstrap/common/status.h"

namespace dlagent::testing {

class LocalHttpServer {
 public:
  LocalHttpServer() = default;
  ~LocalHttpServer();
  LocalHttpServer(const LocalHttpServer&) = delete;
  LocalHttpServer& operator=(const LocalHttpServer&) = delete;

  // Register routes on server() first. port 0: any free port.
  httplib::Server& server() { return server_; }
  Status Start(const std::string& host = "127.0.0.1", int port = 0);
  void Stop();
  int port() const { return port_; }
  std::string url(const std::string& path = "") const;

 private:
  httplib::Server server_;
  std::thread thread_;
  std::string host_;
  int port_ = -1;
};

}  // namespace dlagent::testing
