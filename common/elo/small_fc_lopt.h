// small_fc_lopt: the per-parameter learned optimizer of ELO (REFERENCE.md
// section 1; learned_optimization's AdafacMLPLOpt with hidden size 32).
//
// Vectorised over every tensor of every particle: tensors carry a leading
// particle dimension P, and each particle may have its own meta-parameters
// theta (PES evaluates theta +- epsilon side by side).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "lopt/v1/job.pb.h"

namespace lopt {

inline constexpr int kLoptNumFeatures = 28;      // per-element features
inline constexpr int kLoptNumTimeFeatures = 11;  // tanh(t / tau - 1)
inline constexpr int kLoptNumInputs = kLoptNumFeatures + kLoptNumTimeFeatures;

// Which axes of a per-particle shape carry the Adafactor row/column
// statistics: d0 the largest, d1 the second largest (stable ascending
// argsort; on a tie the higher axis counts as larger). factored is false for
// tensors with fewer than 2 dims.
struct FactoredDims {
  bool factored = false;
  int d0 = -1;
  int d1 = -1;
};
FactoredDims FactoredDimsOf(const std::vector<int64_t>& shape);

// The accumulators of one tensor of P particles (per-particle shape S).
struct LoptTensorState {
  torch::Tensor mom;    // [P, S..., 3] momenta at decays 0.9, 0.99, 0.999
  torch::Tensor rms;    // [P, S..., 1] second moment at 0.999
  torch::Tensor fac_a;  // factored: v_row [P, S without d0, 3]; else v [P, S..., 3]
  torch::Tensor fac_b;  // factored: v_col [P, S without d1, 3]; else [P, 0]
};
using LoptState = std::vector<LoptTensorState>;

class SmallFcLopt {
 public:
  explicit SmallFcLopt(const v1::LearnedOptimizerSpec& spec);

  const v1::LearnedOptimizerSpec& spec() const { return spec_; }
  int64_t hidden_size() const { return spec_.hidden_size(); }
  // Number of meta-parameters: 2,402 for hidden size 32.
  int64_t theta_size() const;

  // Fresh meta-parameters: truncated-normal (at 2 std) weights with std
  // 1/sqrt(fan_in), zero biases.
  torch::Tensor InitTheta(torch::Generator& gen) const;

  // Zero accumulators for parameters shaped like `params` (each [P, S...]).
  LoptState InitState(const std::vector<torch::Tensor>& params) const;

  // One step: folds `grads` into `state`, builds the 39 inputs and runs the
  // MLP. Returns the updates u (p_new = p - u), each shaped like its param.
  //   step:  [P] number of updates already applied (0 on the first step)
  //   theta: [D] shared, or [P, D] one per particle
  // Runs the fused CUDA kernel (kernels/lopt_step_cuda.h; builds with
  // LOPT_CUDA) when every tensor is a CUDA float32 one with no autograd to
  // record, the fused CPU kernel (kernels/lopt_step_cpu.h) when every tensor
  // is a CPU float32 one, else StepReference.
  std::vector<torch::Tensor> Step(const std::vector<torch::Tensor>& params,
                                  const std::vector<torch::Tensor>& grads,
                                  LoptState* state, const torch::Tensor& step,
                                  const torch::Tensor& theta) const;
  // The same step op by op with torch ops (any device; differentiable in theta):
  // the reference the fused kernel is tested against.
  std::vector<torch::Tensor> StepReference(const std::vector<torch::Tensor>& params,
                                           const std::vector<torch::Tensor>& grads,
                                           LoptState* state, const torch::Tensor& step,
                                           const torch::Tensor& theta) const;

  // Building blocks, public for tests and for the GPU kernel's reference.
  // Folds g into the accumulators of one tensor.
  static void Accumulate(const torch::Tensor& g, LoptTensorState* st);
  // The 28 raw (unnormalised) features of one tensor after Accumulate,
  // [P, numel, 28] in REFERENCE.md's order.
  static torch::Tensor RawFeatures(const torch::Tensor& p, const torch::Tensor& g,
                                   const LoptTensorState& st);
  // x * rsqrt(1e-5 + mean over elements of x^2), per particle and feature.
  static torch::Tensor NormalizeFeatures(const torch::Tensor& raw);
  // [P, 11]: tanh(t / tau - 1), tau in {1, 3, 10, ..., 1e5}.
  static torch::Tensor TimeFeatures(const torch::Tensor& step);
  // MLP outputs (direction, magnitude) [P, N, 2] for normalised features
  // [P, N, 28] and time features [P, 11].
  torch::Tensor Mlp(const torch::Tensor& features, const torch::Tensor& time_features,
                    const torch::Tensor& theta) const;

 private:
  v1::LearnedOptimizerSpec spec_;
};

// ELO's inference schedule of the step multiplier (LearnedOptimizerSpec's
// warmup_fraction, step_mult_schedule, min_step_mult): the scheduled
// multiplier over step_mult at step t (0 on the first step) of a run of
// total_steps. Exactly 1 when the spec sets no schedule or total_steps <= 0.
double StepMultFactor(const v1::LearnedOptimizerSpec& spec, int64_t t, int64_t total_steps);
// Whether the spec asks for a schedule or weight decay at all.
bool HasStepMultSchedule(const v1::LearnedOptimizerSpec& spec);
// u <- factor * (u + step_mult * weight_decay * p) for each tensor: ELO's
// p <- p - s_t * (d * exp(exp_mult * m) + weight_decay * p) with s_t =
// factor * step_mult, given small_fc_lopt's u = step_mult * d * exp(...).
void ApplyStepMultSchedule(const v1::LearnedOptimizerSpec& spec, double factor,
                           const std::vector<torch::Tensor>& params,
                           std::vector<torch::Tensor>* updates);

// Flattens a LoptState into 4 tensors a parameter tensor (mom, rms, fac_a,
// fac_b) and back: what the replay buffer and checkpoints store.
std::vector<torch::Tensor> FlattenLoptState(const LoptState& state);
LoptState UnflattenLoptState(const std::vector<torch::Tensor>& flat);

// The theta that meta-training of `job` starts from (the "untrained"
// optimizer that meta-tests compare against): SmallFcLopt::InitTheta on the
// job seed's theta-initialisation stream.
torch::Tensor InitialTheta(const v1::JobSpec& job);

}  // namespace lopt
