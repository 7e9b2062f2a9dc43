// The worker side of LHOPT (REFERENCE.md section 4): inner training runs of
// one task whose CIAO hyperparameters a policy controls, as PPO episodes.
//
// A work unit (LhoptUnit) is P runs (particles) of one task instance, each
// an episode starting from its own randomly perturbed hyperparameters. The
// policy acts every K = steps / decisions inner steps on the unitless
// features of common/lhopt/lhopt_features.h; its actions change the
// hyperparameters (ApplyActions) and save, load or swap the run's inner
// state in restart registers kept in a ReplayBuffer table per state id. The
// eval (test-split) loss is recorded at evenly spaced steps; each episode's
// reward is its curve's log speed-up over a power law fitted to the
// baseline's curve: the same task instance, seeds and initial
// hyperparameters run by the EMA policy (greedily). Baseline fits are cached
// per task key, and the baseline curves are kept in a ReplayBuffer table so
// that every worker of a job (and a resumed run) shares them.
//
// The inner step is particle-batched: a fixed number of kernels whatever P is.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/ciao.h"
#include "common/lhopt/lhopt_features.h"
#include "common/lhopt/lhopt_policy.h"
#include "common/lhopt/lhopt_unit.h"
#include "common/lhopt/power_law.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// Restart-register states of one run in a ReplayBuffer: the table
// "<prefix>/<state id>" (capacity 1) holds the state with that id.
class RegisterStore {
 public:
  // `buffer` must outlive the store.
  RegisterStore(ReplayBuffer* buffer, std::string prefix);
  absl::Status Put(int64_t id, NamedTensors state);
  absl::StatusOr<NamedTensors> Get(int64_t id);
  absl::Status Release(int64_t id);
  // Deletes every state still held (the end of a run).
  absl::Status ReleaseAll();
  std::string Table(int64_t id) const;
  const std::set<int64_t>& live() const { return live_; }

 private:
  ReplayBuffer* buffer_;
  std::string prefix_;
  std::set<int64_t> live_;
};

enum class ActMode { kSample, kGreedy };

// One inner run of P = groups * replicas particles (particle r * groups + g
// shares group g's initial weights and data).
struct ControlledRunConfig {
  int64_t groups = 1;
  int64_t replicas = 1;
  int64_t inner_steps = 0;
  // Controller decisions (at DecisionSteps); 0: no controller.
  int64_t decisions = 0;
  // Task::Evaluate points at CurveSteps (0: none).
  int64_t curve_points = 0;
  // Mean training loss of every window of this many steps (0: none).
  int64_t record_every = 0;
  uint64_t task_seed = 0;    // initial weights, data, initial hyperparameters
  uint64_t action_seed = 0;  // sampled actions
  ActMode mode = ActMode::kSample;
  // Each particle starts from RandomInitialHparams, or else from `initial_hparams`.
  bool random_initial_hparams = true;
  CiaoHyperparameters initial_hparams;
  double reward_clip = 3;
  // Fixed schedule (no controller): the hyperparameters of every particle
  // before inner step `step` (0-based) of `inner_steps`.
  std::function<CiaoHparamTensors(int64_t step)> schedule;
  // Observers (tests, traces): after each decision's actions took effect,
  // and before each inner step with the hyperparameters it uses.
  std::function<void(int64_t decision, const TaskState&, const CiaoState&)> on_decision;
  std::function<void(int64_t step, const CiaoHparamTensors&)> on_step;
  // Asked before each inner step: true ends the run with CANCELLED (the
  // worker's, when the learner cancels the unit).
  std::function<bool()> cancelled;
};

struct ControlledRunResult {
  std::vector<int64_t> decision_steps;  // [D] inner steps done when decision d acts
  std::vector<int64_t> curve_steps;     // [C] inner steps done at each curve point
  // Per decision and particle (undefined without a controller):
  torch::Tensor raw_features;  // [D, P, F] float32, before normalisation
  torch::Tensor features;      // [D, P, F] as the policy saw them
  torch::Tensor value_extra;   // [D, P, E]
  torch::Tensor actions;       // [D, P, heads] int64
  torch::Tensor log_probs;     // [D, P]
  torch::Tensor values;        // [D, P]
  // [D, P, 6] float64, in force after decision d: lr, 1 - beta1, 1 - beta2,
  // eps, weight decay, clip fraction.
  torch::Tensor hparams;
  torch::Tensor curve;             // [C, P] float64 eval loss
  torch::Tensor train_curve;       // [W, P] float64 mean train loss per window
  torch::Tensor final_train_loss;  // [P] mean over the last 10% of the steps
  torch::Tensor test_loss;         // [P] at the end
  torch::Tensor test_accuracy;     // [P] at the end (NaN without labels)
  torch::Tensor test_hit_rate;     // [P] HR@10, NDCG@10 at the end: ranking
  torch::Tensor test_ndcg;         // families (neumf) only, else undefined
  torch::Tensor test_cer;          // [P] CER at the end: speech_ctc only, else undefined
  int64_t register_saves = 0;
  int64_t register_loads = 0;
};

// D decision steps in [1, steps): decision d after 1 + floor(d (steps - 1) / D)
// inner steps (the first inner step runs at the initial hyperparameters so
// that the first decision sees real statistics). REQUIRES: 1 <= D < steps.
std::vector<int64_t> DecisionSteps(int64_t steps, int64_t decisions);
// C points round(steps * c / C), c = 1..C, the last at `steps`.
std::vector<int64_t> CurveSteps(int64_t steps, int64_t points);

// Runs the task with CIAO. With config.decisions > 0, `policy` and
// `normalizer` act (REQUIRES: both non-null); `fits` (P entries, may be
// null) feed the value head's baseline statistics; `registers` holds the
// restart registers' states (null: an in-memory buffer of its own).
// Errors: a register state that cannot be stored or read back.
absl::StatusOr<ControlledRunResult> RunControlled(const Task& task,
                                                  const ControlledRunConfig& config,
                                                  LhoptPolicyImpl* policy,
                                                  const EwmaNormalizer* normalizer,
                                                  const std::vector<PowerLawFit>* fits,
                                                  RegisterStore* registers);

// Per-decision rewards [D, P] float64: curve point c (at curve_steps[c])
// belongs to the last decision before it; decision d's reward is the sum
// over its points of LogSpeedup(fit_p, t_c, curve[c, p], clip) / C. So an
// episode's rewards sum to RunReward(fit_p, curve_steps, curve[:, p], clip).
torch::Tensor DecisionRewards(const std::vector<PowerLawFit>& fits,
                              const std::vector<int64_t>& decision_steps,
                              const std::vector<int64_t>& curve_steps,
                              const torch::Tensor& curve, double clip);

// Fits L(t) = a t^-b + c to each particle's curve ([C, P]). A particle whose
// curve cannot be fit (fewer than 3 finite points: it diverged) gets a flat
// fit at the task's MaxMetaLoss, against which any finite loss below it
// scores the full clip.
std::vector<PowerLawFit> FitCurves(const std::vector<int64_t>& curve_steps,
                                   const torch::Tensor& curve, double max_loss);

class LhoptEpisodeRunner {
 public:
  // `buffer` (not null) must outlive the runner; its tables are named
  // "<table_prefix>/baseline/<task key>" and "<table_prefix>/registers/...".
  // Its tasks (episodes and baselines) live on `device`: a GPU worker's CUDA
  // device runs the inner steps, CIAO and the loss sums there, the policy on the CPU.
  LhoptEpisodeRunner(const v1::JobSpec& job, ReplayBuffer* buffer, std::string table_prefix,
                     torch::Device device = DefaultTaskDevice());

  // Runs the unit's P episodes (and its baseline if no fit is known).
  // Errors: INVALID_ARGUMENT for a malformed unit, a task that cannot be
  // built, register or buffer failures.
  absl::StatusOr<LhoptUnitResult> Run(const LhoptUnit& unit);
  // Run's episodes and baseline runs ask `check` before each inner step and
  // end with CANCELLED when it says so (ControlledRunConfig::cancelled).
  void set_cancel_check(std::function<bool()> check) { cancel_check_ = std::move(check); }

  // The baseline fits of the unit's task instance: the memo, else the curve
  // in the buffer, else a baseline run (whose curve goes to the buffer).
  // *computed (if non-null): whether it ran; *curve: the baseline's curve.
  absl::StatusOr<std::vector<PowerLawFit>> BaselineFits(const LhoptUnit& unit,
                                                        bool* computed = nullptr,
                                                        torch::Tensor* curve = nullptr);

  std::string BaselineTable(const std::string& task_key) const;
  // Baseline tables this runner wrote or read (local mode checkpoints them).
  const std::set<std::string>& baseline_tables() const { return baseline_tables_; }
  int64_t baseline_runs() const { return baseline_runs_; }
  int64_t baseline_memo_hits() const { return memo_hits_; }
  int64_t baseline_buffer_hits() const { return buffer_hits_; }

 private:
  absl::StatusOr<const Task*> GetTask(const v1::TaskSpec& spec, uint64_t seed);

  v1::JobSpec job_;
  torch::Device device_;
  ReplayBuffer* buffer_;
  std::string prefix_;
  std::map<std::string, std::unique_ptr<Task>> tasks_;
  struct Memo {
    std::vector<PowerLawFit> fits;
    torch::Tensor curve;
  };
  std::map<std::string, Memo> memo_;
  std::set<std::string> baseline_tables_;
  int64_t baseline_runs_ = 0, memo_hits_ = 0, buffer_hits_ = 0;
  std::function<bool()> cancel_check_;
};

}  // namespace lopt
