#pragma once
// Counts this node's NVIDIA GPUs on the node itself, never from an instance-type table (which said 0 for
// p4d and p5): NVML (libnvidia-ml.so.1 through dlopen, so that the agent runs on CPU-only hosts without the
// driver), else /dev/nvidia<N> device nodes, else /proc/driver/nvidia/gpus/*.
//
// Thread safety: CountGpus is thread-safe.

#include <string>

#include "bootstrap/common/env.h"

namespace dlagent {

struct GpuCountOptions {
  bool use_nvml = true;          // Default: try NVML first.
  std::string dev_dir = "/dev";  // Default: /dev (tests point these at a fake tree)
  std::string proc_dir = "/proc/driver/nvidia/gpus";
};

struct GpuCount {
  uint32_t count = 0;
  std::string source;  // "nvml", "/dev", "/proc", or "none"
};

GpuCount CountGpus(const GpuCountOptions& options = {});

}  // namespace dlagent
