// One ELO meta-training job as the learner runs it, whatever the wiring:
// local mode calls it in a loop with in-process unrollers, the learner
// service with workers over gRPC. It hands out truncations of the job's
// shards (each shard a set of pes.num_tasks PES pairs with persistent inner
// states), accepts the results within the job's staleness bound, and applies
// an outer step once cluster.results_per_step results are in.
//
// Not thread-safe: the owner serialises calls.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/spec/job_spec.h"
#include "learner/elo_learner.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// What a shard must run next: one truncation with theta of version
// `theta_version` (the outer step it was taken at).
struct EloUnit {
  int32_t shard = 0;
  int64_t theta_version = 0;
  // The shard's truncation counter: its unroller's random stream index.
  int64_t truncation = 0;
  torch::Tensor theta;  // [D], a copy (undefined where Start was told not to copy it)
  double alpha = 1;
};

// A shard's result for one unit (TruncationResult without the bookkeeping).
struct EloShardResult {
  int32_t shard = 0;
  int64_t theta_version = 0;
  torch::Tensor grad;  // [D] float32
  double meta_loss = 0;
  double task_loss = 0;
  double bc_loss = 0;
  int64_t particle_steps = 0;
  int64_t fresh_starts = 0;
  int64_t restores = 0;
  int64_t pushes = 0;
};

// One applied outer step, for logs and metrics.csv.
struct EloStepRecord {
  int64_t outer_step = 0;  // the step that was applied (before increment)
  double meta_loss = 0;
  double task_loss = 0;
  double bc_loss = 0;
  double alpha = 0;
  double outer_lr = 0;
  int64_t fresh_starts = 0;
  int64_t restores = 0;
  int64_t pushes = 0;
  int64_t particle_steps = 0;
  int32_t results = 0;
};

enum class EloAcceptOutcome { kAccepted, kStepApplied, kDroppedStale };

class EloJob {
 public:
  // REQUIRES: `job` validated (ValidateJob).
  explicit EloJob(const v1::JobSpec& job);

  const v1::JobSpec& spec() const { return learner_.job(); }
  const EloLearner& learner() const { return learner_; }
  int32_t num_shards() const { return num_shards_; }
  int32_t results_per_step() const { return results_per_step_; }
  int64_t outer_step() const { return learner_.outer_step(); }
  int64_t total_steps() const { return learner_.total_steps(); }
  bool done() const { return learner_.done(); }

  // Whether `shard` may start a unit now: the job is not done, the shard has
  // no unit running, and (max_staleness 0) the current step still needs
  // results beyond those accepted and running.
  bool CanStart(int32_t shard) const;
  // REQUIRES: CanStart(shard). Marks the shard running. `copy_theta` false:
  // the unit has no theta (a caller that sends learner().theta() as it is).
  EloUnit Start(int32_t shard, bool copy_theta = true);
  // Units the shard has started (its next unit's truncation index).
  int64_t truncations(int32_t shard) const { return truncations_[shard]; }
  // The shard's running unit was lost (its worker went away): it may start again.
  void Abandon(int32_t shard);

  // Takes the shard's result (the shard stops running). INVALID_ARGUMENT for
  // a shard out of range, a gradient of the wrong shape or dtype, or
  // non-finite losses or gradient (nothing changes then); kDroppedStale when
  // theta_version is more than max_staleness steps old; kStepApplied when it
  // completed an outer step (then `*record` describes it).
  absl::StatusOr<EloAcceptOutcome> Accept(const EloShardResult& result,
                                          EloStepRecord* record = nullptr);

  // Per applied step: meta-loss and task loss (for summaries).
  const std::vector<double>& meta_losses() const { return meta_losses_; }
  const std::vector<double>& task_losses() const { return task_losses_; }
  int64_t staleness_of(int64_t theta_version) const { return outer_step() - theta_version; }

  // The learner's state, the shards' truncation counters and the history;
  // results of a step not yet applied are not kept (they are recomputed).
  NamedTensors SaveState() const;
  absl::Status LoadState(const NamedTensors& state);

 private:
  EloLearner learner_;
  int32_t num_shards_;
  int32_t results_per_step_;
  int32_t max_staleness_;
  std::vector<bool> running_;
  std::vector<int64_t> truncations_;  // per shard, units started
  int32_t running_count_ = 0;
  // The step being assembled.
  int32_t pending_ = 0;
  torch::Tensor grad_sum_;
  EloStepRecord pending_record_;
  std::vector<double> meta_losses_, task_losses_;
};

}  // namespace lopt
