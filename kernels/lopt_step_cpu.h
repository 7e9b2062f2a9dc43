// Fused CPU small_fc_lopt step: the features, their normalisation and the
// per-element MLP of SmallFcLopt::StepReference without materialising the
// [P, N, 28] features or the MLP activations.
//
// The accumulators are updated beforehand with SmallFcLopt::Accumulate (torch
// ops); this computes the updates u (p_new = p - u) from the updated state.
// Work items are blocks of 288 elements of one (particle, tensor), spread
// over at::parallel_for. Pass 1 computes each element's features on the fly
// and sums their squares (in double; features that depend on a row or column
// statistic alone are summed over the statistics tables); pass 2 recomputes
// them tile by tile (48 elements), normalises them and runs the
// 28 -> H -> H -> 2 MLP with the time features folded into the first bias.
// The result matches StepReference to float rounding (the features are
// bit-identical; the sums, the MLP and exp are reordered), does not depend
// on the number of threads, and may differ in the last bits between
// instruction sets (see SetLoptStepCpuIsa).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "common/elo/small_fc_lopt.h"

namespace lopt {

// True when LoptStepCpu can run these arguments: every tensor on the CPU in
// float32 (step: any dtype on the CPU), and no autograd graph to build (the
// kernel does not record one).
bool LoptStepCpuSupports(const std::vector<torch::Tensor>& params,
                         const std::vector<torch::Tensor>& grads, const LoptState& state,
                         const torch::Tensor& step, const torch::Tensor& theta);

// The updates for one step, given `state` after Accumulate. Same arguments and
// result as SmallFcLopt::StepReference (shapes, theta [D] or [P, D]).
std::vector<torch::Tensor> LoptStepCpu(const std::vector<torch::Tensor>& params,
                                       const std::vector<torch::Tensor>& grads,
                                       const LoptState& state, const torch::Tensor& step,
                                       const torch::Tensor& theta, int64_t hidden_size,
                                       float step_mult, float exp_mult);

namespace kernels {

// One tensor of P particles, n elements per particle, every input contiguous
// float32. Factored tensors (2+ dims) give their Adafactor statistics as
// per-particle tables of row and column entries, with the entry of each
// element; the others give v elementwise. Either way every feature is a
// function of one element's inputs (see SmallFcLopt::RawFeatures).
struct LoptStepCpuTensor {
  int64_t n = 0;
  const float* g = nullptr;    // [P, n]
  const float* p = nullptr;    // [P, n]
  const float* mom = nullptr;  // [P, n, 3]
  const float* rms = nullptr;  // [P, n]
  // Not factored (row_index null): features 10..27 from v.
  const float* v = nullptr;  // [P, n, 3] fac_a
  // Factored: row features from entry row_index[e] of the row tables, column
  // features from col_index[e]; g and m are scaled by row_factor * col_factor.
  const int32_t* row_index = nullptr;  // [n], entries < rows
  const int32_t* col_index = nullptr;  // [n], entries < cols
  int64_t rows = 0;
  int64_t cols = 0;
  const float* v_row = nullptr;       // [P, rows, 3]
  const float* row_factor = nullptr;  // [P, rows, 3]
  const float* v_col = nullptr;       // [P, cols, 3]
  const float* col_factor = nullptr;  // [P, cols, 3]
  float* u = nullptr;  // [P, n] output
};

struct LoptStepCpuArgs {
  int64_t P = 0;
  int64_t H = 0;                // hidden size
  const float* theta = nullptr;  // [D] per particle, D = 39H + H + HH + H + 2H + 2
  int64_t theta_stride = 0;      // 0: one theta shared by all particles; else D
  const float* bias0 = nullptr;  // [P, H]: b0 + time_features @ w0[28:39]
  float step_mult = 0;
  float exp_mult = 0;
};

// Writes every tensor's u.
void LoptStepCpuRaw(const LoptStepCpuArgs& args, const std::vector<LoptStepCpuTensor>& tensors);

// Which instruction set the inner loops were dispatched to ("avx512",
// "avx2", "generic"): for benchmarks and logs.
const char* LoptStepCpuIsa();
// Runs the kernel with a narrower instruction set from now on (tests,
// benchmarks); false, changing nothing, if the name is unknown or the CPU
// lacks it. The environment variable LOPT_CPU_ISA does the same at start-up.
bool SetLoptStepCpuIsa(const std::string& name);

}  // namespace kernels
}  // namespace lopt
