// One LHOPT job as the learner runs it, whatever the wiring (local mode in a
// loop with an in-process LhoptEpisodeRunner; the learner service with
// workers), like EloJob for ELO. It holds the policy, the EMA baseline
// policy, the PPO trainer with its Adam state, the input normaliser and the
// policy version; hands out work units (weights + version + task instance +
// seeds); accepts their episodes within the staleness bound
// (lhopt.ppo.max_staleness); and runs a PPO update once
// lhopt.episodes_per_iteration episodes are in.
//
// Task instances: unit u draws a mixture entry by weight and one of
// lhopt.instances_per_task instances of it; an instance (task seed, inner
// steps, decisions, activation) is fixed within a baseline generation of
// lhopt.baseline_refresh_iterations iterations, so the EMA snapshot's
// baseline curve of an instance is computed once a generation.
//
// Not thread-safe: the owner serialises calls.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_features.h"
#include "common/lhopt/lhopt_policy.h"
#include "common/lhopt/lhopt_unit.h"
#include "common/util/run_files.h"
#include "learner/ppo.h"
#include "lopt/v1/job.pb.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {

// One PPO iteration, for logs and metrics.csv.
struct LhoptIterationRecord {
  int64_t iteration = 0;  // the version the update produced, minus one
  int64_t episodes = 0;
  int64_t dropped_stale = 0;  // episodes dropped since the previous update
  double mean_reward = 0;     // mean episode reward (sum over its decisions)
  double mean_episode_length = 0;  // decisions
  double mean_final_eval_loss = 0;  // last curve point, finite ones
  int64_t baseline_runs = 0;        // units that computed their baseline
  int64_t register_saves = 0, register_loads = 0;
  int64_t inner_particle_steps = 0;
  PpoStats ppo;

  // Its metrics.csv row (common/util/run_files.h) but the last two columns, as
  // local mode and the learner write it.
  LhoptMetricsRow MetricsRow() const {
    return {iteration,      mean_reward,          mean_episode_length, ppo.entropy,
            ppo.approx_kl,  ppo.value_loss,       ppo.policy_loss,     ppo.clip_fraction,
            ppo.grad_norm,  episodes,             dropped_stale,       mean_final_eval_loss,
            baseline_runs,  register_saves,       register_loads};
  }
};

enum class LhoptAcceptOutcome { kAccepted, kUpdated, kDroppedStale };

class LhoptJob {
 public:
  // REQUIRES: `job` validated, with lhopt set. Seeds torch's global
  // generator with job.seed() to initialise the policy deterministically.
  explicit LhoptJob(const v1::JobSpec& job);

  const v1::JobSpec& spec() const { return job_; }
  int64_t version() const { return version_; }  // PPO updates applied
  int64_t iterations() const { return job_.lhopt().iterations(); }
  bool done() const { return version_ >= iterations(); }
  int64_t units_per_iteration() const { return units_per_iteration_; }
  int64_t baseline_generation() const;

  // Whether a unit may start now: the job is not done and (cluster.
  // max_staleness 0, the synchronous mode of local runs) the current
  // iteration still needs episodes beyond those accepted and running.
  bool CanStart() const;
  // REQUIRES: CanStart(). The next unit (copies of the weights).
  LhoptUnit Start();
  // A running unit was lost (its worker went away).
  void Abandon(int64_t unit_id);

  // Takes a unit's episodes. INVALID_ARGUMENT (nothing changes) for a unit
  // this job did not hand out, a version from the future, segments of the
  // wrong count or shapes, non-finite rewards; kDroppedStale for a unit more
  // than lhopt.ppo.max_staleness versions old; kUpdated when it completed an
  // iteration (then *record describes it).
  absl::StatusOr<LhoptAcceptOutcome> Accept(const LhoptUnitResult& result,
                                            LhoptIterationRecord* record = nullptr);

  LhoptPolicy policy() const { return policy_; }
  LhoptPolicy baseline_policy() const { return ema_; }
  const EwmaNormalizer& normalizer() const { return normalizer_; }
  // Per iteration: mean episode reward.
  const std::vector<double>& mean_rewards() const { return mean_rewards_; }

  // The weights as a unit ships them: "policy/..." and "normalizer/...".
  NamedTensors ShippedPolicy() const;

  // Everything to continue bit-identically after the last update (episodes
  // of an iteration not yet complete are not kept: they are recomputed).
  NamedTensors SaveState() const;
  absl::Status LoadState(const NamedTensors& state);

  // The controller file's message (weights, options, provenance).
  absl::StatusOr<v1::LhoptControllerFile> MakeControllerFile() const;

 private:
  void Update(LhoptIterationRecord* record);
  NamedTensors Ship(const LhoptPolicyImpl& p, const EwmaNormalizer& n) const;

  v1::JobSpec job_;
  LhoptPolicy policy_{nullptr}, ema_{nullptr};
  EwmaNormalizer normalizer_;
  std::unique_ptr<PpoTrainer> trainer_;
  int64_t version_ = 0;
  int64_t units_per_iteration_ = 0;
  int64_t units_started_ = 0;
  int64_t units_at_update_ = 0;  // units_started_ when the last update ran
  // The baseline snapshot of the current generation.
  int64_t snapshot_generation_ = 0;
  NamedTensors snapshot_;
  std::set<int64_t> running_;
  // The iteration being assembled.
  std::vector<PpoSegment> pending_;
  std::vector<torch::Tensor> pending_raw_;
  LhoptIterationRecord pending_record_;
  double pending_reward_sum_ = 0, pending_length_sum_ = 0, pending_eval_sum_ = 0;
  int64_t pending_eval_count_ = 0, dropped_since_update_ = 0;
  std::vector<double> mean_rewards_;
};

// Reads the weights of a controller file into a policy and a normaliser.
// Errors: NOT_FOUND, DATA_LOSS (not a controller file), FAILED_PRECONDITION
// (a newer format or another architecture).
struct LoadedController {
  v1::LhoptControllerFile file;  // weights cleared
  LhoptPolicy policy{nullptr};
  std::unique_ptr<EwmaNormalizer> normalizer;
};
inline constexpr uint32_t kControllerFormatVersion = 1;
inline constexpr char kLhoptArchitecture[] = "lhopt_lstm";
absl::Status SaveControllerFile(const std::string& path, const v1::LhoptControllerFile& file);
absl::StatusOr<LoadedController> LoadControllerFile(const std::string& path);

}  // namespace lopt
