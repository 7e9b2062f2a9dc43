// A fixed yardstick of LHOPT training progress (lhopt.yardstick in the job
// spec). The training reward is a log speed-up over the EMA policy's own
// curves: the baseline moves with the policy, so the mean reward of one
// iteration cannot be compared with another's. The yardstick holds
// everything fixed but the policy:
//
//   * a fixed set of held-out task instances (task seed, inner steps,
//     decisions, activation), instances_per_task per mixture entry, drawn
//     once from yardstick.seed (else job.seed) on a random stream that
//     training never draws from;
//   * a fixed reference per instance: CIAO with the run's initial
//     hyperparameters held constant (no controller), its eval-loss curve
//     fitted with a power law once and reused;
//   * the policy acting greedily; each run scores RunReward (the mean over
//     its curve points of the clipped log speed-up) over the reference fit.
//
// So a policy that keeps every hyperparameter scores about 0 (its runs are
// the reference runs), and the score of a policy does not depend on when
// it is evaluated.
//
//   LhoptYardstick y(job);
//   if (y.Due(version)) auto r = y.Evaluate(*policy, normalizer, version);
//
// Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_features.h"
#include "common/lhopt/lhopt_policy.h"
#include "common/lhopt/lhopt_unit.h"
#include "common/lhopt/power_law.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/work_service.pb.h"

namespace lopt {

using YardstickInstance = LhoptInstance;  // common/lhopt/lhopt_unit.h

// Whether the yardstick scores the policy of `version`: every
// lhopt.yardstick.every iterations (0 included) and after the last; never
// when every is 0.
bool YardstickDue(const v1::LhoptSpec& l, int64_t version);

// The held-out instances of a job, in order (entry 0's, then entry 1's, ...),
// drawn from lhopt.yardstick.seed (else job.seed). A function of the job
// spec only. REQUIRES: a validated LHOPT job.
std::vector<YardstickInstance> YardstickInstances(const v1::JobSpec& job);

// Short names of the mixture entries for column headers: "t0_noisy_quadratic".
std::vector<std::string> YardstickTaskNames(const v1::JobSpec& job);

struct YardstickRun {
  std::vector<int64_t> curve_steps;             // [C]
  torch::Tensor curve;                          // [C, P] the policy's eval loss
  torch::Tensor reference_curve;                // [C, P]
  std::vector<PowerLawFit> reference_fits;      // [P]
  torch::Tensor scores;                         // [P] float64 RunReward per particle
};

struct YardstickResult {
  int64_t iteration = 0;
  double score = 0;  // mean over every run of every instance
  // Per mixture entry (NaN for an entry with no instance):
  std::vector<double> task_score;
  std::vector<double> task_final_loss;            // mean last eval loss of finite runs
  std::vector<double> task_reference_final_loss;  // the same for the reference runs
  int64_t runs = 0;
  int64_t diverged = 0;  // runs whose last eval loss is not finite
  double wall_seconds = 0;
  int64_t inner_particle_steps = 0;  // the policy's runs and the references run now
  std::vector<YardstickRun> instances;  // per YardstickInstances() entry
};

class LhoptYardstick {
 public:
  // REQUIRES: a validated LHOPT job.
  // Its runs' tasks live on `device` (the worker's; local mode's --device).
  explicit LhoptYardstick(const v1::JobSpec& job, torch::Device device = DefaultTaskDevice());

  bool enabled() const { return every_ > 0; }
  // Whether to evaluate after `version` PPO updates: at 0, every
  // yardstick.every, and at the last.
  bool Due(int64_t version) const;  // YardstickDue(job.lhopt(), version)
  const std::vector<YardstickInstance>& instances() const { return instances_; }
  // Reference runs done so far (each instance's at most once).
  int64_t reference_runs() const { return reference_runs_; }

  // Runs `policy` greedily on every instance and scores it. Errors: a task
  // that cannot be built, a failing run.
  absl::StatusOr<YardstickResult> Evaluate(LhoptPolicyImpl& policy,
                                           const EwmaNormalizer& normalizer, int64_t iteration);
  // The same for weights as a unit ships them ("policy/..." and
  // "normalizer/...", LhoptJob::ShippedPolicy). INVALID_ARGUMENT for weights
  // that are not this job's policy.
  absl::StatusOr<YardstickResult> EvaluateShipped(const NamedTensors& shipped, int64_t iteration);

 private:
  struct Reference {
    torch::Tensor curve;
    std::vector<PowerLawFit> fits;
  };
  absl::StatusOr<const Task*> GetTask(size_t i);
  absl::StatusOr<const Reference*> GetReference(size_t i);

  v1::JobSpec job_;
  torch::Device device_;
  int64_t every_ = 0;
  int64_t particles_ = 1;
  bool perturbed_ = false;
  std::vector<YardstickInstance> instances_;
  std::map<size_t, std::unique_ptr<Task>> tasks_;
  std::map<size_t, Reference> references_;
  int64_t reference_runs_ = 0;
  int64_t reference_particle_steps_ = 0;
};

// A result on the wire (an LHOPT_YARDSTICK unit's, work_service.proto): the
// scalars of a yardstick.csv row; the curves stay on the worker.
void EncodeYardstickResult(const YardstickResult& r, v1::YardstickResultInfo* info);
// INVALID_ARGUMENT where the per-task columns do not match `job`'s mixture.
absl::StatusOr<YardstickResult> DecodeYardstickResult(const v1::YardstickResultInfo& info,
                                                      const v1::JobSpec& job);

// "iteration,score,score_<task>...,final_loss_<task>...,reference_final_loss_<task>...,
//  runs,diverged,wall_s"
std::string YardstickCsvHeader(const v1::JobSpec& job);
std::string YardstickCsvRow(const YardstickResult& r);

}  // namespace lopt
