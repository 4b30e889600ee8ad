#pragma once
// Status and Result<T>: error values without exceptions.
//
// Thread safety: values; a const Status may be read from many threads.
// A successful Status holds no allocation (ok() is a null-pointer check). An error carries a code, the
// component that failed ("imds", "config") and a message that says what to do.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace dlagent {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad input: config, flags, a malformed packet. Not retryable.
  kNotFound,         // a file, key or queue that does not exist.
  kAlreadyExists,
  kPermissionDenied,
  kFailedPrecondition,  // the system is not in a state where this can work (e.g. not root).
  kUnavailable,         // transient: retry with backoff.
  kDeadlineExceeded,    // a deadline passed; retryable where the caller still has budget.
  kResourceExhausted,   // throttled or over a size limit.
  kCancelled,
  kIoError,   // a system call failed.
  kInternal,  // a bug.
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string_view component, std::string_view message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string_view c, std::string_view m) { return {StatusCode::kInvalidArgument, c, m}; }
  static Status NotFound(std::string_view c, std::string_view m) { return {StatusCode::kNotFound, c, m}; }
  static Status AlreadyExists(std::string_view c, std::string_view m) { return {StatusCode::kAlreadyExists, c, m}; }
  static Status PermissionDenied(std::string_view c, std::string_view m) { return {StatusCode::kPermissionDenied, c, m}; }
  static Status FailedPrecondition(std::string_view c, std::string_view m) { return {StatusCode::kFailedPrecondition, c, m}; }
  static Status Unavailable(std::string_view c, std::string_view m) { return {StatusCode::kUnavailable, c, m}; }
  static Status DeadlineExceeded(std::string_view c, std::string_view m) { return {StatusCode::kDeadlineExceeded, c, m}; }
  static Status ResourceExhausted(std::string_view c, std::string_view m) { return {StatusCode::kResourceExhausted, c, m}; }
  static Status Cancelled(std::string_view c, std::string_view m) { return {StatusCode::kCancelled, c, m}; }
  static Status IoError(std::string_view c, std::string_view m) { return {StatusCode::kIoError, c, m}; }
  static Status Internal(std::string_view c, std::string_view m) { return {StatusCode::kInternal, c, m}; }
  // An IoError from errno: "<component>: <what>: <strerror(err)>".
  static Status FromErrno(std::string_view component, std::string_view what, int err);

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }
  // Unavailable, DeadlineExceeded and ResourceExhausted: worth another attempt after a backoff.
  bool retryable() const;
  std::string_view component() const { return rep_ ? std::string_view(rep_->component) : std::string_view(); }
  std::string_view message() const { return rep_ ? std::string_view(rep_->message) : std::string_view(); }
  // "component: message", or "ok".
  std::string ToString() const;
  // The same error with more context in front of the message: "<context>: <message>".
  Status Annotate(std::string_view context) const;

 private:
  struct Rep {
    StatusCode code;
    std::string component;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

// A value or an error. REQUIRES: value() only when ok().
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status::Internal("result", "Result built from an OK status without a value");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace dlagent

#define DLAGENT_CONCAT_INNER(a, b) a##b
#define DLAGENT_CONCAT(a, b) DLAGENT_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)       \
  do {                              \
    ::dlagent::Status _st = (expr); \
    if (!_st.ok()) return _st;      \
  } while (0)

// ASSIGN_OR_RETURN(auto x, Compute());
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(DLAGENT_CONCAT(_res_, __LINE__), lhs, expr)
// tmp is a name and lhs a declaration: neither can be parenthesized.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
