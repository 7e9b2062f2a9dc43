// Meta-test: trains fresh optimizees of a task for N steps with learned
// optimizers and with AdamW over a learning-rate grid, on the same
// initialisations and the same data order, and measures them.
//
// All seeds of one optimizer (and all grid points x seeds of AdamW) train at
// once as particles of one batched task.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"

namespace lopt {

// The seeds of a job's fresh optimizees (MetaTestConfig::seed = job seed +
// offset): lopt eval's meta-test, and lopt select's validation, which the
// meta-test never sees. Meta-training's own tasks use the job seed itself.
inline constexpr uint64_t kMetaTestSeedOffset = 1000003;
inline constexpr uint64_t kValidationSeedOffset = 2000003;

struct MetaTestConfig {
  int64_t steps = 1000;
  int64_t seeds = 3;
  std::vector<float> adamw_lrs;
  double adamw_weight_decay = 1e-4;
  // Also AdamW over the grid with a 5% linear warm-up, then cosine to 0.1x
  // of each lr ("adamw_cosine"; AdamWCosineFactor).
  bool adamw_cosine = false;
  int64_t record_every = 10;
  // Evaluate on the test split every this many steps (0: only at the end).
  int64_t test_every = 0;
  uint64_t seed = 0;
};

// The adamw_cosine arm's factor on its grid lr at step t of a run of
// total_steps: ELO's step-multiplier schedule (StepMultFactor) with a 5%
// warm-up from 0 and a cosine to 0.1.
double AdamWCosineFactor(int64_t t, int64_t total_steps);

// True for the optimizers of the AdamW grid ("adamw", "adamw_cosine"), whose
// runs carry an lr.
inline bool IsAdamWArm(const std::string& optimizer) {
  return optimizer == "adamw" || optimizer == "adamw_cosine";
}

struct NamedLopt {
  std::string name;  // "lopt", "lopt_untrained", ...
  v1::LearnedOptimizerSpec spec;
  torch::Tensor theta;
};

struct MetaTestRun {
  std::string optimizer;  // a NamedLopt's name, "adamw" or "adamw_cosine"
  double lr = 0;          // AdamW's (peak) learning rate; 0 for learned optimizers
  int64_t seed = 0;
  double final_train_loss = 0;  // mean batch loss over the last window (inf if diverged)
  double test_loss = 0;
  double test_accuracy = 0;     // NaN for tasks without labels
  // Ranking families (neumf): test HR@10 and NDCG@10; NaN for the others.
  double test_hit_rate = std::numeric_limits<double>::quiet_NaN();
  double test_ndcg = std::numeric_limits<double>::quiet_NaN();
  // Transcription families (speech_ctc): test character error rate; NaN for the others.
  double test_cer = std::numeric_limits<double>::quiet_NaN();
  bool diverged = false;
  std::vector<float> curve;     // mean batch loss of each record_every window
  std::vector<float> test_curve;      // test loss every test_every steps
  std::vector<float> test_acc_curve;  // and test accuracy
  std::vector<float> test_hr_curve;    // and HR@10, NDCG@10 (ranking families only)
  std::vector<float> test_ndcg_curve;
  std::vector<float> test_cer_curve;   // and CER (transcription families only)
};

struct MetaTestReport {
  std::string task;
  int64_t steps = 0;
  int64_t record_every = 0;
  int64_t final_window = 0;  // steps averaged into final_train_loss
  int64_t test_every = 0;    // steps between the points of test_curve
  std::vector<MetaTestRun> runs;
};

// `progress(done, total)` is called every record window with inner steps done.
MetaTestReport RunMetaTest(const Task& task, const MetaTestConfig& config,
                           const std::vector<NamedLopt>& lopts,
                           const std::function<void(int64_t, int64_t)>& progress = nullptr);

// Meta-validation of several thetas of one learned optimizer (`lopt select`
// over a run's snapshots): config.seeds fresh optimizees for each theta, all
// at once (particle r * seeds + s trains seed s with thetas[r], the seeds'
// initialisations and batches the same for every theta), and no AdamW. The
// report's runs are named as the thetas. The thetas must share spec's
// architecture (vectors of one size). `progress(done, config.steps)`.
absl::StatusOr<MetaTestReport> RunThetaSweep(
    const Task& task, const MetaTestConfig& config, const v1::LearnedOptimizerSpec& spec,
    const std::vector<std::pair<std::string, torch::Tensor>>& thetas,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace lopt
