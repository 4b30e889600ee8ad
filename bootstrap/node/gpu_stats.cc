#include "bootstrap/node/gpu_stats.h"

#include <dlfcn.h>

#include <chrono>
#include <mutex>

#include <spdlog/spdlog.h>

namespace dlagent {
namespace {

// NVML's C API, declared here so that no NVIDIA header is needed to build (nvml.h's layouts).
using NvmlDevice = void*;
struct NvmlUtilization {
  unsigned int gpu, memory;  // percent
};
struct NvmlMemory {
  unsigned long long total, free, used;  // bytes
};
constexpr int kNvmlSuccess = 0;
constexpr int kCorrected = 0, kUncorrected = 1;  // nvmlMemoryErrorType_t
constexpr int kVolatileEcc = 0;                  // nvmlEccCounterType_t
constexpr int kTemperatureGpu = 0;               // nvmlTemperatureSensors_t

struct Nvml {
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  int (*count)(unsigned int*) = nullptr;
  int (*handle)(unsigned int, NvmlDevice*) = nullptr;
  int (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  int (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  int (*ecc)(NvmlDevice, int, int, unsigned long long*) = nullptr;
  int (*temperature)(NvmlDevice, int, unsigned int*) = nullptr;
  int (*power)(NvmlDevice, unsigned int*) = nullptr;  // milliwatts
};

template <typename F>
void Bind(void* lib, const char* name, F* f) {
  *f = reinterpret_cast<F>(::dlsym(lib, name));
}

int64_t NowUnixMs() { return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

GpuStat Read(const Nvml& n, unsigned int i) {
  GpuStat s;
  s.index = i;
  NvmlDevice d = nullptr;
  if (n.handle(i, &d) != kNvmlSuccess) return s;
  NvmlUtilization u{};
  if (n.utilization && n.utilization(d, &u) == kNvmlSuccess) {
    s.utilization = u.gpu / 100.0;
    s.memory_utilization = u.memory / 100.0;
  }
  NvmlMemory m{};
  if (n.memory && n.memory(d, &m) == kNvmlSuccess) {
    s.memory_used_bytes = m.used;
    s.memory_total_bytes = m.total;
  }
  unsigned long long e = 0;
  if (n.ecc && n.ecc(d, kCorrected, kVolatileEcc, &e) == kNvmlSuccess) s.ecc_corrected = e;
  if (n.ecc && n.ecc(d, kUncorrected, kVolatileEcc, &e) == kNvmlSuccess) s.ecc_uncorrected = e;
  unsigned int t = 0;
  if (n.temperature && n.temperature(d, kTemperatureGpu, &t) == kNvmlSuccess) s.temperature_celsius = t;
  unsigned int mw = 0;
  if (n.power && n.power(d, &mw) == kNvmlSuccess) s.power_watts = mw / 1000.0;
  return s;
}

}  // namespace

struct GpuSampler::State {
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  bool done = false;
  GpuStats stats;
};

GpuSampler::GpuSampler(GpuSamplerOptions options) : state_(std::make_shared<State>()) {
  thread_ = std::thread([state = state_, o = std::move(options)] {
    void* lib = ::dlopen(o.library.c_str(), RTLD_NOW | RTLD_LOCAL);
    Nvml n;
    if (lib) {
      Bind(lib, "nvmlInit_v2", &n.init);
      Bind(lib, "nvmlShutdown", &n.shutdown);
      Bind(lib, "nvmlDeviceGetCount_v2", &n.count);
      Bind(lib, "nvmlDeviceGetHandleByIndex_v2", &n.handle);
      Bind(lib, "nvmlDeviceGetUtilizationRates", &n.utilization);
      Bind(lib, "nvmlDeviceGetMemoryInfo", &n.memory);
      Bind(lib, "nvmlDeviceGetTotalEccErrors", &n.ecc);
      Bind(lib, "nvmlDeviceGetTemperature", &n.temperature);
      Bind(lib, "nvmlDeviceGetPowerUsage", &n.power);
    }
    const bool usable = lib && n.init && n.shutdown && n.count && n.handle && n.init() == kNvmlSuccess;
    std::unique_lock lock(state->mu);
    while (usable && !state->stop) {
      lock.unlock();
      GpuStats read;
      read.nvml = true;
      unsigned int count = 0;
      if (n.count(&count) == kNvmlSuccess) {
        for (unsigned int i = 0; i < count && i < 64; ++i) read.gpus.push_back(Read(n, i));
      }
      read.read_unix_ms = NowUnixMs();
      lock.lock();
      state->stats = std::move(read);
      state->cv.wait_for(lock, o.interval, [&] { return state->stop; });
    }
    lock.unlock();
    if (usable) n.shutdown();
    if (lib) ::dlclose(lib);
    lock.lock();
    state->done = true;
    state->cv.notify_all();
  });
}

GpuSampler::~GpuSampler() {
  std::unique_lock lock(state_->mu);
  state_->stop = true;
  state_->cv.notify_all();
  if (state_->cv.wait_for(lock, std::chrono::seconds(2), [&] { return state_->done; })) {
    lock.unlock();
    thread_.join();
  } else {
    lock.unlock();
    spdlog::warn("gpu: NVML has not answered for 2 s; its reader is left behind");
    thread_.detach();
  }
}

GpuStats GpuSampler::stats() const {
  std::lock_guard lock(state_->mu);
  return state_->stats;
}

}  // namespace dlagent
