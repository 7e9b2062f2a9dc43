// Meta-test on one big optimizee: a trained learned optimizer
// (lopt::LearnedOptimizer, the fused CUDA step on a GPU) and AdamW train the
// same wide MLP on Fashion-MNIST 28x28 from the same start, on one device or
// data-parallel over several processes (one a GPU): every rank draws the same
// global batch, trains on its 1/world slice, and averages the gradients
// through `Collectives` (NCCL in `lopt eval-large --gpus N`, see
// cli/data_parallel.h) before each optimizer step, so that the replicas
// stay in step. The particle-batched Task path (common/elo/evaluation.h) is for
// many small optimizees; this is for one that fills a GPU.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lopt {

struct LargeEvalConfig {
  std::string optimizer_path;  // a *.lopt file from `lopt train`
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::vector<int64_t> hidden = {4096, 4096};  // ReLU MLP 784 -> hidden... -> 10
  int64_t batch = 1024;                        // global: split over the ranks
  int64_t steps = 300;
  std::vector<double> adamw_lrs;  // empty: the optimizer file's job's eval grid
  int64_t record_every = 10;
  uint64_t seed = 0;
  // A text LearnedOptimizerSpec merged into the file's options (e.g. ELO's
  // step-multiplier schedule: 'warmup_fraction: 0.05'); empty: none.
  std::string lopt_options;
};

// What data parallelism needs from the outside; the defaults are one process.
struct Collectives {
  int rank = 0, world = 1;
  // Averages the tensors over the ranks, in place.
  std::function<absl::Status(const std::vector<torch::Tensor>&)> average;
};

struct LargeEvalArm {
  std::string name;                    // "lopt", "adamw lr=0.001", ...
  std::vector<int64_t> curve_steps;    // recorded steps
  std::vector<double> curve_loss;      // global mean train loss there
  double final_train_loss = 0;         // mean of the last 10% of steps' losses
  double test_loss = 0, test_accuracy = 0;
  double ms_per_step = 0;              // wall, forward + backward + sync + step
  bool diverged = false;               // a non-finite loss ended the arm early
};

struct LargeEvalReport {
  int64_t parameters = 0;
  int world = 1;
  std::string device;
  LargeEvalConfig config;
  std::vector<LargeEvalArm> arms;
};

// Trains every arm in turn on `device`; on rank 0 `progress(done, total)`
// after each step (done counts steps of all arms).
absl::StatusOr<LargeEvalReport> RunLargeEval(
    const LargeEvalConfig& config, torch::Device device, const Collectives& collectives,
    const std::function<void(int64_t, int64_t)>& progress = nullptr);

// The report as a table (one row an arm, the best AdamW marked).
std::string FormatLargeEvalTable(const LargeEvalReport& report);

// report.json, curves.csv and table.txt under `out_dir`.
absl::Status WriteLargeEvalReport(const LargeEvalReport& report, const std::string& out_dir);

}  // namespace lopt
