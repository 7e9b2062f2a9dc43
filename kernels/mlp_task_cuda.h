// One fused CUDA kernel for the whole training step of a small one-hidden-layer
// MLP optimizee, particle-batched: forward, softmax cross-entropy, backward,
// every parameter gradient. It replaces the eight small batched GEMMs, the
// bias reductions and the loss kernel of FmnistMlpTask::LossAndGrad (about 15
// launches, most of an 8x8 Fashion-MNIST inner step: kernels/lopt_step_cuda.md).
//
// Blocks map to (particle, slice of the batch). A block keeps its particle's
// weights, its rows' activations and its gradient accumulators in shared
// memory and walks its rows in chunks; with one slice a particle it stores its
// gradients, with several it adds them (atomics) into zeroed outputs.
//
// Raw pointers and the CUDA runtime only (no LibTorch), like
// kernels/losses_cuda.h; kernels/losses_cuda_torch.cc is the glue.
#pragma once

#include <cstdint>

struct CUstream_st;

namespace lopt {
namespace kernels {

enum class MlpActivation : int { kRelu = 0, kTanh = 1, kSigmoid = 2 };

struct MlpTaskShape {
  int64_t P = 0;   // particles
  int64_t G = 0;   // batch groups; particle p reads group p % G
  int64_t B = 0;   // rows a group
  int64_t in = 0, hidden = 0, classes = 0;
};

// Dynamic shared memory the kernel needs for `shape`, or -1 when it does not
// fit one block (the caller then takes its GEMM path).
int64_t MlpTaskSharedBytes(const MlpTaskShape& shape);

// How many slices the batch of each particle is cut into (1 = no atomics and
// no zeroing needed), chosen to fill the device.
int MlpTaskSlices(const MlpTaskShape& shape);

// x [G, B, in], y [G, B] (int64 labels < classes), w1 [P, in, hidden],
// b1 [P, hidden], w2 [P, hidden, classes], b2 [P, classes], all float32
// contiguous. Writes loss [P] (mean cross-entropy over the B rows) and, when
// g_w1 is non-null, the gradients of that mean with the parameters' shapes.
// With `slices` > 1 every output must be zero on entry (they are summed into).
// Returns an error string (empty on success).
const char* MlpTaskLossAndGradCuda(const MlpTaskShape& shape, int slices, MlpActivation act,
                                   const float* x, const int64_t* y, const float* w1,
                                   const float* b1, const float* w2, const float* b2, float* loss,
                                   float* g_w1, float* g_b1, float* g_w2, float* g_b2,
                                   CUstream_st* stream);

}  // namespace kernels
}  // namespace lopt
