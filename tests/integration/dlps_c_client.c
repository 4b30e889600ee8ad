/* Rank 0 of a 2-worker job through the C API (libdlps.so); rank 1 is the Python module
 * (dlps_clients_test.sh). Exits non-zero, saying why, when anything is off. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ps/c_api.h"

static int failed = 0;
#define CHECK(cond, ...)                         \
  do {                                           \
    if (!(cond)) {                               \
      fprintf(stderr, "c client: " __VA_ARGS__); \
      fprintf(stderr, "\n");                     \
      failed = 1;                                \
    }                                            \
  } while (0)

int main(int argc, char** argv) {
  char err[512];
  if (argc != 2) return 2;
  /* A server that is not there: NULL and a message naming it, at the connect timeout. */
  const char* servers = getenv("DLPS_SERVERS");
  setenv("DLPS_SERVERS", "127.0.0.1:1", 1);
  setenv("DLPS_CONNECT_TIMEOUT", "1s", 1);
  dlps_client* none = dlps_connect_env(err, sizeof err);
  CHECK(none == NULL && strstr(err, "dlps server 127.0.0.1:1") != NULL, "connect to a closed port: %s", err);
  setenv("DLPS_SERVERS", servers, 1);

  dlps_client* c = dlps_connect_env(err, sizeof err);
  if (!c) {
    fprintf(stderr, "c client: %s\n", err);
    return 1;
  }
  CHECK(dlps_rank(c) == 0 && dlps_num_workers(c) == 2, "rank %u of %u", dlps_rank(c), dlps_num_workers(c));
  dlps_optimizer bad = {.kind = "adagrad"};
  CHECK(dlps_init(c, 1, NULL, 4, &bad) == DLPS_INVALID_ARGUMENT && strstr(dlps_last_error(), "unknown optimizer 'adagrad'"), "a bad optimizer: %s",
        dlps_last_error());
  float w[4] = {1, 2, 3, 4};
  dlps_optimizer sgd = {.kind = "sgd", .learning_rate = 0.5f};
  int rc = dlps_init(c, 1, w, 4, &sgd);
  CHECK(rc == 0, "init: %s", dlps_last_error());
  const float grad[4] = {1, 1, 1, 1};
  rc = dlps_wait(c, dlps_pushpull(c, 1, grad, w, 4));
  CHECK(rc == 0, "pushpull: %s", dlps_last_error());
  /* rank 1 pushes 2s: w - 0.5 * (1 + 2) */
  const float want[4] = {-0.5f, 0.5f, 1.5f, 2.5f};
  for (int i = 0; i < 4; ++i) CHECK(w[i] == want[i], "w[%d] = %g, want %g", i, w[i], want[i]);
  rc = dlps_wait(c, dlps_pull(c, 99, w, 4));
  CHECK(rc == DLPS_INVALID_ARGUMENT && strstr(dlps_last_error(), "key 99 is not initialised"), "pull of an unknown key: %s", dlps_last_error());
  rc = dlps_barrier(c);
  CHECK(rc == 0, "barrier: %s", dlps_last_error());
  dlps_close(c);
  if (!failed) printf("c client: ok\n");
  return failed;
}
