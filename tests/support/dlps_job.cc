#include "tests/support/dlps_job.h"

#include <algorithm>

namespace dlagent::testing {

DlpsServers::DlpsServers(const TempDir& dir, int n, uint32_t workers, const std::string& mode, const std::string& checkpoint_dir,
                         const std::string& binary) {
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> argv = {
        binary.empty() ? std::string(DLAGENT_DLPS_SERVER) : binary, "--listen", "127.0.0.1:0", "--workers", std::to_string(workers), "--mode", mode};
    if (!checkpoint_dir.empty()) argv.insert(argv.end(), {"--checkpoint-dir", checkpoint_dir});
    procs.push_back(std::make_unique<Subprocess>(argv, std::vector<std::string>{}, dir.Join("server" + std::to_string(i) + ".log")));
    addresses.push_back(procs.back()->WaitListening(std::chrono::seconds(10)));
  }
}

bool DlpsServers::ok() const { return std::find(addresses.begin(), addresses.end(), "") == addresses.end(); }

std::string DlpsServers::List() const {
  std::string list;
  for (const auto& a : addresses) list += (list.empty() ? "" : ",") + a;
  return list;
}

std::vector<std::unique_ptr<Subprocess>> StartTrainers(const TempDir& dir, const std::string& servers, int workers,
                                                       const std::vector<std::string>& args, const std::string& tag) {
  std::vector<std::unique_ptr<Subprocess>> ranks;
  for (int r = 0; r < workers; ++r) {
    std::vector<std::string> argv = {DLAGENT_DLPS_TRAIN, "--progress", "never"};
    argv.insert(argv.end(), args.begin(), args.end());
    ranks.push_back(std::make_unique<Subprocess>(
        argv, std::vector<std::string>{"DLPS_SERVERS=" + servers, "DLPS_RANK=" + std::to_string(r), "DLPS_NUM_WORKERS=" + std::to_string(workers)},
        dir.Join(tag + std::to_string(r) + ".log")));
  }
  return ranks;
}

}  // namespace dlagent::testing
