// The meta-test's outputs (`lopt eval`, `lopt train`'s eval/, and the
// learner's jobs/<id>/eval/ once a job succeeds): report.json, curves.csv,
// test_curves.csv, curves.png and table.txt. Library lopt_reports, shared by
// lopt and lopt-learner.
#pragma once

#include <cstdint>
#include <string>

#include <functional>

#include "absl/status/statusor.h"
#include "common/elo/evaluation.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// Writes report.json, curves.csv (and test_curves.csv with report.test_every),
// curves.dat and (with gnuplot) curves.png into `dir`, and returns the
// comparison table as text. The plot shows each optimizer's mean over seeds
// with a band from the lowest to the highest seed, the test loss and
// accuracy beside the training loss when the report has them, and a line at
// `horizon` (the meta-training horizon in inner steps; 0: none).
absl::StatusOr<std::string> WriteMetaTestReport(const MetaTestReport& report,
                                                const std::string& dir, int64_t horizon = 0);

// `lopt eval`: trains fresh optimizees of `job`'s task with the optimizer of
// `optimizer_path`, with the untrained one (the theta its meta-training
// started from) and with AdamW over job.eval's grid, and writes the report
// into `out_dir` (WriteMetaTestReport, the horizon from the optimizer's job).
// steps/seeds <= 0 take the job's; `lopt_options` (text, may be empty) adds
// the trained optimizer with those options as "lopt_scheduled".
// `progress(done, total)` may throw to abandon the meta-test.
struct MetaTestOptions {
  int64_t steps = 0;
  int64_t seeds = 0;
  std::string device = "cpu";
  std::string lopt_options;
  std::function<void(int64_t, int64_t)> progress;
};
absl::StatusOr<std::string> RunAndWriteMetaTest(const v1::JobSpec& job,
                                                const std::string& optimizer_path,
                                                const std::string& out_dir,
                                                const MetaTestOptions& options);

}  // namespace lopt
