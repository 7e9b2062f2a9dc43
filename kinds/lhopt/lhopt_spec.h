// LHOPT's section of a job spec (lhopt): its validation, LHOPT's
// JobKind::ValidateSpec. Without LibTorch, so that the fuzz target
// (tests/fuzz) links it.
#pragma once

#include "common/spec/job_spec.h"  // JobUse, JobSpec, absl::Status

namespace lopt {

// INVALID_ARGUMENT naming the first offending field of the lhopt section
// (or elo.tasks, ELO's task distribution, set on an LHOPT job). REQUIRES:
// the shared sections are valid (ValidateSharedSections).
absl::Status ValidateLhoptSpec(const v1::JobSpec& job, JobUse use);

}  // namespace lopt
