#include "agent/ps/c_api.h"

#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "agent/ps/client.h"
#include "agent/ps/report.h"

#define DLPS_EXPORT __attribute__((visibility("default")))

using dlagent::Status;
using dlagent::ps::PsClient;
using dlagent::ps::PsClientOptions;

struct dlps_client {
  std::unique_ptr<PsClient> client;
};

namespace {

static_assert(DLPS_INVALID_ARGUMENT == static_cast<int>(dlagent::StatusCode::kInvalidArgument) &&
                  DLPS_FAILED_PRECONDITION == static_cast<int>(dlagent::StatusCode::kFailedPrecondition) &&
                  DLPS_UNAVAILABLE == static_cast<int>(dlagent::StatusCode::kUnavailable) &&
                  DLPS_DEADLINE_EXCEEDED == static_cast<int>(dlagent::StatusCode::kDeadlineExceeded) &&
                  DLPS_INTERNAL == static_cast<int>(dlagent::StatusCode::kInternal),
              "dlps_code mirrors StatusCode");

thread_local std::string last_error;
thread_local int last_code = DLPS_OK;

int Fail(const Status& st) {
  if (st.ok()) return DLPS_OK;
  last_error = st.ToString();
  last_code = static_cast<int>(st.code());
  return last_code;
}

void CopyError(const Status& st, char* err, size_t err_len) {
  Fail(st);
  if (err && err_len > 0) {
    std::strncpy(err, last_error.c_str(), err_len - 1);
    err[err_len - 1] = '\0';
  }
}

dlps_client* Open(dlagent::Result<PsClientOptions> options, char* err, size_t err_len) {
  if (!options.ok()) {
    CopyError(options.status(), err, err_len);
    return nullptr;
  }
  auto c = PsClient::Connect(*options);
  if (!c.ok()) {
    CopyError(c.status(), err, err_len);
    return nullptr;
  }
  return new dlps_client{std::move(*c)};
}

}  // namespace

extern "C" {

DLPS_EXPORT dlps_client* dlps_connect_env(char* err, size_t err_len) { return Open(PsClientOptions::FromEnv(), err, err_len); }

DLPS_EXPORT dlps_client* dlps_connect(const char* servers, uint32_t rank, uint32_t num_workers, char* err, size_t err_len) {
  const dlps_connect_options o{servers ? servers : "", rank, num_workers, 0, 0};
  return dlps_connect_with(&o, err, err_len);
}

DLPS_EXPORT dlps_client* dlps_connect_with(const dlps_connect_options* options, char* err, size_t err_len) {
  if (!options) return Open(Status::InvalidArgument("dlps-client", "no options given"), err, err_len);
  dlagent::Result<PsClientOptions> o = PsClientOptions::FromEnv();
  if (options->servers) {  // the environment's times and credentials, not its job
    o = PsClientOptions();
    if (dlagent::Status st = o->ReadJobEnv(); !st.ok()) return Open(st, err, err_len);
    std::stringstream ss(options->servers);
    for (std::string s; std::getline(ss, s, ',');) o->servers.push_back(s);
    o->rank = options->rank;
    o->num_workers = options->num_workers;
  }
  if (!o.ok()) return Open(o, err, err_len);
  for (auto [seconds, field] :
       {std::pair{options->deadline_seconds, &o->deadline}, std::pair{options->connect_timeout_seconds, &o->connect_timeout}}) {
    if (!(seconds >= 0 && seconds <= 86400))
      return Open(Status::InvalidArgument("dlps-client", "a deadline or timeout must be 0 to 86400 seconds"), err, err_len);
    if (seconds > 0) *field = std::chrono::milliseconds(std::llround(seconds * 1000));
  }
  return Open(o, err, err_len);
}

DLPS_EXPORT void dlps_close(dlps_client* c) { delete c; }

DLPS_EXPORT uint32_t dlps_rank(const dlps_client* c) { return c->client->options().rank; }
DLPS_EXPORT uint32_t dlps_num_workers(const dlps_client* c) { return c->client->options().num_workers; }

DLPS_EXPORT int dlps_init(dlps_client* c, uint64_t key, const float* initial, uint64_t length, const dlps_optimizer* optimizer) {
  dlagent::ps::OptimizerSpec p;
  if (optimizer) {
    p = {optimizer->kind ? optimizer->kind : "",
         optimizer->learning_rate,
         optimizer->momentum,
         optimizer->weight_decay,
         optimizer->beta1,
         optimizer->beta2,
         optimizer->epsilon,
         optimizer->rescale};
  }
  auto config = dlagent::ps::ResolveOptimizer(p);
  if (!config.ok()) return Fail(config.status());
  return Fail(c->client->Init(key, length, initial, *config));
}

DLPS_EXPORT dlps_ticket dlps_push(dlps_client* c, uint64_t key, const float* grad, uint64_t length) { return c->client->Push(key, grad, length); }
DLPS_EXPORT dlps_ticket dlps_push_nocopy(dlps_client* c, uint64_t key, const float* grad, uint64_t length) {
  return c->client->PushNoCopy(key, grad, length);
}
DLPS_EXPORT dlps_ticket dlps_pull(dlps_client* c, uint64_t key, float* out, uint64_t length) { return c->client->Pull(key, out, length); }
DLPS_EXPORT dlps_ticket dlps_pushpull(dlps_client* c, uint64_t key, const float* grad, float* out, uint64_t length) {
  return c->client->PushPull(key, grad, out, length);
}
DLPS_EXPORT int dlps_wait(dlps_client* c, dlps_ticket ticket) { return Fail(c->client->Wait(ticket)); }
DLPS_EXPORT int dlps_barrier(dlps_client* c) { return Fail(c->client->Barrier()); }
DLPS_EXPORT int dlps_checkpoint(dlps_client* c, const char* name) { return Fail(c->client->Checkpoint(name ? name : "")); }
DLPS_EXPORT int dlps_restore(dlps_client* c, const char* name) { return Fail(c->client->Restore(name ? name : "")); }
DLPS_EXPORT int dlps_report(uint64_t step, const char* const* names, const double* values, size_t n) {
  static const dlagent::ps::TrainingReporter reporter;
  std::vector<std::pair<std::string_view, double>> pairs;
  for (size_t i = 0; i < n && names != nullptr && values != nullptr; ++i) {
    if (names[i] != nullptr) pairs.emplace_back(names[i], values[i]);
  }
  return reporter.Report(step, pairs) ? 1 : 0;
}
DLPS_EXPORT const char* dlps_last_error(void) { return last_error.c_str(); }
DLPS_EXPORT int dlps_last_code(void) { return last_code; }
DLPS_EXPORT const char* dlps_code_name(int code) {
  if (code < DLPS_OK || code > DLPS_INTERNAL) return "unknown";
  return dlagent::StatusCodeName(static_cast<dlagent::StatusCode>(code)).data();  // static strings
}

}  // extern "C"
