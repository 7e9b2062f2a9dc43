#include "learner/job_core.h"

#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/error_kinds.h"
#include "common/util/files.h"

namespace lopt {

CoreVerdict RejectVerdict(std::string reason, absl::Status error) {
  CoreVerdict v;
  v.kind = CoreVerdict::kRejected;
  v.reason = std::move(reason);
  v.error = std::move(error);
  return v;
}

CoreVerdict PayloadUnusableVerdict(const absl::Status& s) {
  return RejectVerdict(s.code() == absl::StatusCode::kDataLoss ? "corrupt_payload" : "bad_payload",
                       absl::Status(s.code(), absl::StrCat("the result's payload is unusable: ", s.message())));
}

CoreVerdict RefusedByJobVerdict(const absl::Status& s) {
  return RejectVerdict(IsNonFiniteError(s) ? "non_finite" : "invalid", s);
}

absl::Status AppendRunFileRow(const std::string& dir, const RunFileRow& row) {
  const std::string path = dir + "/" + row.file;
  const bool fresh = !FileExists(path);
  std::ofstream out(path, std::ios::app);
  if (fresh) out << row.header;
  out << row.row;
  out.flush();  // followable while the job runs
  if (!out) return absl::InternalError(absl::StrCat("cannot append to ", path));
  return absl::OkStatus();
}

absl::Status WriteRunFile(const std::string& dir, const RunFileWrite& file) {
  const std::string path = dir + "/" + file.file;
  absl::Status s = MakeDirs(path.substr(0, path.rfind('/')));
  if (s.ok()) s = WriteFileAtomically(path, file.bytes);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat(file.file, ": ", s.message()));
  return absl::OkStatus();
}

std::string SnapshotFile(const JobCore& core, int64_t step) {
  const std::string trained = core.TrainedFileName(false);
  const size_t dot = trained.rfind('.');
  return absl::StrCat("snapshots/step_", absl::StrFormat("%06d", step),
                      dot == std::string::npos ? "" : trained.substr(dot));
}

absl::Status WriteSnapshotIfDue(const JobCore& core, const std::string& dir) {
  const int64_t every = core.SnapshotEvery(), step = core.Step();
  if (every <= 0 || step <= 0 || (step % every != 0 && step < core.Total())) return absl::OkStatus();
  const std::string path = dir + "/" + SnapshotFile(core, step);
  absl::Status s = MakeDirs(dir + "/snapshots");
  if (s.ok()) s = core.WriteTrainedFile(path);
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("snapshot ", path, ": ", s.message()));
  return absl::OkStatus();
}

}  // namespace lopt
