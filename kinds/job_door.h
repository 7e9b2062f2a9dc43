// The door every job comes in by: `lopt validate`, `lopt train` and the
// other commands' job files, the learner's SubmitJob, the worker's check of
// a unit's job, the Python extension and the tests all validate here, once,
// with the same INVALID_ARGUMENT messages. A job's sections every job has
// are checked in common/ (ValidateSharedSections), then its kind's own by
// the kind (JobKind::ValidateSpec) that the registry (JobKinds(),
// kinds/registry.cc) finds for it, then its unit's size.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/spec/job_spec.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

class JobKindRegistry;

// Checks every field's range and the fields' consistency. Returns
// INVALID_ARGUMENT naming the first offending field, e.g.
// "pes.truncation_length must be > 0, got -3", or the registry's refusal of
// a spec no kind owns. kMetaTest skips the meta-training unit's size (see
// JobUse).
absl::Status ValidateJob(const v1::JobSpec& job, JobUse use = JobUse::kMetaTrain);
// The same with `kinds` in place of JobKinds().
absl::Status ValidateJob(const v1::JobSpec& job, JobUse use, const JobKindRegistry& kinds);

// Parse + FillJobDefaults + ValidateJob, errors prefixed with
// "<source_name>: ".
absl::StatusOr<v1::JobSpec> JobFromText(absl::string_view text, absl::string_view source_name,
                                        JobUse use = JobUse::kMetaTrain);

// Reads the file and calls JobFromText with its path as the source.
absl::StatusOr<v1::JobSpec> LoadJobFile(const std::string& path, JobUse use = JobUse::kMetaTrain);

}  // namespace lopt
