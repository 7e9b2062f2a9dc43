// The meta-test's outputs (`lopt eval`, `lopt train`'s eval/, and a worker's
// ELO_META_TEST unit, whose files the learner writes into jobs/<id>/eval/):
// report.json, curves.csv, test_curves.csv, curves.png and table.txt.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <functional>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/elo/evaluation.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/replay_buffer.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/work_service.pb.h"

namespace lopt {

// Writes report.json, curves.csv (and test_curves.csv with report.test_every),
// curves.dat and (with gnuplot) curves.png into `dir`, and returns the
// comparison table as text. The plot shows each optimizer's mean over seeds
// with a band from the lowest to the highest seed, the test loss and
// accuracy beside the training loss when the report has them, and a line at
// `horizon` (the meta-training horizon in inner steps; 0: none).
absl::StatusOr<std::string> WriteMetaTestReport(const MetaTestReport& report,
                                                const std::string& dir, int64_t horizon = 0);

// Runs of one arm whose training loss climbed back, which the mean over seeds
// hides until it is large: a run that did not diverge, whose curve (the
// report's record_every windows) fell to `factor` times below its first
// window, and whose final train loss is above `factor` times that lowest. The table of WriteMetaTestReport names such arms,
// with the step of the lowest window (the median over those runs): a learned
// optimizer unstable past its meta-training horizon shows there.
struct ClimbBack {
  int climbed = 0;           // runs that climbed back
  int64_t lowest_step = 0;   // median over them of the step their curve was lowest
};
ClimbBack ClimbedBack(const std::vector<const MetaTestRun*>& runs, int64_t record_every,
                      double factor = 1.5);

// The task and config of a meta-test of `job` (its eval section: the AdamW
// grid, record and test periods) with `steps` and `seeds` (<= 0: the job's)
// on `device`, its optimizees seeded job seed + `seed_offset`.
struct MetaTestSetup {
  std::unique_ptr<Task> task;
  MetaTestConfig config;
};
absl::StatusOr<MetaTestSetup> MakeMetaTestSetup(const v1::JobSpec& job, int64_t steps, int64_t seeds,
                                                const std::string& device, uint64_t seed_offset);

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

// What RunAndWriteMetaTest wrote: the table, and how many optimizee
// trainings ran and diverged.
struct MetaTestOutcome {
  std::string table;
  int64_t runs = 0;
  int64_t diverged = 0;
};
// RunAndWriteMetaTest with the trained optimizer in memory: what a worker
// runs for an ELO_META_TEST unit, with the optimizer it builds from the
// unit's job and theta (the file `optimizer_path` would hold).
absl::StatusOr<MetaTestOutcome> RunAndWriteMetaTest(const v1::JobSpec& job,
                                                    const TrainedOptimizer& trained,
                                                    const std::string& out_dir,
                                                    const MetaTestOptions& options);

// An ELO_META_TEST result on the wire (work_service.proto). The files of
// the report that a run directory's eval/ keeps, in this order: those a
// result may carry. curves.png is there only where gnuplot drew it, and
// test_curves.csv only with eval.test_every > 0; the .dat and .gp files are
// gnuplot's input and stay where they were written.
inline constexpr const char* kMetaTestFiles[] = {"report.json", "table.txt", "curves.csv",
                                                 "test_curves.csv", "curves.png"};
// The payload name of a file of the report: "file/<name>".
std::string MetaTestFileTensorName(const std::string& name);

// The worker's side: the kMetaTestFiles that RunAndWriteMetaTest wrote into
// `dir`, as "file/<name>" tensors (uint8) named in info->files in that
// order. table.txt names the files as the job's directory holds them
// ("wrote eval/report.json, ...") instead of `dir`, a directory of the
// worker's. Errors: those of reading a file.
absl::Status EncodeMetaTestFiles(const std::string& dir, v1::MetaTestResultInfo* info,
                                 NamedTensors* tensors);

// The learner's side: the files of a result for a meta-test of `job`
// (job.eval's steps), as (name, bytes) in info.files's order. INVALID_ARGUMENT
// naming what is wrong: a name that is not one of kMetaTestFiles or comes
// twice, a file without its tensor or a tensor no file names, a tensor that
// is not a uint8 vector, report.json, table.txt or curves.csv missing (and
// test_curves.csv where job.eval.test_every > 0), or a report.json that is
// not a meta-test report of `job`'s budget (JSON with a task, its steps,
// and info.runs runs).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> DecodeMetaTestFiles(
    const v1::MetaTestResultInfo& info, const NamedTensors& tensors, const v1::JobSpec& job);

}  // namespace lopt
