// Local mode for LHOPT jobs: the LhoptJob learner core and an in-process
// LhoptEpisodeRunner with an in-memory buffer, wired in one process with
// checkpoints it resumes from; and the schedule and evaluation outputs of
// `lopt schedule` and `lopt eval --schedule/--controller`.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "cli/local_mode.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/optimizer_file.pb.h"
#include "worker/lhopt_episode.h"
#include "worker/lhopt_eval.h"

namespace lopt {

struct LhoptTrainSummary {
  int64_t iterations = 0;     // completed, including before a resume
  int64_t resumed_from = 0;   // iteration the run resumed from (0: fresh)
  double reward_start = 0;    // mean episode reward over the first min(5, n) iterations
  double reward_end = 0;      // ... and over the last min(5, n)
  double wall_seconds = 0;
  double inner_particle_steps_per_second = 0;
  std::string controller_path;
};

// Runs (or resumes) an LHOPT job in options.out_dir: checkpoint.pt,
// metrics.csv, rewards.png (gnuplot), controller.lhopt, summary.json.
// options.stop_after counts iterations.
absl::StatusOr<LhoptTrainSummary> RunLocalLhoptTraining(const v1::JobSpec& job,
                                                        const LocalTrainOptions& options);

// schedule.json, schedule.csv and (with gnuplot) schedule.png into `dir`.
absl::Status WriteScheduleOutputs(const v1::LhoptSchedule& schedule, const std::string& dir);

// report.json, curves.csv, table.txt and (with gnuplot) curves.png into
// `dir`; returns the table.
absl::StatusOr<std::string> WriteHparamEvalReport(const HparamEvalReport& report,
                                                  const std::string& dir);

}  // namespace lopt
