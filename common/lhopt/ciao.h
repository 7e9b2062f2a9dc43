// CIAO, the inner optimiser of LHOPT: AdamW parameterised by 1 - beta, with
// gradient-norm clipping at a fraction of a rolling max of the gradient norm
// and an optional LAMB trust ratio (openai/LHOPT, inner_optimizer.py).
//
// Two forms share one implementation of the math:
//   * CiaoStep: P particles at once (tensors with a leading particle dim, as
//     in common/tasks/adam.h), every hyperparameter a [P] tensor so that each
//     particle follows its own controller; returns the statistics the LHOPT
//     features need. A fixed number of kernels whatever P is.
//   * CiaoOptimizer: a torch::optim::Optimizer for a user's torch::nn module,
//     whose hyperparameters a user (or a replayed LHOPT schedule) sets
//     between steps.
//
// One step, per particle (g the gradients of all tensors together):
//   rolling_max <- max(|g|, rolling_max * (1 - omb2))     (|.| the global L2 norm)
//   g <- g * min(1, clip_fraction * rolling_max / (|g| + 1e-6))
//   m <- (1 - omb1) m + omb1 g;  v <- (1 - omb2) v + omb2 g^2
//   bc1 <- (1 - omb1) bc1 + omb1;  bc2 <- (1 - omb2) bc2 + omb2
//     (running bias corrections: they stay exact when beta changes mid-run)
//   r = (m / bc1) / (sqrt(v / bc2) + eps) + wd * p
//   u = lr * trust * r,  p_new = p - u
// where trust = 1, or with LAMB clamp(|p_k| / |r_k|, min_trust, max_trust)
// per tensor k (tensors of one dimension per particle keep trust = 1, like
// the paper's lamb_ignore_vectors). The rolling max decays with the current
// 1 - beta2, as openai/LHOPT does when no separate decay is given.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/types.h>

namespace lopt {

// Scalar hyperparameters: the defaults of the LHOPT paper (REFERENCE.md §4).
struct CiaoHyperparameters {
  double lr = 1e-3;
  double one_minus_beta1 = 0.1;
  double one_minus_beta2 = 1e-2;
  double eps = 1e-6;
  double weight_decay = 1e-2;
  double clip_fraction = 0.8;  // of the rolling max of the gradient norm
};

// Per-particle hyperparameters: each a float64 [P] tensor.
struct CiaoHparamTensors {
  torch::Tensor lr;
  torch::Tensor one_minus_beta1;
  torch::Tensor one_minus_beta2;
  torch::Tensor eps;
  torch::Tensor weight_decay;
  torch::Tensor clip_fraction;

  // Every particle at `h`.
  static CiaoHparamTensors Fill(int64_t num_particles, const CiaoHyperparameters& h);
  int64_t num_particles() const { return lr.size(0); }
  // Particle `i`'s values.
  CiaoHyperparameters At(int64_t i) const;
  // Rows `index` ([K] int64) of every field.
  CiaoHparamTensors Select(const torch::Tensor& index) const;
  // Every field as float64 on `device` (what CiaoStep uses there).
  CiaoHparamTensors On(const torch::Device& device) const;
};

// Options fixed for a run (not controlled by the policy).
struct CiaoOptions {
  bool lamb = false;
  double lamb_min_trust = 1e-3;
  double lamb_max_trust = std::numeric_limits<double>::infinity();
};

struct CiaoState {
  std::vector<torch::Tensor> m;  // each [P, ...], like the params
  std::vector<torch::Tensor> v;
  torch::Tensor bias_correction1;  // [P] float64, 0 before the first step
  torch::Tensor bias_correction2;  // [P] float64
  torch::Tensor rolling_max;       // [P] float64, max gradient norm, decayed
  torch::Tensor step;              // [P] int64, updates applied
};

// Statistics of one step, each [P] float64 (dim: int64). Norms and cosines
// are over all tensors of a particle together.
struct CiaoStats {
  torch::Tensor grad_norm;       // |g| before clipping
  torch::Tensor clipped;         // 1 where the gradient was clipped, else 0
  torch::Tensor clip_scale;      // the factor g was multiplied by, in (0, 1]
  torch::Tensor update_norm;     // |u|, the step actually taken
  torch::Tensor param_norm;      // |p| before the step
  torch::Tensor momentum_norm;   // |m / bc1|
  torch::Tensor momentum_minus_grad_norm;  // |m / bc1 - g_clipped|
  torch::Tensor cos_grad_momentum;  // cos(g, m / bc1)
  torch::Tensor cos_grad_param;     // cos(g, p before the step)
  torch::Tensor cos_grad_update;    // cos(g, u): > 0 when u descends along g
  torch::Tensor dim;                // [P] int64: parameters of one particle
};

struct CiaoStepResult {
  std::vector<torch::Tensor> updates;  // u, each [P, ...]: p_new = p - u
  CiaoStats stats;
};

CiaoState InitCiaoState(const std::vector<torch::Tensor>& params);

// Folds `grads` into `state` and returns the updates of P particles with
// hyperparameters `h` (each [P]). Does not modify params or grads. Works
// under NoGradGuard or not (it never records autograd history of its own).
CiaoStepResult CiaoStep(const std::vector<torch::Tensor>& params,
                        const std::vector<torch::Tensor>& grads, CiaoState* state,
                        const CiaoHparamTensors& h, const CiaoOptions& opt = {});

// ---------------------------------------------------------------------------
// CIAO as a torch::optim::Optimizer (one particle).
//
//   lopt::CiaoOptimizer opt(model->parameters());
//   for (...) {
//     opt.set_hyperparameters(schedule(progress));   // optional
//     opt.zero_grad(); loss.backward(); opt.step();
//   }
struct CiaoOptimizerOptions
    : public torch::optim::OptimizerCloneableOptions<CiaoOptimizerOptions> {
  CiaoHyperparameters hparams;
  CiaoOptions options;
  // get_lr/set_lr read and write hparams.lr so that LibTorch's schedulers work.
  double get_lr() const override { return hparams.lr; }
  void set_lr(const double lr) override { hparams.lr = lr; }
};

class CiaoOptimizer : public torch::optim::Optimizer {
 public:
  explicit CiaoOptimizer(std::vector<torch::Tensor> params,
                         const CiaoHyperparameters& hparams = {},
                         const CiaoOptions& options = {});

  // One step over every parameter that has a gradient (clipping sees the
  // norm of those gradients together). Parameters without a gradient keep
  // their value and their moments.
  torch::Tensor step(LossClosure closure = nullptr) override;

  // Takes effect from the next step; the moments and the rolling max carry on.
  void set_hyperparameters(const CiaoHyperparameters& h);
  CiaoHyperparameters hyperparameters() const;

  // The statistics of the last step (scalars; undefined before the first).
  const CiaoStats& last_stats() const { return last_stats_; }
  int64_t iteration() const { return iteration_; }

  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  CiaoOptimizerOptions& opts();
  const CiaoOptimizerOptions& opts() const;

  CiaoState ciao_state_;  // one particle; m/v per parameter in param order
  CiaoStats last_stats_;
  int64_t iteration_ = 0;
};

}  // namespace lopt
