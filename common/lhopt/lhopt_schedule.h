// LHOPT schedule transfer (REFERENCE.md section 4): the hyperparameter
// trajectory of a controller's run over normalised progress, saved as
// schedule.json (LhoptSchedule as proto JSON) and replayed as a fixed,
// piecewise-constant schedule: the values of the last point whose progress
// is <= the current progress.
//
//   auto s = lopt::LoadScheduleJson("schedule.json");
//   lopt::CiaoOptimizer opt(model->parameters());
//   for (int64_t t = 0; t < steps; ++t) {
//     opt.set_hyperparameters(lopt::ScheduleAt(*s, double(t) / steps));
//     ...
//   }
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/lhopt/ciao.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {

inline constexpr uint32_t kScheduleFormatVersion = 1;

// Checks that the points are non-empty, start at progress 0, ascend
// strictly, stay in [0, 1), and that every value is finite and positive
// (clip_fraction in (0, 1]). INVALID_ARGUMENT naming the point otherwise.
absl::Status ValidateSchedule(const v1::LhoptSchedule& s);

// The hyperparameters in force at `progress` (clamped into [0, 1]).
// REQUIRES: ValidateSchedule(s) is OK.
CiaoHyperparameters ScheduleAt(const v1::LhoptSchedule& s, double progress);

v1::LhoptSchedulePoint SchedulePoint(double progress, const CiaoHyperparameters& h);
CiaoHyperparameters PointHparams(const v1::LhoptSchedulePoint& p);

// JSON (protobuf's JSON mapping, field names as in the proto) and CSV
// ("progress,lr,one_minus_beta1,one_minus_beta2,eps,weight_decay,clip_fraction").
absl::Status SaveScheduleJson(const std::string& path, const v1::LhoptSchedule& s);
// Errors: NOT_FOUND, INVALID_ARGUMENT (not a schedule, or ValidateSchedule
// fails), FAILED_PRECONDITION (a newer format).
absl::StatusOr<v1::LhoptSchedule> LoadScheduleJson(const std::string& path);
std::string ScheduleCsv(const v1::LhoptSchedule& s);

}  // namespace lopt
