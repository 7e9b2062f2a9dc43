#include "kernels/losses_cuda.h"

#include <string>

#include <cuda_runtime.h>

namespace lopt {
namespace kernels {
namespace {

constexpr int kThreads = 128;

template <typename T>
__device__ T BlockSum(T v, T* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  T s = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) s += shared[w];
  return s;  // valid in thread 0
}

__global__ void __launch_bounds__(kThreads)
    CrossEntropyKernel(const float* __restrict__ logits, const int64_t* __restrict__ y, int G,
                       int B, int C, float* __restrict__ loss, float* __restrict__ dlogits) {
  const int p = blockIdx.x;
  const float* lp = logits + size_t(p) * B * C;
  const int64_t* yp = y + size_t(p % G) * B;
  float* dp = dlogits ? dlogits + size_t(p) * B * C : nullptr;
  const float inv_b = 1.0f / float(B);
  float acc = 0;
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    const float* row = lp + size_t(b) * C;
    float m = -INFINITY;
    for (int c = 0; c < C; ++c) m = fmaxf(m, row[c]);
    float s = 0;
    for (int c = 0; c < C; ++c) s += expf(row[c] - m);
    const int label = int(yp[b]);
    acc += logf(s) + m - row[label];
    if (dp) {
      float* drow = dp + size_t(b) * C;
      const float inv_s = 1.0f / s;
      for (int c = 0; c < C; ++c)
        drow[c] = (expf(row[c] - m) * inv_s - (c == label ? 1.0f : 0.0f)) * inv_b;
    }
  }
  __shared__ float shared[kThreads / 32];
  float total = BlockSum(acc, shared);
  if (threadIdx.x == 0) loss[p] = total * inv_b;
}

__global__ void __launch_bounds__(kThreads)
    PesLossesKernel(const float* __restrict__ losses, int T, float max_loss,
                    const bool* __restrict__ reset, double* diff_pre, double* diff_post,
                    double* sum) {
  auto norm = [&](float l) { return isfinite(l) ? fminf(l, max_loss) : max_loss; };
  double acc = 0;
  for (int i = threadIdx.x; i < T; i += blockDim.x) {
    const float a = norm(losses[i]), b = norm(losses[T + i]);
    const double d = double(a) - double(b);
    if (reset[i]) diff_post[i] += d;
    else diff_pre[i] += d;
    acc += double(a) + double(b);
  }
  __shared__ double shared[kThreads / 32];
  double total = BlockSum(acc, shared);
  if (threadIdx.x == 0) *sum += total / double(2 * T);
}

const char* Check(cudaError_t e) {
  if (e == cudaSuccess) return "";
  static thread_local std::string msg;
  msg = std::string("lopt CUDA losses: ") + cudaGetErrorString(e);
  return msg.c_str();
}

}  // namespace

const char* CrossEntropyCuda(const float* logits, const int64_t* y, int64_t P, int64_t G,
                             int64_t B, int64_t C, float* loss, float* dlogits,
                             CUstream_st* stream) {
  if (P == 0) return "";
  CrossEntropyKernel<<<unsigned(P), kThreads, 0, stream>>>(logits, y, int(G), int(B), int(C),
                                                           loss, dlogits);
  return Check(cudaGetLastError());
}

const char* PesLossesCuda(const float* losses, int64_t T, float max_loss, const bool* reset,
                          double* diff_pre, double* diff_post, double* sum,
                          CUstream_st* stream) {
  if (T == 0) return "";
  PesLossesKernel<<<1, kThreads, 0, stream>>>(losses, int(T), max_loss, reset, diff_pre,
                                              diff_post, sum);
  return Check(cudaGetLastError());
}

}  // namespace kernels
}  // namespace lopt
