// The learner side of ELO meta-training: holds theta, applies the averaged
// PES estimates through the outer optimiser, schedules ELO's alpha_t and
// checkpoints itself.
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "absl/status/status.h"
#include "common/elo/replay_buffer.h"
#include "common/elo/small_fc_lopt.h"
#include "learner/outer_optimizer.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {

class EloLearner {
 public:
  explicit EloLearner(const v1::JobSpec& job);

  const v1::JobSpec& job() const { return job_; }
  const torch::Tensor& theta() const { return theta_; }
  int64_t outer_step() const { return outer_step_; }
  int64_t total_steps() const { return job_.budget().outer_steps(); }
  bool done() const { return outer_step_ >= total_steps(); }

  // ELO's behaviour-cloning weight alpha_t = t / (T - 1), or 1 without BC.
  double Alpha() const;
  double AlphaAt(int64_t step) const;

  // The outer optimiser's learning rate at outer step `step`.
  double OuterLrAt(int64_t step) const { return outer_.LrAt(step); }

  // Applies one outer step from the mean of the workers' estimates.
  void ApplyGradient(const torch::Tensor& grad, double meta_loss);

  double first_meta_loss() const { return first_meta_loss_; }
  double last_meta_loss() const { return last_meta_loss_; }

  // The trained optimizer file's contents (options + provenance).
  v1::OptimizerFile MakeOptimizerFile() const;

  NamedTensors SaveState() const;
  absl::Status LoadState(const NamedTensors& state);

 private:
  v1::JobSpec job_;
  SmallFcLopt lopt_;
  torch::Tensor theta_;
  OuterOptimizer outer_;
  int64_t outer_step_ = 0;
  double first_meta_loss_ = NAN;
  double last_meta_loss_ = NAN;
};

}  // namespace lopt
