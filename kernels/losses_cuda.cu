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

constexpr int kBcTile = 2048;  // elements a block

struct BcArgs {
  BcTensors t;
  int tile_start[kBcMaxTensors + 1];  // prefix of each tensor's tiles
};

__global__ void __launch_bounds__(kThreads)
    BehaviorCloningKernel(BcArgs a, const float* __restrict__ step, const float* __restrict__ lr,
                          const float* __restrict__ alpha_p, float beta1, float beta2, float eps,
                          float wd, float* __restrict__ bc) {
  const int p = blockIdx.y;
  const int tile = blockIdx.x;
  int j = 0;
  while (j + 1 < a.t.count && tile >= a.tile_start[j + 1]) ++j;
  const int64_t n = a.t.n[j];
  const int64_t e0 = int64_t(tile - a.tile_start[j]) * kBcTile;
  const int64_t e1 = min(n, e0 + kBcTile);
  const size_t base = size_t(p) * size_t(n);
  // Bias corrections in double, as common/tasks/adam.cc (1 - beta^t cancels at small t).
  const double t = double(step[p]) + 1.0;
  const float bc1 = float(1.0 - pow(double(beta1), t));
  const float bc2s = float(sqrt(1.0 - pow(double(beta2), t)));
  const float lrp = lr[p], alpha = *alpha_p;
  const float* param = a.t.param[j] + base;
  const float* grad = a.t.grad[j] + base;
  float* m = a.t.m[j] + base;
  float* v = a.t.v[j] + base;
  float* u = a.t.u[j] + base;
  float acc = 0.0f;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
    const float g = grad[e];
    const float mm = beta1 * m[e] + (1.0f - beta1) * g;
    const float vv = beta2 * v[e] + (1.0f - beta2) * g * g;
    m[e] = mm;
    v[e] = vv;
    float uh = mm / bc1 / (sqrtf(vv) / bc2s + eps);
    if (wd != 0.0f) uh += wd * param[e];
    uh *= lrp;
    const float ul = u[e];
    const float d = ul - uh;
    acc += d * d;
    u[e] = uh * (1.0f - alpha) + ul * alpha;
  }
  __shared__ float shared[kThreads / 32];
  float total = BlockSum(acc, shared);
  if (threadIdx.x == 0) atomicAdd(bc + p, total);
}

__global__ void __launch_bounds__(kThreads)
    BcMetaLossesKernel(const float* __restrict__ task, const float* __restrict__ bcl, int T,
                       float max_loss, const float* __restrict__ alpha_p,
                       const bool* __restrict__ reset, double* diff_pre, double* diff_post,
                       double* sum_meta, double* sum_task, double* sum_bc) {
  auto norm = [&](float l) { return isfinite(l) ? fminf(l, max_loss) : max_loss; };
  const float alpha = *alpha_p;
  double am = 0, at = 0, ab = 0;
  for (int i = threadIdx.x; i < T; i += blockDim.x) {
    const float ta = norm(task[i]), tb = norm(task[T + i]);
    const float ba = norm(bcl[i]), bb = norm(bcl[T + i]);
    const float ma = (1.0f - alpha) * ba + alpha * ta, mb = (1.0f - alpha) * bb + alpha * tb;
    const double d = double(ma) - double(mb);
    if (reset[i]) diff_post[i] += d;
    else diff_pre[i] += d;
    am += double(ma) + double(mb);
    at += double(ta) + double(tb);
    ab += double(ba) + double(bb);
  }
  __shared__ double shared[kThreads / 32];
  am = BlockSum(am, shared);
  __syncthreads();
  at = BlockSum(at, shared);
  __syncthreads();
  ab = BlockSum(ab, shared);
  if (threadIdx.x == 0) {
    *sum_meta += am / double(2 * T);
    *sum_task += at / double(2 * T);
    *sum_bc += ab / double(2 * T);
  }
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

const char* BehaviorCloningCuda(const BcTensors& t, int64_t P, const float* step, const float* lr,
                                const float* alpha, float beta1, float beta2, float eps,
                                float weight_decay, float* bc, CUstream_st* stream) {
  if (t.count < 1 || t.count > kBcMaxTensors) return "BehaviorCloningCuda: bad tensor count";
  if (P == 0) return "";
  BcArgs a;
  a.t = t;
  a.tile_start[0] = 0;
  for (int j = 0; j < t.count; ++j)
    a.tile_start[j + 1] = a.tile_start[j] + int((t.n[j] + kBcTile - 1) / kBcTile);
  if (a.tile_start[t.count] == 0) return "";
  dim3 grid(unsigned(a.tile_start[t.count]), unsigned(P));
  BehaviorCloningKernel<<<grid, kThreads, 0, stream>>>(a, step, lr, alpha, beta1, beta2, eps,
                                                       weight_decay, bc);
  return Check(cudaGetLastError());
}

const char* BcMetaLossesCuda(const float* task_losses, const float* bc_losses, int64_t T,
                             float max_loss, const float* alpha, const bool* reset,
                             double* diff_pre, double* diff_post, double* sum_meta,
                             double* sum_task, double* sum_bc, CUstream_st* stream) {
  if (T == 0) return "";
  BcMetaLossesKernel<<<1, kThreads, 0, stream>>>(task_losses, bc_losses, int(T), max_loss, alpha,
                                                 reset, diff_pre, diff_post, sum_meta, sum_task,
                                                 sum_bc);
  return Check(cudaGetLastError());
}

}  // namespace kernels
}  // namespace lopt
