#include "bootstrap/node/gpu_count.h"

#include <dirent.h>
#include <dlfcn.h>

#include <cctype>
#include <cstring>

namespace dlagent {
namespace {

// NVML's C API, declared here so that no NVIDIA header is needed to build.
using NvmlInit = int (*)();
using NvmlCount = int (*)(unsigned int*);
using NvmlShutdown = int (*)();

bool CountWithNvml(uint32_t* count) {
  void* lib = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return false;
  auto init = reinterpret_cast<NvmlInit>(::dlsym(lib, "nvmlInit_v2"));
  auto get_count = reinterpret_cast<NvmlCount>(::dlsym(lib, "nvmlDeviceGetCount_v2"));
  auto shutdown = reinterpret_cast<NvmlShutdown>(::dlsym(lib, "nvmlShutdown"));
  bool ok = false;
  if (init && get_count && shutdown && init() == 0) {
    unsigned int n = 0;
    ok = get_count(&n) == 0;
    if (ok) *count = n;
    shutdown();
  }
  ::dlclose(lib);
  return ok;
}

// Entries of dir for which match(name) holds.
template <typename Match>
uint32_t CountEntries(const std::string& dir, Match match) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  uint32_t n = 0;
  while (dirent* e = ::readdir(d)) {
    if (match(std::string_view(e->d_name))) ++n;
  }
  ::closedir(d);
  return n;
}

}  // namespace

GpuCount CountGpus(const GpuCountOptions& options) {
  GpuCount c;
  if (options.use_nvml && CountWithNvml(&c.count)) {
    c.source = "nvml";
    return c;
  }
  // /dev/nvidia0, /dev/nvidia1, ... (not nvidiactl, nvidia-uvm, nvidia-caps).
  c.count = CountEntries(options.dev_dir, [](std::string_view name) {
    if (name.size() <= 6 || name.substr(0, 6) != "nvidia") return false;
    for (char ch : name.substr(6)) {
      if (!std::isdigit(static_cast<unsigned char>(ch))) return false;
    }
    return true;
  });
  if (c.count > 0) {
    c.source = "/dev";
    return c;
  }
  c.count = CountEntries(options.proc_dir, [](std::string_view name) { return name != "." && name != ".."; });
  c.source = c.count > 0 ? "/proc" : "none";
  return c;
}

}  // namespace dlagent
