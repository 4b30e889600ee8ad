// train_bench: what distribution costs dlps-train. The same training (MLP, equal global batch) in one process
// (the baseline, measured in the same run), then with 1, 2 and 4 worker processes, each configuration with
// as many dlps-server processes as workers (a server on every node, as agentd runs them). Prints the
// mean epoch time after the first epoch, its ratio to the baseline, and where a round's time goes.
// The machine has 2 cores: 4 workers share them, so no speedup is possible there; the ratio is the cost.
//
//   train_bench [--epochs N] [--samples N]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/dlps_job.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace {

using dlagent::testing::Subprocess;
using namespace std::chrono;

int epochs = 4;
std::string samples = "40000";

// The same training everywhere: dlps-train's arguments.
std::vector<std::string> TrainArgs() {
  return {"--model", "mlp", "--features", "256", "--hidden", "512", "--batch", "1024", "--samples", samples, "--epochs", std::to_string(epochs)};
}

struct Figures {
  double epoch_s = 0;  // mean over epochs 2..N
  std::string round;   // the last epoch's "per round: ..." text
};

// Reads rank 0's epoch lines.
Figures Parse(const std::string& out) {
  Figures f;
  std::regex line(R"(epoch (\d+)/\d+: .*\| ([0-9.]+) s, .*per round: (.*))");
  int counted = 0;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, line)) continue;
    if (std::stoi(m[1]) > 1 || epochs == 1) {
      f.epoch_s += std::stod(m[2]);
      ++counted;
    }
    f.round = m[3];
  }
  if (counted == 0) {
    std::fprintf(stderr, "train_bench: no epoch lines in dlps-train's output:\n%s\n", out.c_str());
    std::exit(1);
  }
  f.epoch_s /= counted;
  return f;
}

Figures Local() {
  dlagent::testing::TempDir dir;
  std::vector<std::string> argv = {DLAGENT_DLPS_TRAIN, "--local", "--progress", "never"};
  for (auto& a : TrainArgs()) argv.push_back(a);
  Subprocess p(argv, {}, dir.Join("local.log"));
  if (p.Wait(minutes(5)) != 0) {
    std::fprintf(stderr, "train_bench: dlps-train --local failed:\n%s\n", p.Output().c_str());
    std::exit(1);
  }
  return Parse(p.Output());
}

Figures Distributed(int workers) {
  dlagent::testing::TempDir dir;
  dlagent::testing::DlpsServers servers(dir, workers, static_cast<uint32_t>(workers));
  if (!servers.ok()) {
    std::fprintf(stderr, "train_bench: a dlps-server did not start\n");
    std::exit(1);
  }
  auto ranks = dlagent::testing::StartTrainers(dir, servers.List(), workers, TrainArgs());
  for (int r = 0; r < workers; ++r) {
    if (ranks[r]->Wait(minutes(5)) != 0) {
      std::fprintf(stderr, "train_bench: rank %d failed:\n%s\n", r, ranks[r]->Output().c_str());
      std::exit(1);
    }
  }
  return Parse(ranks[0]->Output());
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--epochs") && i + 1 < argc) {
      epochs = std::max(2, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--samples") && i + 1 < argc) {
      samples = argv[++i];
    } else {
      std::fprintf(stderr, "usage: train_bench [--epochs N] [--samples N]\n");
      return 2;
    }
  }
  std::printf("dlps-train, MLP 256-512-10, global batch 1024, %s samples; mean epoch after the first\n", samples.c_str());
  const Figures base = Local();
  std::printf("  1 process, no servers (baseline): %.3f s per epoch; per round: %s\n", base.epoch_s, base.round.c_str());
  for (int workers : {1, 2, 4}) {
    const Figures f = Distributed(workers);
    std::printf("  %d worker%s + %d server%s: %.3f s per epoch, %.2fx the baseline; per round: %s\n", workers, workers > 1 ? "s" : " ", workers,
                workers > 1 ? "s" : " ", f.epoch_s, f.epoch_s / base.epoch_s, f.round.c_str());
  }
  return 0;
}
