// ELO's sections of a job spec (pes, elo, outer and lopt's match with the
// tasks' parameterization): their validation, ELO's JobKind::ValidateSpec.
// Without LibTorch, so that the fuzz target (tests/fuzz) links it.
#pragma once

#include "common/spec/job_spec.h"  // JobUse, JobSpec, absl::Status

namespace lopt {

// INVALID_ARGUMENT naming the first offending field of ELO's sections, e.g.
// "pes.truncation_length must be > 0, got -3". REQUIRES: the shared sections
// are valid (ValidateSharedSections).
absl::Status ValidateEloSpec(const v1::JobSpec& job, JobUse use);

}  // namespace lopt
