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

}  // namespace kernels
}  // namespace lopt
