#pragma once
// GpuSampler: what NVML says of each GPU (utilisation, memory, ECC errors, temperature, power), read on a
// thread of its own every interval, so that /metrics answers from the last read and never waits on the
// driver: NVML calls can hang on a GPU that fell off the bus (an Xid), and a hung read only makes the figures
// stale, which GpuStats::read_unix_ms shows. Without NVML (a CPU-only host, no driver) there are no figures.
//
// Thread safety: stats() may be called from any thread. The destructor waits up to 2 s for the thread; one
// stuck in the driver is left behind (detached) rather than hanging the agent's stop.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bootstrap/common/env.h"

namespace dlagent {

struct GpuStat {
  uint32_t index = 0;
  // Each figure is absent when this GPU or driver does not give it (NVML_ERROR_NOT_SUPPORTED, ...).
  std::optional<double> utilization;         // 0..1 of the last sample period: a kernel ran
  std::optional<double> memory_utilization;  // 0..1: memory was read or written
  std::optional<uint64_t> memory_used_bytes, memory_total_bytes;
  std::optional<uint64_t> ecc_corrected, ecc_uncorrected;  // volatile counts (since the driver loaded)
  std::optional<double> temperature_celsius;
  std::optional<double> power_watts;
};

struct GpuStats {
  bool nvml = false;         // NVML loaded and initialised
  int64_t read_unix_ms = 0;  // when the last complete read ended (0: none yet)
  std::vector<GpuStat> gpus;
};

struct GpuSamplerOptions {
  std::string library = "libnvidia-ml.so.1";    // Default: the driver's NVML (tests load a fake)
  Duration interval = std::chrono::seconds(5);  // Default: 5 s between reads
};

class GpuSampler {
 public:
  explicit GpuSampler(GpuSamplerOptions options = {});
  ~GpuSampler();
  GpuSampler(const GpuSampler&) = delete;
  GpuSampler& operator=(const GpuSampler&) = delete;

  GpuStats stats() const;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the thread, which may outlive the sampler (stuck in NVML)
  std::thread thread_;
};

}  // namespace dlagent
