// Status propagation helpers for absl::Status / absl::StatusOr.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FLUTE_CONCAT_INNER(a, b) a##b
#define FLUTE_CONCAT(a, b) FLUTE_CONCAT_INNER(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                    \
  do {                                           \
    ::absl::Status flute_status_ = (expr);       \
    if (!flute_status_.ok()) return flute_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` — unwraps a StatusOr or returns its status.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(FLUTE_CONCAT(flute_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
