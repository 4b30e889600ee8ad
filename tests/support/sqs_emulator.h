#pragma once
// The SQS emulator (fauxqs, pinned in tests/emulators/sqs) as a child process on one address (127.0.0.1
// unless told), for one test.

#include <memory>
#include <string>

#include "tests/support/subprocess.h"

namespace dlagent::testing {

class SqsEmulator {
 public:
  // Starts it and waits until it serves. An error string (empty on success) says why it could not start,
  // e.g. node or the npm packages are missing (scripts/test installs them).
  static std::unique_ptr<SqsEmulator> Start(const std::string& work_dir, std::string* error, const std::string& host = "127.0.0.1");
  const std::string& endpoint() const { return endpoint_; }  // "http://HOST:PORT"

 private:
  std::unique_ptr<Subprocess> process_;
  std::string endpoint_;
};

}  // namespace dlagent::testing
