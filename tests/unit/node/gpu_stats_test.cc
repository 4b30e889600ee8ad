#include "bootstrap/node/gpu_stats.h"

#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace dlagent {
namespace {

using namespace std::chrono;

// Waits for the sampler's first complete read.
GpuStats FirstRead(const GpuSampler& s) {
  for (const auto until = steady_clock::now() + seconds(10); steady_clock::now() < until; std::this_thread::sleep_for(milliseconds(10))) {
    GpuStats st = s.stats();
    if (st.read_unix_ms > 0) return st;
  }
  return {};
}

TEST(GpuSamplerTest, ReadsEveryGpusFiguresAndLeavesOutWhatIsNotSupported) {
  GpuSampler s({DLAGENT_FAKE_NVML, milliseconds(50)});
  const GpuStats st = FirstRead(s);
  ASSERT_TRUE(st.nvml);
  ASSERT_EQ(st.gpus.size(), 2u);
  const GpuStat& g0 = st.gpus[0];
  const GpuStat& g1 = st.gpus[1];
  EXPECT_EQ(g1.index, 1u);
  EXPECT_DOUBLE_EQ(*g0.utilization, 0.4);
  EXPECT_DOUBLE_EQ(*g1.utilization, 0.9);
  EXPECT_DOUBLE_EQ(*g0.memory_utilization, 0.25);
  EXPECT_EQ(*g0.memory_total_bytes, 80ULL << 30);
  EXPECT_EQ(*g1.memory_used_bytes, 2ULL << 30);
  EXPECT_EQ(*g0.ecc_corrected, 7u);
  EXPECT_EQ(*g0.ecc_uncorrected, 1u);
  EXPECT_FALSE(g1.ecc_corrected.has_value()) << "GPU 1 has no ECC: missing, not zero";
  EXPECT_DOUBLE_EQ(*g1.temperature_celsius, 51);
  EXPECT_DOUBLE_EQ(*g0.power_watts, 312.5);
}

TEST(GpuSamplerTest, WithoutNvmlThereAreNoFigures) {
  GpuSampler s({"/nonexistent/libnvidia-ml.so.1", milliseconds(50)});
  const GpuStats st = s.stats();
  EXPECT_FALSE(st.nvml);
  EXPECT_TRUE(st.gpus.empty());
}

// Last in this file: the fake hangs from here on in this process (its reader stays stuck until the process
// ends, so that nothing it does races the process's exit).
TEST(GpuSamplerTest, AHungDriverNeitherBlocksAReadNorTheStop) {
  int never[2], entered[2];  // never: nothing is ever written to it; entered: the fake says it hangs now
  ASSERT_EQ(::pipe(never), 0);
  ASSERT_EQ(::pipe(entered), 0);
  ::setenv("FAKE_NVML_HANG_FDS", (std::to_string(never[0]) + " " + std::to_string(entered[1])).c_str(), 1);
  std::optional<GpuSampler> s(std::in_place, GpuSamplerOptions{DLAGENT_FAKE_NVML, milliseconds(50)});
  pollfd p{entered[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1) << "the reader never reached the driver";
  const auto t0 = steady_clock::now();
  const GpuStats st = s->stats();  // the reader is stuck in the driver: nothing read yet, answered at once
  EXPECT_LT(steady_clock::now() - t0, milliseconds(100));
  EXPECT_EQ(st.read_unix_ms, 0);
  EXPECT_TRUE(st.gpus.empty());
  const auto t1 = steady_clock::now();
  s.reset();  // the stop waits 2 s for the stuck reader, then leaves it behind
  EXPECT_GE(steady_clock::now() - t1, milliseconds(1900));
  EXPECT_LT(steady_clock::now() - t1, seconds(4));
}

}  // namespace
}  // namespace dlagent
