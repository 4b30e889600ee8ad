/* A stand-in for the driver's libnvidia-ml.so.1 (tests of GpuSampler): two GPUs with fixed figures, GPU 1
 * without ECC (NVML_ERROR_NOT_SUPPORTED). With FAKE_NVML_HANG_FDS="IN OUT" set, a utilisation read hangs as
 * NVML does on a GPU that fell off the bus: it writes a byte to fd OUT (the test sees the reader is stuck)
 * and then reads fd IN, which the test never writes to. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
  unsigned int gpu, memory;
} util_t;
typedef struct {
  unsigned long long total, free, used;
} mem_t;

enum { kSuccess = 0, kInvalidArgument = 2, kNotSupported = 3 };

int nvmlInit_v2(void) { return kSuccess; }
int nvmlShutdown(void) { return kSuccess; }
int nvmlDeviceGetCount_v2(unsigned int* n) {
  *n = 2;
  return kSuccess;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void** d) {
  if (i >= 2) return kInvalidArgument;
  *d = (void*)(unsigned long)(i + 1); /* never dereferenced: the index, plus one */
  return kSuccess;
}
static unsigned int Index(void* d) { return (unsigned int)((unsigned long)d - 1); }
int nvmlDeviceGetUtilizationRates(void* d, util_t* u) {
  const char* hang = getenv("FAKE_NVML_HANG_FDS");
  int in = -1, out = -1;
  if (hang && sscanf(hang, "%d %d", &in, &out) == 2) {
    char c = 1;
    if (write(out, &c, 1) != 1) return 999;
    while (read(in, &c, 1) != 0) {
    }
  }
  u->gpu = 40 + 50 * Index(d); /* 40 %, 90 % */
  u->memory = 25;
  return kSuccess;
}
int nvmlDeviceGetMemoryInfo(void* d, mem_t* m) {
  m->total = 80ULL << 30;
  m->used = (Index(d) + 1ULL) << 30;
  m->free = m->total - m->used;
  return kSuccess;
}
int nvmlDeviceGetTotalEccErrors(void* d, int type, int counter, unsigned long long* n) {
  if (Index(d) == 1 || counter != 0) return kNotSupported;
  *n = type == 0 ? 7 : 1; /* corrected, uncorrected */
  return kSuccess;
}
int nvmlDeviceGetTemperature(void* d, int sensor, unsigned int* t) {
  *t = 50 + Index(d);
  return kSuccess;
}
int nvmlDeviceGetPowerUsage(void* d, unsigned int* mw) {
  *mw = 312500;
  return kSuccess;
}
