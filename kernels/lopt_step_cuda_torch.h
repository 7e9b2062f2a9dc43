// LibTorch glue of the fused CUDA small_fc_lopt step (kernels/lopt_step_cuda.h):
// what SmallFcLopt::Step runs for CUDA float32 tensors. Built only when
// LibTorch has CUDA (LOPT_WITH_CUDA).
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "common/elo/small_fc_lopt.h"

namespace lopt {

// True when LoptStepCuda can run these arguments: every tensor a float32 one
// on one CUDA device (step: any dtype there), the accumulators contiguous (they
// are updated in place), hidden size 32, and no autograd graph to build.
bool LoptStepCudaSupports(const std::vector<torch::Tensor>& params,
                          const std::vector<torch::Tensor>& grads, const LoptState& state,
                          const torch::Tensor& step, const torch::Tensor& theta,
                          int64_t hidden_size);

// One whole step: folds `grads` into `state` (in place) and returns the
// updates u (p_new = p - u), as SmallFcLopt::StepReference. Runs on the
// current CUDA stream; the MLP's precision follows LOPT_CUDA_MLP (tf32
// default, fp32).
std::vector<torch::Tensor> LoptStepCuda(const std::vector<torch::Tensor>& params,
                                        const std::vector<torch::Tensor>& grads, LoptState* state,
                                        const torch::Tensor& step, const torch::Tensor& theta,
                                        int64_t hidden_size, float step_mult, float exp_mult);

// CUDA-graph capture of steps: call LoptStepCudaBeginCapture before
// capture_begin (it allocates, outside the graph's memory pool, `bytes` for
// the steps' tensor tables) and LoptStepCudaFinishCapture after capture_end,
// before the first replay, on the capturing thread: it writes the captured
// steps' tables to that buffer, which the caller keeps as long as the graph.
// Under capture (the current stream capturing) LoptStepCuda records only its
// memset and four kernels.
void LoptStepCudaBeginCapture(torch::Device device, int64_t bytes = int64_t(1) << 20);
torch::Tensor LoptStepCudaFinishCapture();

}  // namespace lopt
