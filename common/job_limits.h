// Limits a job spec must keep so that one job cannot take down the cluster:
// its strings are valid UTF-8 (they travel in proto3 replies to every
// client). ValidateJob (common/job_spec.h) applies them.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// The longest job name, in bytes.
inline constexpr size_t kMaxJobNameBytes = 256;

// INVALID_ARGUMENT naming the field ("lhopt.tasks[1].task.byte_lm.data_path
// is not valid UTF-8 (byte 0xff at offset 3)") unless every string of `job`
// is valid UTF-8; also caps name at kMaxJobNameBytes.
absl::Status ValidateJobStrings(const v1::JobSpec& job);

}  // namespace lopt
