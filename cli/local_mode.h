// Local mode: the learner, one worker's unroller and an in-process replay
// buffer wired together in one process, with checkpoints it resumes from.
#pragma once

#include <cstdint>
#include <atomic>
#include <string>

#include "absl/status/statusor.h"
#include "common/elo/evaluation.h"
#include "common/elo/evaluation_report.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

struct LocalTrainOptions {
  std::string out_dir;        // checkpoint, optimizer.lopt, summary.json, metrics.csv
  bool progress = true;       // draw the progress bar on stderr
  bool fresh = false;         // ignore an existing checkpoint
  int64_t stop_after = -1;    // stop (with a checkpoint) after this many outer steps; -1: run to the end
  std::string device = "cpu"; // where the inner loops run: cpu, cuda, cuda:N
  // Set (e.g. by a SIGINT/SIGTERM handler): stop after the outer step under
  // way, checkpoint, and write optimizer.lopt and summary.json of what was
  // trained, so that a stopped run is usable and resumes where it stopped.
  const std::atomic<bool>* stop = nullptr;
};

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
// training.png (gnuplot), checkpoint.pt, optimizer.lopt and summary.json.
absl::StatusOr<TrainSummary> RunLocalTraining(const v1::JobSpec& job,
                                              const LocalTrainOptions& options);


}  // namespace lopt
