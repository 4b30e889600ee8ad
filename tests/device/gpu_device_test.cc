// The GPU count on a machine with NVIDIA GPUs: NVML, the driver's device nodes and nvidia-smi agree. Skips
// without the driver, so it is listed in tests/CMakeLists.txt as a test that needs a device.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "bootstrap/node/gpu_count.h"
#include "tests/support/subprocess.h"

namespace dlagent {
namespace {

using testing::RunCommand;
using testing::RunResult;

TEST(GpuDeviceTest, NvmlTheDeviceNodesAndNvidiaSmiAgree) {
  void* nvml = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!nvml) GTEST_SKIP() << "needs an NVIDIA GPU and its driver (libnvidia-ml.so.1)";
  ::dlclose(nvml);

  const GpuCount counted = CountGpus();
  EXPECT_EQ(counted.source, "nvml") << "the driver's library loads, so NVML must answer";
  EXPECT_GT(counted.count, 0u);

  GpuCountOptions no_nvml;
  no_nvml.use_nvml = false;
  const GpuCount from_dev = CountGpus(no_nvml);
  EXPECT_EQ(from_dev.source, "/dev");
  EXPECT_EQ(from_dev.count, counted.count) << "NVML and /dev/nvidiaN disagree";

  const RunResult smi = RunCommand({"nvidia-smi", "-L"});
  ASSERT_EQ(smi.exit_code, 0) << "nvidia-smi -L: " << smi.output;
  uint32_t listed = 0;
  std::istringstream lines(smi.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("GPU ", 0) == 0) ++listed;
  }
  EXPECT_EQ(listed, counted.count) << smi.output;
}

}  // namespace
}  // namespace dlagent
