// A trained small_fc_lopt as a torch::optim::Optimizer: drop it into any
// LibTorch training loop in place of torch::optim::AdamW.
//
//   auto opt = lopt::LearnedOptimizer::FromFile(model->parameters(), "optimizer.lopt");
//   for (...) { opt->zero_grad(); loss.backward(); opt->step(); }
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/small_fc_lopt.h"

namespace lopt {

struct LearnedOptimizerOptions
    : public torch::optim::OptimizerCloneableOptions<LearnedOptimizerOptions> {
  // small_fc_lopt has no learning rate; get_lr/set_lr scale its step_mult so
  // that LibTorch's schedulers can still warm it up or decay it.
  double lr_scale = 1.0;
  double get_lr() const override { return lr_scale; }
  void set_lr(const double lr) override { lr_scale = lr; }
};

class LearnedOptimizer : public torch::optim::Optimizer {
 public:
  // `theta` is the flat [D] meta-parameter vector of `spec`.
  LearnedOptimizer(std::vector<torch::Tensor> params, const v1::LearnedOptimizerSpec& spec,
                   torch::Tensor theta);

  // Loads a `*.lopt` file written by `lopt train`.
  static absl::StatusOr<std::unique_ptr<LearnedOptimizer>> FromFile(
      std::vector<torch::Tensor> params, const std::string& path);

  // One step over every parameter that has a gradient. Parameters without a
  // gradient keep their value and their accumulators.
  torch::Tensor step(LossClosure closure = nullptr) override;

  int64_t iteration() const { return iteration_; }

  // The run's length in steps, for the file's step-multiplier schedule
  // (LearnedOptimizerSpec.warmup_fraction / step_mult_schedule; its weight
  // decay applies whatever the length). 0 (default): no schedule.
  void set_total_steps(int64_t steps) { total_steps_ = steps; }
  // muP (a MUP optimizer on a muP model): one factor per parameter, in
  // parameter order, by which its update is multiplied: 1 / width multiplier
  // for hidden matrices, 1 elsewhere (as mup's MuAdam). Empty: all 1.
  void set_update_scales(std::vector<double> scales) { update_scales_ = std::move(scales); }

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  SmallFcLopt lopt_;
  torch::Tensor theta_;
  torch::Tensor theta_here_;  // theta_ on the parameters' device and dtype (a cache)
  std::vector<LoptTensorState> states_;  // one per parameter, in param order
  int64_t iteration_ = 0;
  int64_t total_steps_ = 0;
  std::vector<double> update_scales_;
};

}  // namespace lopt
