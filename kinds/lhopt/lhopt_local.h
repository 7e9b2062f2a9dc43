// LHOPT's local mode (JobKind::TrainLocal of kinds/lhopt): PPO training in
// one process, with checkpoints it resumes from.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kinds/local_train.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

struct LhoptTrainSummary {
  int64_t iterations = 0;            // completed, including before a resume
  int64_t total_iterations = 0;      // the job's budget (lhopt.iterations)
  int64_t resumed_from = 0;          // iteration the run resumed from (0: fresh)
  int64_t iterations_this_run = 0;   // iterations - resumed_from
  double reward_start = 0;    // mean episode reward over the first min(5, n) iterations
  double reward_end = 0;      // ... and over the last min(5, n)
  double wall_seconds = 0;           // this run's
  double total_wall_seconds = 0;     // every run's of this job (checkpointed)
  double inner_particle_steps_per_second = 0;
  std::string controller_path;
  std::string checkpoint_path;
  bool stopped_early = false;        // options.stop ended it before the budget
};

// Runs (or resumes) an LHOPT job in options.out_dir: job.textproto,
// checkpoint.pt, metrics.csv (cut back to the checkpoint on a resume, wall_s
// cumulative over resumes), rewards.png (gnuplot), controller.lhopt,
// summary.json. options.stop_after counts iterations; options.stop ends the
// run after the PPO iteration under way, with a checkpoint and the
// controller of that iteration.
absl::StatusOr<LhoptTrainSummary> RunLocalLhoptTraining(const v1::JobSpec& job,
                                                        const LocalTrainOptions& options);

}  // namespace lopt
