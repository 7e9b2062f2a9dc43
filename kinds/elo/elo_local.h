// ELO's local mode (JobKind::TrainLocal of kinds/elo): meta-training in
// one process, with checkpoints it resumes from.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kinds/local_train.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

struct TrainSummary {
  int64_t outer_steps = 0;          // completed, including before a resume
  int64_t total_steps = 0;          // the job's budget
  int64_t resumed_from = 0;         // outer step the run resumed from (0: fresh)
  int64_t outer_steps_this_run = 0; // outer_steps - resumed_from
  double meta_loss_start = 0;       // mean over the first min(10, T) outer steps
  double meta_loss_end = 0;         // mean over the last min(10, T) outer steps
  double task_loss_start = 0;
  double task_loss_end = 0;
  double particle_steps_per_second = 0;
  double wall_seconds = 0;          // this run's
  double total_wall_seconds = 0;    // every run's of this job (checkpointed)
  std::string optimizer_path;
  std::string checkpoint_path;
  bool stopped_early = false;       // options.stop ended it before the budget
  // Behaviour cloning's alpha at the last step (1 without BC): below 1 the
  // optimizer was trained on updates partly Adam's.
  double alpha = 1;
};

// Runs (or resumes) meta-training of `job` in `options.out_dir`: writes
// job.textproto, metrics.csv (cut back to the checkpoint on a resume),
// training.png (gnuplot), checkpoint.pt, optimizer.lopt and summary.json;
// the replay buffer is options.open_buffer's (in memory without one).
absl::StatusOr<TrainSummary> RunEloLocalTraining(const v1::JobSpec& job,
                                                 const LocalTrainOptions& options);

}  // namespace lopt
