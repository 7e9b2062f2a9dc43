// Evaluation of LHOPT controllers and schedules (`lopt eval --controller`,
// `lopt eval --schedule`, `lopt schedule`): fresh optimizees of one task
// trained for the same budget with
//   * each controller acting greedily (from CIAO's default hyperparameters),
//   * a fixed schedule replayed with CIAO: as recorded ("schedule", absolute
//     values), and "schedule_peak" over the AdamW grid: the schedule's lr
//     divided by its peak, times the grid lr, the other hyperparameters as
//     recorded. A recorded lr is tuned to the task it was recorded on (and
//     CIAO's weight decay acts through the lr); the shape over progress is
//     what transfers, and its peak is chosen per task by the same grid as
//     AdamW's lr and cosine decay's peak, so that the three shapes get the
//     same tuning budget,
//   * CIAO at its default hyperparameters, constant,
//   * AdamW over a learning-rate grid, constant and with cosine decay to 0,
// on the same initial weights and data order per seed. The fixed-schedule
// arms (every grid point x seed) train at once as particles of one run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/lhopt/ciao.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_features.h"
#include "common/lhopt/lhopt_policy.h"
#include "common/tasks/task.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {

struct HparamEvalConfig {
  int64_t steps = 1000;
  int64_t seeds = 3;
  int64_t record_every = 10;
  uint64_t seed = 0;  // the optimizees' task seed
  std::vector<float> adamw_lrs;
  double adamw_weight_decay = 1e-4;
  int64_t controller_decisions = 32;
};

struct NamedController {
  std::string name;  // "controller", "controller_untrained", ...
  LhoptPolicyImpl* policy = nullptr;
  const EwmaNormalizer* normalizer = nullptr;
};

struct HparamEvalArm {
  // "controller", "schedule", "schedule_peak", "ciao_default", "adamw", "adamw_cosine"
  std::string name;
  double lr = 0;       // the grid's (peak) learning rate; 0 for arms without a grid
  torch::Tensor final_train_loss;  // [seeds] mean over the last 10% of the steps
  torch::Tensor test_loss;         // [seeds]
  torch::Tensor test_accuracy;     // [seeds]
  torch::Tensor test_hit_rate;     // [seeds] HR@10, NDCG@10: ranking families only
  torch::Tensor test_ndcg;         // (undefined for the others)
  torch::Tensor test_cer;          // [seeds] CER: transcription families only
  torch::Tensor train_curve;       // [W, seeds] mean train loss per record window
};

struct HparamEvalReport {
  std::string task;
  int64_t steps = 0;
  int64_t record_every = 0;
  std::vector<HparamEvalArm> arms;
};

// The hyperparameters of AdamW as CIAO runs them: 1 - beta1 0.1, 1 - beta2
// 0.001, eps 1e-8, no gradient clipping: CIAO's update is then exactly
// torch.optim.AdamW's (decoupled weight decay, exact bias corrections).
CiaoHyperparameters AdamwAsCiao(double lr, double weight_decay);

// `schedule` may be null. Errors: from the controllers' runs.
absl::StatusOr<HparamEvalReport> RunHparamEval(const Task& task, const HparamEvalConfig& config,
                                               const std::vector<NamedController>& controllers,
                                               const v1::LhoptSchedule* schedule);

// Runs `policy` greedily on one fresh optimizee of `task` for `steps` inner
// steps with `decisions` decisions, from CIAO's defaults, and returns the
// hyperparameter trajectory as a schedule (a point at progress 0 with the
// defaults, then one a decision: decision_steps[d] / steps and the values
// it set). *run (if non-null) gets the run itself.
absl::StatusOr<v1::LhoptSchedule> RecordSchedule(const Task& task, LhoptPolicyImpl& policy,
                                                 const EwmaNormalizer& normalizer, int64_t steps,
                                                 int64_t decisions, uint64_t seed,
                                                 ControlledRunResult* run = nullptr);

}  // namespace lopt
