// LibTorch glue of kernels/losses_cuda.h. Built only when LibTorch has CUDA
// (LOPT_WITH_CUDA).
#pragma once

#include <torch/types.h>

namespace lopt {

// False when LOPT_CUDA_FUSED_LOSSES=0 at start-up: callers then use their
// LibTorch ops (for comparisons and debugging).
bool CudaFusedLossesEnabled();

// Per-particle mean cross-entropy [P] of logits [P, B, C] against labels
// y [G, B] (particle p uses group p % G); with `dlogits` non-null it gets
// d(mean CE)/d(logits) [P, B, C]. Float32 CUDA tensors, int64 labels.
torch::Tensor CrossEntropyCudaFused(const torch::Tensor& logits, const torch::Tensor& y,
                                    torch::Tensor* dlogits);

// PES bookkeeping of one step (kernels/losses_cuda.h: PesLossesCuda).
void PesLossesCudaFused(const torch::Tensor& losses, double max_loss, const torch::Tensor& reset,
                        torch::Tensor& diff_pre, torch::Tensor& diff_post, torch::Tensor& sum);

}  // namespace lopt
