#include "kernels/mlp_task_cuda.h"

#include <algorithm>
#include <atomic>

#include <cuda_runtime.h>

namespace lopt {
namespace kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxSharedBytes = 96 * 1024;  // opted into; H100 allows 227 KiB
constexpr int kChunkRows[] = {32, 16, 8};

struct Layout {
  int rows = 0;  // rows a chunk
  int64_t floats = 0;
};

// Shared-memory floats: weights (w1, b1, w2, b2), gradient accumulators of the
// same sizes, the chunk's inputs, hidden outputs, logits/dlogits, dhidden.
Layout LayoutFor(const MlpTaskShape& s) {
  const int64_t params = s.in * s.hidden + s.hidden + s.hidden * s.classes + s.classes;
  for (int rows : kChunkRows) {
    int64_t floats = 2 * params + rows * (s.in + 2 * s.hidden + s.classes) + kThreads / 32;
    if (floats * 4 <= kMaxSharedBytes) return Layout{rows, floats};
  }
  return Layout{0, -1};
}

__device__ __forceinline__ float Act(float a, int act) {
  switch (act) {
    case 1: return tanhf(a);
    case 2: return 1.0f / (1.0f + __expf(-a));
    default: return fmaxf(a, 0.0f);
  }
}

// d act / d a as a function of the output h = act(a).
__device__ __forceinline__ float ActGrad(float h, int act) {
  switch (act) {
    case 1: return 1.0f - h * h;
    case 2: return h * (1.0f - h);
    default: return h > 0.0f ? 1.0f : 0.0f;
  }
}

__global__ void __launch_bounds__(kThreads)
    MlpTaskKernel(int G, int B, int IN, int H, int C, int rows_a_slice, int chunk, int act,
                  bool atomic_out, const float* __restrict__ x, const int64_t* __restrict__ y,
                  const float* __restrict__ w1, const float* __restrict__ b1,
                  const float* __restrict__ w2, const float* __restrict__ b2,
                  float* __restrict__ loss, float* __restrict__ g_w1, float* __restrict__ g_b1,
                  float* __restrict__ g_w2, float* __restrict__ g_b2) {
  extern __shared__ float sm[];
  const int p = blockIdx.x, slice = blockIdx.y, t = threadIdx.x;
  const int n1 = IN * H, n2 = H * C;
  const bool grads = g_w1 != nullptr;
  float* s_w1 = sm;
  float* s_b1 = s_w1 + n1;
  float* s_w2 = s_b1 + H;
  float* s_b2 = s_w2 + n2;
  float* a_w1 = s_b2 + C;  // gradient accumulators
  float* a_b1 = a_w1 + n1;
  float* a_w2 = a_b1 + H;
  float* a_b2 = a_w2 + n2;
  float* s_x = a_b2 + C;
  float* s_h = s_x + chunk * IN;
  float* s_d = s_h + chunk * H;
  float* s_dh = s_d + chunk * C;
  float* s_red = s_dh + chunk * H;

  const int nparams = n1 + H + n2 + C;
  {
    const float* src[4] = {w1 + size_t(p) * n1, b1 + size_t(p) * H, w2 + size_t(p) * n2,
                           b2 + size_t(p) * C};
    const int len[4] = {n1, H, n2, C};
    float* dst = s_w1;
    for (int k = 0; k < 4; ++k) {
      for (int i = t; i < len[k]; i += kThreads) dst[i] = src[k][i];
      dst += len[k];
    }
    if (grads)
      for (int i = t; i < nparams; i += kThreads) a_w1[i] = 0.0f;
  }
  const int g = p % G;
  const float* xg = x + size_t(g) * B * IN;
  const int64_t* yg = y + size_t(g) * B;
  const float inv_b = 1.0f / float(B);
  const int row0 = slice * rows_a_slice;
  const int row_end = min(B, row0 + rows_a_slice);
  float loss_acc = 0.0f;

  for (int c0 = row0; c0 < row_end; c0 += chunk) {
    const int nr = min(chunk, row_end - c0);
    __syncthreads();  // weights loaded / the last chunk's reads done
    for (int i = t; i < nr * IN; i += kThreads) s_x[i] = xg[size_t(c0) * IN + i];
    __syncthreads();
    for (int i = t; i < nr * H; i += kThreads) {
      const int r = i / H, j = i - r * H;
      const float* xr = s_x + r * IN;
      float a = s_b1[j];
      for (int k = 0; k < IN; ++k) a = fmaf(xr[k], s_w1[k * H + j], a);
      s_h[i] = Act(a, act);
    }
    __syncthreads();
    for (int i = t; i < nr * C; i += kThreads) {
      const int r = i / C, c = i - r * C;
      const float* hr = s_h + r * H;
      float a = s_b2[c];
      for (int j = 0; j < H; ++j) a = fmaf(hr[j], s_w2[j * C + c], a);
      s_d[i] = a;
    }
    __syncthreads();
    for (int r = t; r < nr; r += kThreads) {  // softmax cross-entropy, a row a thread
      float* dr = s_d + r * C;
      float m = -INFINITY;
      for (int c = 0; c < C; ++c) m = fmaxf(m, dr[c]);
      float s = 0.0f;
      for (int c = 0; c < C; ++c) s += __expf(dr[c] - m);
      const int label = int(yg[c0 + r]);
      loss_acc += __logf(s) + m - dr[label];
      if (grads) {
        const float inv_s = 1.0f / s;
        for (int c = 0; c < C; ++c)
          dr[c] = (__expf(dr[c] - m) * inv_s - (c == label ? 1.0f : 0.0f)) * inv_b;
      }
    }
    if (!grads) continue;
    __syncthreads();
    for (int i = t; i < nr * H; i += kThreads) {
      const int r = i / H, j = i - r * H;
      const float* dr = s_d + r * C;
      float a = 0.0f;
      for (int c = 0; c < C; ++c) a = fmaf(dr[c], s_w2[j * C + c], a);
      s_dh[i] = a * ActGrad(s_h[i], act);
    }
    for (int i = t; i < n2 + C; i += kThreads) {  // dW2 = h^T d, db2 = sum d
      float a = 0.0f;
      if (i < n2) {
        const int j = i / C, c = i - j * C;
        for (int r = 0; r < nr; ++r) a = fmaf(s_h[r * H + j], s_d[r * C + c], a);
      } else {
        for (int r = 0; r < nr; ++r) a += s_d[r * C + (i - n2)];
      }
      a_w2[i] += a;  // a_b2 follows a_w2
    }
    __syncthreads();
    for (int i = t; i < n1 + H; i += kThreads) {  // dW1 = x^T dh, db1 = sum dh
      float a = 0.0f;
      if (i < n1) {
        const int k = i / H, j = i - k * H;
        for (int r = 0; r < nr; ++r) a = fmaf(s_x[r * IN + k], s_dh[r * H + j], a);
      } else {
        for (int r = 0; r < nr; ++r) a += s_dh[r * H + (i - n1)];
      }
      a_w1[i] += a;  // a_b1 follows a_w1
    }
  }
  __syncthreads();

  // The block's share of the loss.
  for (int o = 16; o > 0; o >>= 1) loss_acc += __shfl_down_sync(0xffffffffu, loss_acc, o);
  if ((t & 31) == 0) s_red[t >> 5] = loss_acc;
  __syncthreads();
  if (t == 0) {
    float s = 0.0f;
    for (int w = 0; w < kThreads / 32; ++w) s += s_red[w];
    if (atomic_out) atomicAdd(loss + p, s * inv_b);
    else loss[p] = s * inv_b;
  }
  if (!grads) return;
  float* dst[4] = {g_w1 + size_t(p) * n1, g_b1 + size_t(p) * H, g_w2 + size_t(p) * n2,
                   g_b2 + size_t(p) * C};
  const int len[4] = {n1, H, n2, C};
  const float* acc = a_w1;
  for (int k = 0; k < 4; ++k) {
    for (int i = t; i < len[k]; i += kThreads) {
      if (atomic_out) atomicAdd(dst[k] + i, acc[i]);
      else dst[k][i] = acc[i];
    }
    acc += len[k];
  }
}

int SmCount() {
  static std::atomic<int> cached{0};
  int n = cached.load();
  if (n > 0) return n;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
    n = 132;
  cached.store(n);
  return n;
}

}  // namespace

int64_t MlpTaskSharedBytes(const MlpTaskShape& shape) {
  if (shape.P <= 0 || shape.G <= 0 || shape.B <= 0 || shape.in <= 0 || shape.hidden <= 0 ||
      shape.classes <= 0)
    return -1;
  Layout l = LayoutFor(shape);
  return l.floats < 0 ? -1 : l.floats * 4;
}

int MlpTaskSlices(const MlpTaskShape& shape) {
  // About two blocks an SM, each with at least 16 rows.
  const int64_t want = (2 * int64_t(SmCount()) + shape.P - 1) / std::max<int64_t>(1, shape.P);
  return int(std::max<int64_t>(1, std::min<int64_t>(want, shape.B / 16)));
}

const char* MlpTaskLossAndGradCuda(const MlpTaskShape& s, int slices, MlpActivation act,
                                   const float* x, const int64_t* y, const float* w1,
                                   const float* b1, const float* w2, const float* b2, float* loss,
                                   float* g_w1, float* g_b1, float* g_w2, float* g_b2,
                                   CUstream_st* stream) {
  Layout l = LayoutFor(s);
  if (l.floats < 0) return "MlpTaskLossAndGradCuda: the MLP does not fit one block";
  if (s.P % s.G != 0) return "MlpTaskLossAndGradCuda: particles are not a multiple of groups";
  if (slices < 1 || slices > s.B) return "MlpTaskLossAndGradCuda: bad slice count";
  const int64_t bytes = l.floats * 4;
  static std::atomic<int64_t> opted{48 * 1024};
  if (bytes > opted.load()) {
    if (cudaFuncSetAttribute(MlpTaskKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             int(kMaxSharedBytes)) != cudaSuccess)
      return "MlpTaskLossAndGradCuda: cudaFuncSetAttribute failed";
    opted.store(kMaxSharedBytes);
  }
  const int rows_a_slice = int((s.B + slices - 1) / slices);
  dim3 grid(unsigned(s.P), unsigned(slices));
  MlpTaskKernel<<<grid, kThreads, size_t(bytes), stream>>>(
      int(s.G), int(s.B), int(s.in), int(s.hidden), int(s.classes), rows_a_slice, l.rows,
      int(act), slices > 1, x, y, w1, b1, w2, b2, loss, g_w1, g_b1, g_w2, g_b2);
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

}  // namespace kernels
}  // namespace lopt
