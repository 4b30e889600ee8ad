#pragma once
// dlps-server and dlps-train processes for tests and benches: the one place that knows how to start them.
//
// Thread safety: none; make and use on one thread (Subprocess's rule: children die with the thread).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace dlagent::testing {

class DlpsServers {
 public:
  // n dlps-server processes on free loopback ports for a job of `workers` (0: sized by its workers), logs in
  // dir; each is waited for until it announces its address (up to 10 s).
  // binary: the dlps-server to run ("": the build's).
  DlpsServers(const TempDir& dir, int n, uint32_t workers, const std::string& mode = "sync", const std::string& checkpoint_dir = "",
              const std::string& binary = "");
  bool ok() const;           // every server announced its address
  std::string List() const;  // "host:port,host:port", as DLPS_SERVERS wants it
  std::vector<std::unique_ptr<Subprocess>> procs;
  std::vector<std::string> addresses;  // "" for a server that did not start
};

// dlps-train ranks 0..workers-1 against `servers` (DLPS_SERVERS), each with `args` (after --progress never)
// and its log at dir/<tag><rank>.log.
std::vector<std::unique_ptr<Subprocess>> StartTrainers(const TempDir& dir, const std::string& servers, int workers,
                                                       const std::vector<std::string>& args, const std::string& tag = "rank");

}  // namespace dlagent::testing
