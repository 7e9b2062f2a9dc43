// The checks a job spec's validation is made of, for the validators of the
// sections every job has (common/spec/job_spec.cc) and of each job kind's
// own sections (JobKind::ValidateSpec, kinds/<kind>/): every error an
// INVALID_ARGUMENT that names the field and the value.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lopt/v1/job.pb.h"

// Returns the status of `expr` when it is not OK.
#define LOPT_CHECK(expr)      \
  do {                        \
    absl::Status _s = (expr); \
    if (!_s.ok()) return _s;  \
  } while (0)

namespace lopt::spec {

absl::Status Invalid(std::string msg);

// Range checks that produce "field must be OP bound, got value".
absl::Status Positive(absl::string_view field, double v);               // > 0, finite
absl::Status NonNegative(absl::string_view field, double v);            // >= 0, finite
absl::Status InRange(absl::string_view field, double v, double lo, double hi);  // [lo, hi]
absl::Status OpenUnit(absl::string_view field, double v);               // (0, 1)

// A task's fields; `prefix` names the TaskSpec in errors: "task",
// "lhopt.tasks[2].task".
absl::Status ValidateTask(const v1::TaskSpec& t, absl::string_view prefix = "task");

}  // namespace lopt::spec
