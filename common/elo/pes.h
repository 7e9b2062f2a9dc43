// Persistent Evolution Strategies (Vicol et al. 2021; REFERENCE.md section
// 2): the antithetic perturbations, the persistent accumulators xi and the
// gradient estimate of a set of tasks, independent of what the tasks are.
//
// Particle layout: task i runs theta + eps_i as particle i and theta - eps_i
// as particle T + i.
#pragma once

#include <cstdint>

#include <torch/types.h>

namespace lopt {

class PesAccumulator {
 public:
  // Accumulators live on `device`; eps is drawn on the CPU generator (the
  // same numbers on every device) and uploaded.
  PesAccumulator(int64_t num_tasks, int64_t dim, double sigma,
                 torch::Device device = torch::kCPU);

  int64_t num_tasks() const { return xi_.size(0); }
  double sigma() const { return sigma_; }

  // Starts a truncation: draws eps ~ N(0, sigma^2 I) per task and returns the
  // perturbed meta-parameters of all particles, [2T, D].
  torch::Tensor BeginTruncation(const torch::Tensor& theta, torch::Generator& gen);

  // Task `i` starts a new unroll before the next AddLosses. Its later losses
  // are credited to `xi_restored` + eps (zero for a fresh start; the
  // snapshot's accumulator for a state restored from a replay buffer).
  void Reset(int64_t task, const torch::Tensor& xi_restored);

  // Losses [2T] of one inner step.
  void AddLosses(const torch::Tensor& losses);

  // For a captured CUDA graph of the inner step: AddLosses of the raw task
  // losses [2T] clipped to max_loss (NaN/inf mapped to it), with their mean
  // added to `sum` (a float64 scalar), in one fused kernel on CUDA; what it
  // records does not count the step (the host does, CountSteps, once a
  // replay).
  void AddClippedLossesUncounted(const torch::Tensor& losses, double max_loss,
                                 torch::Tensor& sum);
  // The same for a behaviour-cloned step: the raw task losses and BC losses
  // [2T] are each clipped; meta = (1 - alpha) bc + alpha task is recorded and
  // its mean added to `sum_meta`, the clipped means to `sum_task`, `sum_bc`.
  // alpha: a float32 scalar tensor. One fused kernel on CUDA.
  void AddBcLossesUncounted(const torch::Tensor& task_losses, const torch::Tensor& bc_losses,
                            const torch::Tensor& alpha, double max_loss, torch::Tensor& sum_meta,
                            torch::Tensor& sum_task, torch::Tensor& sum_bc);
  void CountSteps(int64_t n) { steps_ += n; }

  // The accumulated perturbation that produced task i's current state: what
  // a replay-buffer snapshot of it must carry.
  torch::Tensor CurrentXi(int64_t task) const;

  // Ends the truncation: returns the estimate of d(mean loss)/d(theta), [D],
  // averaged over tasks, and advances xi.
  torch::Tensor EndTruncation();

  // Persistent state (for checkpoints and replay snapshots).
  const torch::Tensor& xi() const { return xi_; }
  void set_xi(const torch::Tensor& xi) { xi_.copy_(xi); }

 private:
  double sigma_;
  torch::Tensor xi_;         // [T, D] accumulated perturbations
  torch::Tensor eps_;        // [T, D] this truncation's
  torch::Tensor xi_after_;   // [T, D] xi of the unroll started inside this truncation
  torch::Tensor reset_;      // [T] bool: a reset happened in this truncation
  torch::Tensor diff_pre_;   // [T] sum of L+ - L- before the reset
  torch::Tensor diff_post_;  // [T] ... after it
  int64_t steps_ = 0;
};

}  // namespace lopt
