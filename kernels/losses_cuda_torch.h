// LibTorch glue of kernels/losses_cuda.h. Built only when LibTorch has CUDA
// (LOPT_WITH_CUDA).
#pragma once

#include <vector>

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

// The fused training step of a one-hidden-layer MLP (kernels/mlp_task_cuda.h):
// params {w1 [P, in, H], b1 [P, H], w2 [P, H, C], b2 [P, C]}, x [G, B, in],
// labels y [G, B]; `activation` 0 ReLU, 1 tanh, 2 sigmoid. Sets *loss [P] and,
// when `grads` is non-null, the parameters' gradients. Returns false, touching
// nothing, where the fused path does not apply (other shapes, dtypes or
// activations, or LOPT_CUDA_FUSED_MLP=0 at start-up): callers then take their
// GEMM path.
bool MlpTaskLossAndGradCudaFused(const std::vector<torch::Tensor>& params, const torch::Tensor& x,
                                 const torch::Tensor& y, int activation, torch::Tensor* loss,
                                 std::vector<torch::Tensor>* grads);

// Behaviour cloning of a device inner step (kernels/losses_cuda.h,
// BehaviorCloningCuda): advances the Adam teacher's moments m, v in place,
// mixes its updates into the learned optimizer's `u` in place and returns the
// per-particle BC loss [P] (sum of squared update differences). Every tensor
// float32 CUDA [P, ...] and contiguous; step, lr [P] float32; alpha a float32
// scalar on the device. Returns an undefined tensor, touching nothing, where
// the fused path does not apply (then the caller's LibTorch ops run).
torch::Tensor BehaviorCloningCudaFused(const std::vector<torch::Tensor>& params,
                                       const std::vector<torch::Tensor>& grads,
                                       std::vector<torch::Tensor>& m,
                                       std::vector<torch::Tensor>& v,
                                       std::vector<torch::Tensor>& u, const torch::Tensor& step,
                                       const torch::Tensor& lr, const torch::Tensor& alpha,
                                       double beta1, double beta2, double eps,
                                       double weight_decay);

// kernels/losses_cuda.h: BcMetaLossesCuda.
void BcMetaLossesCudaFused(const torch::Tensor& task_losses, const torch::Tensor& bc_losses,
                           double max_loss, const torch::Tensor& alpha, const torch::Tensor& reset,
                           torch::Tensor& diff_pre, torch::Tensor& diff_post,
                           torch::Tensor& sum_meta, torch::Tensor& sum_task,
                           torch::Tensor& sum_bc);

// PES bookkeeping of one step (kernels/losses_cuda.h: PesLossesCuda).
void PesLossesCudaFused(const torch::Tensor& losses, double max_loss, const torch::Tensor& reset,
                        torch::Tensor& diff_pre, torch::Tensor& diff_post, torch::Tensor& sum);

}  // namespace lopt
