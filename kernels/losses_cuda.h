// Small fused CUDA kernels of the inner step around the learned optimizer,
// each replacing a chain of a dozen or more tiny LibTorch kernels (the inner
// step of a small optimizee is launch-bound, DESIGN.md "The one performance
// principle"):
//   - cross-entropy forward and backward of particle-batched logits;
//   - PES's per-step meta-loss bookkeeping (clip/NaN-map, antithetic
//     differences split at a reset, the running mean).
// Raw pointers and the CUDA runtime only (no LibTorch), like
// kernels/lopt_step_cuda.h; kernels/losses_cuda_torch.cc is the glue.
#pragma once

#include <cstdint>

struct CUstream_st;

namespace lopt {
namespace kernels {

// logits [P, B, C] float32, labels y [G, B] int64 shared by the P / G
// replicas (particle p reads group p % G). Writes loss [P] = mean over B of
// lse - logit[y] and, when dlogits is non-null, dlogits [P, B, C] =
// (softmax - onehot) / B. One block a particle. Returns an error string
// (empty on success).
const char* CrossEntropyCuda(const float* logits, const int64_t* y, int64_t P, int64_t G,
                             int64_t B, int64_t C, float* loss, float* dlogits,
                             CUstream_st* stream);

// losses [2T] float32 of one inner step (particle i: theta + eps_i, T + i:
// theta - eps_i). Each is clipped to max_loss with NaN/inf mapped to it; the
// difference l_i - l_{T+i} (in double) is added to diff_post[i] where
// reset[i], else to diff_pre[i]; the mean of the 2T clipped losses is added
// to *sum. One block.
const char* PesLossesCuda(const float* losses, int64_t T, float max_loss, const bool* reset,
                          double* diff_pre, double* diff_post, double* sum, CUstream_st* stream);

// Behaviour cloning's share of a device inner step, for every tensor of a
// particle batch at once (at most kBcMaxTensors tensors; P particles, tensor j
// holding n[j] elements a particle, all float32 contiguous [P, ...]):
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2                 (in place)
//   uh = lr[p] (m / (1 - b1^t) / (sqrt(v) / sqrt(1 - b2^t) + eps) + wd param)
//   bc[p] += sum (u - uh)^2,  u = (1 - alpha) uh + alpha u          (u in place)
// with t = step[p] + 1 (Adam's bias corrections, as common/tasks/adam.h). bc [P]
// must be zero on entry. alpha is a device scalar.
constexpr int kBcMaxTensors = 16;
struct BcTensors {
  int count = 0;
  const float* param[kBcMaxTensors];
  const float* grad[kBcMaxTensors];
  float* m[kBcMaxTensors];
  float* v[kBcMaxTensors];
  float* u[kBcMaxTensors];
  int64_t n[kBcMaxTensors];
};
const char* BehaviorCloningCuda(const BcTensors& t, int64_t P, const float* step, const float* lr,
                                const float* alpha, float beta1, float beta2, float eps,
                                float weight_decay, float* bc, CUstream_st* stream);

// The rest of a behaviour-cloned step's bookkeeping, in one block: the task
// losses and the BC losses [2T] are each clipped to max_loss (NaN/inf mapped
// to it); meta = (1 - alpha) bc + alpha task goes through PesLossesCuda's
// bookkeeping (diff_pre/diff_post split at `reset`, its mean added to
// *sum_meta); the means of the clipped task and BC losses are added to
// *sum_task and *sum_bc.
const char* BcMetaLossesCuda(const float* task_losses, const float* bc_losses, int64_t T,
                             float max_loss, const float* alpha, const bool* reset,
                             double* diff_pre, double* diff_post, double* sum_meta,
                             double* sum_task, double* sum_bc, CUstream_st* stream);

}  // namespace kernels
}  // namespace lopt
