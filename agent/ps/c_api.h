/* The dlps client for C (and any language with a C FFI): libdlps.so, over the C++ client (client.h), whose
 * rules hold here too: see docs/ps.md.
 *
 *   char err[512];
 *   dlps_client* c = dlps_connect_env(err, sizeof err);        // DLPS_SERVERS, DLPS_RANK, DLPS_NUM_WORKERS
 *   if (!c) { fprintf(stderr, "%s\n", err); exit(1); }
 *   dlps_optimizer sgd = {.kind = "sgd", .learning_rate = 0.1f, .momentum = 0.9f};
 *   if (dlps_init(c, 7, weights, n, &sgd) != 0) fprintf(stderr, "%s\n", dlps_last_error());
 *   dlps_ticket t = dlps_pushpull(c, 7, grad, weights, n);  // grad and weights untouched until dlps_wait
 *   if (dlps_wait(c, t) != 0) ...
 *   dlps_close(c);                                            // after the job's last dlps_barrier
 *
 * Functions that return int return 0 on success, else a status code (the values of dlps_code below), and
 * then dlps_last_error() is the message, naming the server and what failed; it belongs to the calling
 * thread and stays until that thread's next failing call. A ticket of a call that could not start is still
 * valid: dlps_wait returns its error.
 *
 * Buffers: dlps_push copies the gradient; dlps_push_nocopy and dlps_pushpull send from the caller's memory,
 * which must stay alive and unchanged until dlps_wait returns; dlps_pull and dlps_pushpull write into `out`,
 * which must stay alive until dlps_wait returns and must not be read before.
 *
 * Thread safety: as PsClient: calls on one client may come from several threads, for different keys. */
#ifndef DLAGENT_PS_C_API_H_
#define DLAGENT_PS_C_API_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlps_client dlps_client;
typedef uint64_t dlps_ticket;

enum dlps_code {
  DLPS_OK = 0,
  DLPS_INVALID_ARGUMENT = 1,
  DLPS_NOT_FOUND = 2,
  DLPS_ALREADY_EXISTS = 3,
  DLPS_PERMISSION_DENIED = 4,
  DLPS_FAILED_PRECONDITION = 5, /* e.g. a round refused, a checkpoint refused, a job that lost a worker */
  DLPS_UNAVAILABLE = 6,         /* a server is gone */
  DLPS_DEADLINE_EXCEEDED = 7,
  DLPS_RESOURCE_EXHAUSTED = 8,
  DLPS_CANCELLED = 9,
  DLPS_IO_ERROR = 10,
  DLPS_INTERNAL = 11,
};

/* A zero field takes the default (kind "sum", learning_rate 0.01, beta1 0.9, beta2 0.999, epsilon 1e-8,
 * rescale 1); ranges are checked by dlps_init. */
typedef struct dlps_optimizer {
  const char* kind; /* "sgd", "adam" or "sum" */
  float learning_rate, momentum, weight_decay, beta1, beta2, epsilon, rescale;
} dlps_optimizer;

/* NULL on failure, with the reason in err (when not NULL; err_len bytes, always terminated). */
dlps_client* dlps_connect_env(char* err, size_t err_len);
/* servers: "host:port,host:port,...", the same list in the same order on every worker. */
dlps_client* dlps_connect(const char* servers, uint32_t rank, uint32_t num_workers, char* err, size_t err_len);

/* dlps_connect_with's options. servers NULL: the job from the DLPS_* environment, as dlps_connect_env (rank and
 * num_workers are then ignored). A time above zero replaces the default or DLPS_DEADLINE / DLPS_CONNECT_TIMEOUT
 * (120 s a message, 30 s of retrying a refused server). The job's credentials always come from DLPS_JOB and
 * DLPS_TOKEN. */
typedef struct dlps_connect_options {
  const char* servers;
  uint32_t rank, num_workers;
  double deadline_seconds, connect_timeout_seconds;
} dlps_connect_options;
dlps_client* dlps_connect_with(const dlps_connect_options* options, char* err, size_t err_len);
/* Waits for what is in flight (each message has a deadline), then closes. NULL is ignored. */
void dlps_close(dlps_client* c);

uint32_t dlps_rank(const dlps_client* c);
uint32_t dlps_num_workers(const dlps_client* c);

/* Collective: every worker calls it with the same length and optimizer; rank 0's initial values (NULL:
 * zeros) become the weights. */
int dlps_init(dlps_client* c, uint64_t key, const float* initial, uint64_t length, const dlps_optimizer* optimizer);
dlps_ticket dlps_push(dlps_client* c, uint64_t key, const float* grad, uint64_t length);
dlps_ticket dlps_push_nocopy(dlps_client* c, uint64_t key, const float* grad, uint64_t length);
dlps_ticket dlps_pull(dlps_client* c, uint64_t key, float* out, uint64_t length);
dlps_ticket dlps_pushpull(dlps_client* c, uint64_t key, const float* grad, float* out, uint64_t length);
int dlps_wait(dlps_client* c, dlps_ticket ticket);
int dlps_barrier(dlps_client* c);
int dlps_checkpoint(dlps_client* c, const char* name);
int dlps_restore(dlps_client* c, const char* name);

/* Reports training metrics to this node's agent (docs/jobs.md, "Training metrics"): the step and n named
   scalars (names [a-zA-Z_][a-zA-Z0-9_]*). Never blocks; needs no client. 1 when sent, 0 when not (outside an
   agentctl job, or the agent cannot take it now). */
int dlps_report(uint64_t step, const char* const* names, const double* values, size_t n);

const char* dlps_last_error(void);
/* The code of the calling thread's last failure (a dlps_code): the one way to get it for a failed connect. */
int dlps_last_code(void);
/* The name of a dlps_code ("unavailable", "deadline exceeded", ...). */
const char* dlps_code_name(int code);

#ifdef __cplusplus
}
#endif

#endif /* DLAGENT_PS_C_API_H_ */
