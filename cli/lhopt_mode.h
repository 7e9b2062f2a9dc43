// The schedule and evaluation outputs of `lopt schedule` and `lopt eval
// --schedule/--controller`. (LHOPT's local mode is every kind's:
// kinds/local_driver.h.)
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_eval.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {

// schedule.json, schedule.csv and (with gnuplot) schedule.png into `dir`.
absl::Status WriteScheduleOutputs(const v1::LhoptSchedule& schedule, const std::string& dir);

// report.json, curves.csv, table.txt and (with gnuplot) curves.png into
// `dir`; returns the table.
absl::StatusOr<std::string> WriteHparamEvalReport(const HparamEvalReport& report,
                                                  const std::string& dir);

}  // namespace lopt
