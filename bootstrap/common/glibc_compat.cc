// arc4random for the C++ runtime linked into the portable build (docs/deploy.md). gcc 12's libstdc++.a, built
// against glibc 2.36, makes std::random_device call arc4random (new in glibc 2.36), and every program that
// constructs a std::runtime_error pulls that object in. This definition, over getrandom (glibc 2.25), takes
// its place, so that the programs and libdlps run on glibc 2.34 (Amazon Linux 2023, RHEL 9). It is hidden, so it
// replaces nothing outside the binary, and it is linked only where asked for (-Wl,--undefined=arc4random;
// the CMake option DLAGENT_PORTABLE, and libdlps always). scripts/check-elf checks the result.
#include <sys/random.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v;
  for (;;) {
    const ssize_t n = ::getrandom(&v, sizeof v, 0);
    if (n == static_cast<ssize_t>(sizeof v)) return v;
    if (n < 0 && errno != EINTR) __builtin_trap();  // no kernel generator: nothing random can be made
  }
}
