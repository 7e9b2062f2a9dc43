#include "kinds/job_door.h"

#include "common/util/files.h"
#include "kinds/job_kind.h"

namespace lopt {
namespace {

// The check of the sections of the kind `kinds` finds for the job.
KindSpecCheck KindCheckOf(const JobKindRegistry& kinds) {
  return [&kinds](const v1::JobSpec& job, JobUse use) -> absl::Status {
    absl::StatusOr<const JobKind*> kind = kinds.KindOf(job);
    if (!kind.ok()) return kind.status();
    return (*kind)->ValidateSpec(job, use);
  };
}

}  // namespace

absl::Status ValidateJob(const v1::JobSpec& job, JobUse use, const JobKindRegistry& kinds) {
  return ValidateJobWith(job, use, KindCheckOf(kinds));
}

absl::Status ValidateJob(const v1::JobSpec& job, JobUse use) {
  return ValidateJob(job, use, JobKinds());
}

absl::StatusOr<v1::JobSpec> JobFromText(absl::string_view text, absl::string_view source_name,
                                        JobUse use) {
  return JobFromTextWith(text, source_name, use, KindCheckOf(JobKinds()));
}

absl::StatusOr<v1::JobSpec> LoadJobFile(const std::string& path, JobUse use) {
  auto text = ReadFile(path, "job file");
  if (!text.ok()) return text.status();
  return JobFromText(*text, path, use);
}

}  // namespace lopt
