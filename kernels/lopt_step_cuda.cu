// Fused CUDA small_fc_lopt step: see kernels/lopt_step_cuda.h for the
// launches. No LibTorch here: raw pointers and the CUDA runtime only.
#include "kernels/lopt_step_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

namespace lopt {
namespace kernels {
namespace {

constexpr int kF = 28;   // per-element features
constexpr int kNT = 11;  // time features
constexpr int kH = 32;   // hidden size the kernel is written for
constexpr int kThreads = 256;
constexpr int kAccTile = 8192;    // elements per block, accumulate
constexpr int kStatTile = 4096;   // elements per block, statistics
constexpr int kMlpWarpElems = 64;  // elements per warp iteration, FP32 MLP (2 per lane)
constexpr int kMlpTile = 2048;    // elements per block, MLP
constexpr int kWindow = 4096;     // shared-memory window of table sums, per axis

// The decays as the reference applies them: acc * beta + x * (1 - beta) with
// beta and 1 - beta in float.
__constant__ float kMomB[3] = {0.9f, 0.99f, 0.999f};
__constant__ float kTau[kNT] = {1.f, 3.f, 10.f, 30.f, 100.f, 300.f, 1e3f, 3e3f, 1e4f, 3e4f, 1e5f};

struct Axis {
  int len;
  int inner;
  int entries;  // outer * inner
};

// One tensor as the kernels see it (the table copied to the device).
struct DevTensor {
  const float* g;
  const float* p;
  float* mom;
  float* rms;
  float* fac_a;
  float* fac_b;
  float* u;
  float* row_sum;     // [P, rows] scratch, zeroed
  float* col_sum;     // [P, cols] scratch, zeroed
  float* row_factor;  // [P, rows, 3] scratch
  float* col_factor;  // [P, cols, 3] scratch
  int n;
  int factored;
  Axis row;  // reduction over d0: v_row entries
  Axis col;  // reduction over d1: v_col entries
  int mean_outer, mean_len, mean_inner;  // v_row viewed for its mean over reduced d1
};

struct DevArgs {
  const DevTensor* t;  // [J]
  const int* off_acc;  // [J + 1] tile offsets within a particle, per launch
  const int* off_stat;
  const int* off_mlp;
  const int* off_tab;
  double* stats;       // [P, J, 28] sums of squares, zeroed
  const float* theta;
  long long theta_stride;
  const float* step;
  int P;
  int J;
  float step_mult;
  float exp_mult;
  // Elements per block of each launch: kAccTile, kStatTile, kMlpTile, halved
  // (to 256, 256, 512) while a launch would have fewer than two blocks an SM
  // (small optimizees: 8x8 MLP x 16 particles ran 64 MLP blocks on 132 SMs).
  int acc_tile;
  int stat_tile;
  int mlp_tile;
};

// blockIdx.x -> particle, tensor, tile within the tensor.
__device__ __forceinline__ void Decode(const int* off, int J, int* p, int* j, int* tile) {
  const int per = __ldg(off + J);
  const int b = int(blockIdx.x);
  *p = b / per;
  const int l = b - *p * per;
  int lo = 0, hi = J;  // off[lo] <= l < off[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (__ldg(off + mid) <= l) lo = mid;
    else hi = mid;
  }
  *j = lo;
  *tile = l - __ldg(off + lo);
}

__device__ __forceinline__ int EntryOf(int e, const Axis& a) {
  const int span = a.len * a.inner;
  const int o = e / span;
  return o * a.inner + (e - o * span) % a.inner;
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------------------
// Launch 1: accumulators.
// Table sums of one axis for the block's elements: a window of entries in
// shared memory when the block's elements touch few enough, else global
// atomics. inner == 1 (the reduced axis is the last): consecutive lanes share
// entries, summed over the warp first.
struct Window {
  int base;
  int size;  // 0: global atomics
};

__device__ __forceinline__ Window WindowOf(const Axis& a, int e0, int e1) {
  const int span = a.len * a.inner;
  const int o0 = e0 / span, o1 = (e1 - 1) / span;
  const long long size = (long long)(o1 - o0 + 1) * a.inner;
  Window w;
  w.base = o0 * a.inner;
  w.size = size <= kWindow ? int(size) : 0;
  return w;
}

__device__ __forceinline__ void AddEntry(float* smem, const Window& w, float* global, int entry,
                                         float v, bool valid, bool inner_one) {
  if (inner_one) {
    // Entries of consecutive lanes are non-decreasing: segmented suffix sums.
    const int lane = threadIdx.x & 31;
    const int key = valid ? entry : -1;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float vo = __shfl_down_sync(0xffffffffu, v, o);
      const int ko = __shfl_down_sync(0xffffffffu, key, o);
      if (lane + o < 32 && ko == key) v += vo;
    }
    const int kprev = __shfl_up_sync(0xffffffffu, key, 1);
    if (!valid || (lane > 0 && kprev == key)) return;
  } else if (!valid) {
    return;
  }
  if (w.size) atomicAdd(smem + (entry - w.base), v);
  else atomicAdd(global + entry, v);
}

__global__ void __launch_bounds__(kThreads) AccumulateKernel(DevArgs a) {
  __shared__ float win_row[kWindow];
  __shared__ float win_col[kWindow];
  int p, j, tile;
  Decode(a.off_acc, a.J, &p, &j, &tile);
  const DevTensor& t = a.t[j];
  const int e0 = tile * a.acc_tile;
  const int e1 = min(t.n, e0 + a.acc_tile);
  const long long base = (long long)p * t.n;
  const float* g = t.g + base;
  const float b0 = kMomB[0], b1 = kMomB[1], b2 = kMomB[2];
  const float ob[3] = {1.0f - b0, 1.0f - b1, 1.0f - b2};
  const float bb[3] = {b0, b1, b2};

  // Momenta (and v of unfactored tensors) as flat [3n] arrays: coalesced.
  {
    float* mom = t.mom + 3 * base;
    float* v = t.factored ? nullptr : t.fac_a + 3 * base;
    for (int f = 3 * e0 + threadIdx.x; f < 3 * e1; f += kThreads) {
      const int e = f / 3, k = f - 3 * e;
      const float gi = __ldg(g + e);
      const float beta = k == 0 ? bb[0] : (k == 1 ? bb[1] : bb[2]);
      const float omb = k == 0 ? ob[0] : (k == 1 ? ob[1] : ob[2]);
      mom[f] = mom[f] * beta + gi * omb;
      if (v) v[f] = v[f] * beta + (gi * gi + 1e-30f) * omb;
    }
  }
  const float rb = 0.999f, orb = 1.0f - rb;  // 1 - float32(0.999), as the reference
  float* rms = t.rms + base;
  if (!t.factored) {
    for (int e = e0 + threadIdx.x; e < e1; e += kThreads) {
      const float gi = __ldg(g + e);
      rms[e] = rms[e] * rb + gi * gi * orb;
    }
    return;
  }
  const Window wr = WindowOf(t.row, e0, e1), wc = WindowOf(t.col, e0, e1);
  for (int i = threadIdx.x; i < wr.size; i += kThreads) win_row[i] = 0.0f;
  for (int i = threadIdx.x; i < wc.size; i += kThreads) win_col[i] = 0.0f;
  __syncthreads();
  float* row_sum = t.row_sum + (long long)p * t.row.entries;
  float* col_sum = t.col_sum + (long long)p * t.col.entries;
  const bool row_one = t.row.inner == 1, col_one = t.col.inner == 1;
  // Every lane of a warp iterates alike (the warp reductions need them all).
  for (int e_base = e0; e_base < e1; e_base += kThreads) {
    const int e = e_base + threadIdx.x;
    const bool valid = e < e1;
    float g2 = 0.0f;
    if (valid) {
      const float gi = __ldg(g + e);
      rms[e] = rms[e] * rb + gi * gi * orb;
      g2 = gi * gi + 1e-30f;
    }
    const int ee = valid ? e : e0;
    AddEntry(win_row, wr, row_sum, EntryOf(ee, t.row), g2, valid, row_one);
    AddEntry(win_col, wc, col_sum, EntryOf(ee, t.col), g2, valid, col_one);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < wr.size; i += kThreads)
    if (win_row[i] != 0.0f) atomicAdd(row_sum + wr.base + i, win_row[i]);
  for (int i = threadIdx.x; i < wc.size; i += kThreads)
    if (win_col[i] != 0.0f) atomicAdd(col_sum + wc.base + i, win_col[i]);
}

// ---------------------------------------------------------------------------
// Launch 2: factored tables. Warp tasks, 8 a block, spread over many blocks:
// a row task is one group of v_row entries that share a mean (v_row's axis
// that was d1), so it needs no other warp's results: it forms the new EMAs,
// their mean and row_factor; a column task is 32 entries of v_col (EMA and
// col_factor). Each task adds its entries' sums of squares of features 13..24
// (every entry counted as often as elements share it) to the statistics.
constexpr int kTableWarps = kThreads / 32;

__device__ __forceinline__ int RowTasks(const DevTensor& t) {
  return t.factored ? t.mean_outer * t.mean_inner : 0;
}
__device__ __forceinline__ int ColTasks(const DevTensor& t) {
  return t.factored ? (t.col.entries + 31) / 32 : 0;
}

__global__ void __launch_bounds__(kThreads) TablesKernel(DevArgs a) {
  int p, j, tile;
  Decode(a.off_tab, a.J, &p, &j, &tile);
  const DevTensor& t = a.t[j];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int task = tile * kTableWarps + warp;
  const int row_tasks = RowTasks(t);
  if (task >= row_tasks + ColTasks(t)) return;
  const int rows = t.row.entries, cols = t.col.entries;
  double* st = a.stats + ((long long)p * a.J + j) * kF;
  float sv[3] = {0, 0, 0}, sr[3] = {0, 0, 0};  // sums of v^2, rsqrt(v + 1e-8)^2
  int f_value, f_rsqrt;
  double times;
  if (task < row_tasks) {
    float* v_row = t.fac_a + 3LL * p * rows;
    const float* row_sum = t.row_sum + (long long)p * rows;
    float* rf = t.row_factor + 3LL * p * rows;
    const int o = task / t.mean_inner, in = task % t.mean_inner;
    const long long first = (long long)o * t.mean_len * t.mean_inner + in;
    float msum[3] = {0, 0, 0};
#pragma unroll 4
    for (int x = lane; x < t.mean_len; x += 32) {
      const long long r = first + (long long)x * t.mean_inner;
      const float mean = row_sum[r] / float(t.row.len);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const float v = v_row[3 * r + k] * kMomB[k] + mean * (1.0f - kMomB[k]);
        v_row[3 * r + k] = v;
        msum[k] += v;
        const float rs = rsqrtf(v + 1e-8f);
        sv[k] += v * v;
        sr[k] += rs * rs;
      }
    }
    float denom[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) denom[k] = WarpSum(msum[k]) / float(t.mean_len) + 1e-9f;
#pragma unroll 4
    for (int x = lane; x < t.mean_len; x += 32) {
      const long long r = first + (long long)x * t.mean_inner;
#pragma unroll
      for (int k = 0; k < 3; ++k) rf[3 * r + k] = rsqrtf(fmaxf(v_row[3 * r + k] / denom[k], 1e-9f));
    }
    f_value = 13;
    f_rsqrt = 19;
    times = double(t.n / rows);
  } else {
    float* v_col = t.fac_b + 3LL * p * cols;
    const float* col_sum = t.col_sum + (long long)p * cols;
    float* cf = t.col_factor + 3LL * p * cols;
    const int c = (task - row_tasks) * 32 + lane;
    if (c < cols) {
      const float mean = col_sum[c] / float(t.col.len);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const float v = v_col[3 * c + k] * kMomB[k] + mean * (1.0f - kMomB[k]);
        v_col[3 * c + k] = v;
        cf[3 * c + k] = rsqrtf(fmaxf(v, 1e-9f));
        const float rs = rsqrtf(v + 1e-8f);
        sv[k] += v * v;
        sr[k] += rs * rs;
      }
    }
    f_value = 16;
    f_rsqrt = 22;
    times = double(t.n / cols);
  }
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const float a_v = WarpSum(sv[k]), a_r = WarpSum(sr[k]);
    if (lane == 0) {
      atomicAdd(st + f_value + k, times * double(a_v));
      atomicAdd(st + f_rsqrt + k, times * double(a_r));
    }
  }
}

// ---------------------------------------------------------------------------
// Features of one element (REFERENCE.md's order; SmallFcLopt::RawFeatures'
// float operations). kStats: only those the statistics pass sums per element.
template <bool kFactored>
__device__ __forceinline__ void Features(const DevTensor& t, int p, int e, float* x) {
  const long long ie = (long long)p * t.n + e;
  const float g = __ldg(t.g + ie);
  const float rms = t.rms[ie];
  const float m0 = t.mom[3 * ie], m1 = t.mom[3 * ie + 1], m2 = t.mom[3 * ie + 2];
  const float m[3] = {m0, m1, m2};
  const float rr = rsqrtf(rms + 1e-6f);
  x[0] = g;
  x[1] = __ldg(t.p + ie);
  x[5] = rms;
  x[9] = rr;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    x[2 + k] = m[k];
    x[6 + k] = m[k] * rr;
  }
  if (kFactored) {
    const long long r = (long long)p * t.row.entries + EntryOf(e, t.row);
    const long long c = (long long)p * t.col.entries + EntryOf(e, t.col);
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      const float row = t.fac_a[3 * r + k], col = t.fac_b[3 * c + k];
      const float fac = t.row_factor[3 * r + k] * t.col_factor[3 * c + k];
      x[10 + k] = g * fac;
      x[13 + k] = row;
      x[16 + k] = col;
      x[19 + k] = rsqrtf(row + 1e-8f);
      x[22 + k] = rsqrtf(col + 1e-8f);
      x[25 + k] = m[k] * fac;
    }
  } else {
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      const float v = t.fac_a[3 * ie + k];
      const float rv = rsqrtf(v + 1e-8f);
      x[10 + k] = g * rsqrtf(fmaxf(v + 1e-9f, 1e-9f));
      x[13 + k] = v;
      x[16 + k] = v;
      x[19 + k] = rv;
      x[22 + k] = rv;
      x[25 + k] = m[k] * rsqrtf(v + 1e-6f);
    }
  }
}

// ---------------------------------------------------------------------------
// Launch 3: sums of squares of the element features.
template <bool kFactored>
__device__ __forceinline__ void StatsTile(const DevArgs& a, const DevTensor& t, int p, int j,
                                          int e0, int e1) {
  __shared__ float red[kThreads / 32][kF];
  float acc[kF];
#pragma unroll
  for (int i = 0; i < kF; ++i) acc[i] = 0.0f;
  for (int e = e0 + threadIdx.x; e < e1; e += kThreads) {
    float x[kF];
    Features<kFactored>(t, p, e, x);
#pragma unroll
    for (int i = 0; i < kF; ++i) acc[i] += x[i] * x[i];
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < kF; ++i) {
    const float s = WarpSum(acc[i]);
    if (lane == 0) red[warp][i] = s;
  }
  __syncthreads();
  if (threadIdx.x < kF) {
    const int i = threadIdx.x;
    if (kFactored && i >= 13 && i < 25) return;  // summed over the tables
    double s = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += double(red[w][i]);
    atomicAdd(a.stats + ((long long)p * a.J + j) * kF + i, s);
  }
}

__global__ void __launch_bounds__(kThreads, 4) StatsKernel(DevArgs a) {
  int p, j, tile;
  Decode(a.off_stat, a.J, &p, &j, &tile);
  const DevTensor& t = a.t[j];
  const int e0 = tile * a.stat_tile;
  const int e1 = min(t.n, e0 + a.stat_tile);
  if (t.factored) StatsTile<true>(a, t, p, j, e0, e1);
  else StatsTile<false>(a, t, p, j, e0, e1);
}

// ---------------------------------------------------------------------------
// Launch 4: normalised features -> MLP -> u.
struct MlpSmem {
  float4 w0[kF][kH / 4];   // w0[i][h], rows 0..27 (the time rows are in bias0)
  float4 w1t[kH][kH / 4];  // w1 transposed: w1t[k][j] = w1[j][k]
  float2 w2[kH];           // w2[k] = (w2[k][0], w2[k][1])
  float4 bias0[kH / 4];    // b0 + time features @ w0[28:39]
  float b1[kH];
  float b2[2];
  float scale[kF];         // rsqrt(mean x^2 + 1e-5)
};

__device__ void LoadMlp(const DevArgs& a, const DevTensor& t, int p, int j, MlpSmem* s) {
  const float* th = a.theta + (long long)p * a.theta_stride;
  float* w0 = reinterpret_cast<float*>(s->w0);
  for (int i = threadIdx.x; i < kF * kH; i += kThreads) w0[i] = th[i];
  const float* w1 = th + 40 * kH;
  float* w1t = reinterpret_cast<float*>(s->w1t);
  for (int i = threadIdx.x; i < kH * kH; i += kThreads) {
    const int jj = i / kH, k = i % kH;  // w1[jj][k]
    w1t[k * kH + jj] = w1[i];
  }
  const float* b1 = w1 + kH * kH;
  const float* w2 = b1 + kH;
  if (threadIdx.x < kH) {
    s->b1[threadIdx.x] = b1[threadIdx.x];
    s->w2[threadIdx.x] = make_float2(w2[2 * threadIdx.x], w2[2 * threadIdx.x + 1]);
    // Time features folded into the first bias.
    const float step = a.step[p];
    float acc = th[39 * kH + threadIdx.x];  // b0
#pragma unroll
    for (int i = 0; i < kNT; ++i) {
      const float tf = tanhf(step / kTau[i] - 1.0f);
      acc += tf * th[(kF + i) * kH + threadIdx.x];
    }
    reinterpret_cast<float*>(s->bias0)[threadIdx.x] = acc;
  }
  if (threadIdx.x < 2) s->b2[threadIdx.x] = w2[2 * kH + threadIdx.x];
  if (threadIdx.x >= 64 && threadIdx.x < 64 + kF) {
    const int i = threadIdx.x - 64;
    const double sum = a.stats[((long long)p * a.J + j) * kF + i];
    const float mean = float(sum / double(max(t.n, 1)));
    s->scale[i] = rsqrtf(mean + 1e-5f);
  }
}

__device__ __forceinline__ float Update(float d, float m, float exp_mult, float step_mult) {
  return d * expf(m * exp_mult) * step_mult;
}

// FP32 MLP: each lane runs two elements; weights are broadcast from shared
// memory, 16 bytes a load, each used for two elements.
template <bool kFactored>
__device__ __forceinline__ void MlpFp32(const DevArgs& a, const DevTensor& t, int p, int e0,
                                        int e1, const MlpSmem& s) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int wb = e0 + warp * kMlpWarpElems; wb < e1; wb += (kThreads / 32) * kMlpWarpElems) {
    const int ea = wb + lane, eb = wb + 32 + lane;
    float xa[kF], xb[kF];
    Features<kFactored>(t, p, min(ea, e1 - 1), xa);
    Features<kFactored>(t, p, min(eb, e1 - 1), xb);
    float ha[kH], hb[kH];
#pragma unroll
    for (int h4 = 0; h4 < kH / 4; ++h4) {
      const float4 b = s.bias0[h4];
      ha[4 * h4] = hb[4 * h4] = b.x;
      ha[4 * h4 + 1] = hb[4 * h4 + 1] = b.y;
      ha[4 * h4 + 2] = hb[4 * h4 + 2] = b.z;
      ha[4 * h4 + 3] = hb[4 * h4 + 3] = b.w;
    }
#pragma unroll
    for (int i = 0; i < kF; ++i) {
      const float sc = s.scale[i];
      const float va = xa[i] * sc, vb = xb[i] * sc;
#pragma unroll
      for (int h4 = 0; h4 < kH / 4; ++h4) {
        const float4 w = s.w0[i][h4];
        ha[4 * h4] = fmaf(w.x, va, ha[4 * h4]);
        hb[4 * h4] = fmaf(w.x, vb, hb[4 * h4]);
        ha[4 * h4 + 1] = fmaf(w.y, va, ha[4 * h4 + 1]);
        hb[4 * h4 + 1] = fmaf(w.y, vb, hb[4 * h4 + 1]);
        ha[4 * h4 + 2] = fmaf(w.z, va, ha[4 * h4 + 2]);
        hb[4 * h4 + 2] = fmaf(w.z, vb, hb[4 * h4 + 2]);
        ha[4 * h4 + 3] = fmaf(w.w, va, ha[4 * h4 + 3]);
        hb[4 * h4 + 3] = fmaf(w.w, vb, hb[4 * h4 + 3]);
      }
    }
#pragma unroll
    for (int h = 0; h < kH; ++h) {
      ha[h] = fmaxf(ha[h], 0.0f);
      hb[h] = fmaxf(hb[h], 0.0f);
    }
    float da = s.b2[0], ma = s.b2[1], db = s.b2[0], mb = s.b2[1];
#pragma unroll
    for (int k = 0; k < kH; ++k) {
      float za = s.b1[k], zb = s.b1[k];
#pragma unroll
      for (int j4 = 0; j4 < kH / 4; ++j4) {
        const float4 w = s.w1t[k][j4];
        za = fmaf(w.x, ha[4 * j4], za);
        zb = fmaf(w.x, hb[4 * j4], zb);
        za = fmaf(w.y, ha[4 * j4 + 1], za);
        zb = fmaf(w.y, hb[4 * j4 + 1], zb);
        za = fmaf(w.z, ha[4 * j4 + 2], za);
        zb = fmaf(w.z, hb[4 * j4 + 2], zb);
        za = fmaf(w.w, ha[4 * j4 + 3], za);
        zb = fmaf(w.w, hb[4 * j4 + 3], zb);
      }
      za = fmaxf(za, 0.0f);
      zb = fmaxf(zb, 0.0f);
      const float2 w = s.w2[k];
      da = fmaf(w.x, za, da);
      ma = fmaf(w.y, za, ma);
      db = fmaf(w.x, zb, db);
      mb = fmaf(w.y, zb, mb);
    }
    float* u = t.u + (long long)p * t.n;
    if (ea < e1) u[ea] = Update(da, ma, a.exp_mult, a.step_mult);
    if (eb < e1) u[eb] = Update(db, mb, a.exp_mult, a.step_mult);
  }
}

// ---- TF32 tensor-core MLP --------------------------------------------------
// A warp runs 32 elements an iteration as two m16n8k8 row tiles. The lane of
// element e writes its normalised features to the warp's shared tile; A
// fragments are read from there. Layer 1's accumulators become layer 2's A
// fragments in registers: hidden unit 8 nt + 2 t (+1) sits in k slot t (t+4)
// of k-step nt, and B's rows are loaded in the same permuted order.
constexpr int kXStride = 36;  // floats per element row: 32 + 4 (no bank conflicts)

// Round to TF32 (nearest, ties away from zero, as cvt.rna.tf32.f32) with one
// integer add: the tensor cores ignore the 13 low mantissa bits. (cvt.rna
// costs several instructions on sm_90; CUTLASS's round_half_ulp_truncate.)
__device__ __forceinline__ uint32_t Tf32(float x) { return __float_as_uint(x) + 0x1000u; }

__device__ __forceinline__ void Mma(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <bool kFactored>
__device__ __forceinline__ void MlpTf32(const DevArgs& a, const DevTensor& t, int p, int e0,
                                        int e1, const MlpSmem& s, float* xs_all) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gq = lane >> 2, tq = lane & 3;
  float* xs = xs_all + warp * 32 * kXStride;
  const float* w0 = reinterpret_cast<const float*>(s.w0);
  const float* w1t = reinterpret_cast<const float*>(s.w1t);
  const float* bias0 = reinterpret_cast<const float*>(s.bias0);
  // B fragments, held for the whole tile.
  uint32_t B0[4][4][2], B1[4][4][2], B2[4][2];
#pragma unroll
  for (int ks = 0; ks < 4; ++ks) {
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      const int k0 = ks * 8 + tq, k1 = k0 + 4, n = nt * 8 + gq;
      B0[ks][nt][0] = Tf32(k0 < kF ? w0[k0 * kH + n] : 0.0f);
      B0[ks][nt][1] = Tf32(k1 < kF ? w0[k1 * kH + n] : 0.0f);
      // Layer 2, permuted k: slot t <- hidden 8 ks + 2t, slot t + 4 <- 8 ks + 2t + 1.
      const int h0 = ks * 8 + 2 * tq, h1 = h0 + 1;
      B1[ks][nt][0] = Tf32(w1t[n * kH + h0]);
      B1[ks][nt][1] = Tf32(w1t[n * kH + h1]);
    }
    const int h0 = ks * 8 + 2 * tq, h1 = h0 + 1;
    B2[ks][0] = Tf32(gq < 2 ? (gq == 0 ? s.w2[h0].x : s.w2[h0].y) : 0.0f);
    B2[ks][1] = Tf32(gq < 2 ? (gq == 0 ? s.w2[h1].x : s.w2[h1].y) : 0.0f);
  }
  float* u = t.u + (long long)p * t.n;
  for (int wb = e0 + warp * 32; wb < e1; wb += (kThreads / 32) * 32) {
    {
      const int e = wb + lane;
      float x[kF];
      Features<kFactored>(t, p, min(e, e1 - 1), x);
      float* row = xs + lane * kXStride;
#pragma unroll
      for (int i = 0; i < kF; ++i) row[i] = x[i] * s.scale[i];
#pragma unroll
      for (int i = kF; i < 32; ++i) row[i] = 0.0f;
    }
    __syncwarp();
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const float* xr0 = xs + (mt * 16 + gq) * kXStride;
      const float* xr1 = xr0 + 8 * kXStride;
      float c1[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const float bl = bias0[nt * 8 + 2 * tq], bh = bias0[nt * 8 + 2 * tq + 1];
        c1[nt][0] = bl;
        c1[nt][1] = bh;
        c1[nt][2] = bl;
        c1[nt][3] = bh;
      }
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t A[4] = {Tf32(xr0[ks * 8 + tq]), Tf32(xr1[ks * 8 + tq]),
                         Tf32(xr0[ks * 8 + tq + 4]), Tf32(xr1[ks * 8 + tq + 4])};
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) Mma(c1[nt], A, B0[ks][nt][0], B0[ks][nt][1]);
      }
      float c2[4][4];
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const float bl = s.b1[nt * 8 + 2 * tq], bh = s.b1[nt * 8 + 2 * tq + 1];
        c2[nt][0] = bl;
        c2[nt][1] = bh;
        c2[nt][2] = bl;
        c2[nt][3] = bh;
      }
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t A[4] = {Tf32(fmaxf(c1[ks][0], 0.f)), Tf32(fmaxf(c1[ks][2], 0.f)),
                         Tf32(fmaxf(c1[ks][1], 0.f)), Tf32(fmaxf(c1[ks][3], 0.f))};
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) Mma(c2[nt], A, B1[ks][nt][0], B1[ks][nt][1]);
      }
      float c3[4] = {s.b2[0], s.b2[1], s.b2[0], s.b2[1]};
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        uint32_t A[4] = {Tf32(fmaxf(c2[ks][0], 0.f)), Tf32(fmaxf(c2[ks][2], 0.f)),
                         Tf32(fmaxf(c2[ks][1], 0.f)), Tf32(fmaxf(c2[ks][3], 0.f))};
        Mma(c3, A, B2[ks][0], B2[ks][1]);
      }
      if (tq == 0) {
        const int ea = wb + mt * 16 + gq, eb = ea + 8;
        if (ea < e1) u[ea] = Update(c3[0], c3[1], a.exp_mult, a.step_mult);
        if (eb < e1) u[eb] = Update(c3[2], c3[3], a.exp_mult, a.step_mult);
      }
    }
    __syncwarp();
  }
}

template <LoptCudaMlp kMode>
__global__ void __launch_bounds__(kThreads, 2) MlpKernel(DevArgs a) {
  __shared__ MlpSmem s;
  __shared__ float xs[kMode == LoptCudaMlp::kTf32 ? (kThreads / 32) * 32 * kXStride : 1];
  int p, j, tile;
  Decode(a.off_mlp, a.J, &p, &j, &tile);
  const DevTensor& t = a.t[j];
  const int e0 = tile * a.mlp_tile;
  const int e1 = min(t.n, e0 + a.mlp_tile);
  LoadMlp(a, t, p, j, &s);
  __syncthreads();
  if (kMode == LoptCudaMlp::kTf32) {
    if (t.factored) MlpTf32<true>(a, t, p, e0, e1, s, xs);
    else MlpTf32<false>(a, t, p, e0, e1, s, xs);
  } else {
    if (t.factored) MlpFp32<true>(a, t, p, e0, e1, s);
    else MlpFp32<false>(a, t, p, e0, e1, s);
  }
}

// ---------------------------------------------------------------------------
// Host side.
size_t Align(size_t x) { return (x + 255) & ~size_t(255); }

struct Layout {
  size_t table = 0, off = 0, stats = 0, sums = 0, factors = 0, total = 0;
  size_t zero_bytes = 0;  // stats + sums: zeroed each step
};

Layout LayoutOf(const LoptCudaArgs& args, const std::vector<LoptCudaTensor>& ts) {
  const size_t J = ts.size(), P = size_t(args.P);
  size_t entries = 0;
  for (const auto& t : ts)
    if (t.factored)
      entries += size_t(t.row_axis.outer * t.row_axis.inner + t.col_axis.outer * t.col_axis.inner);
  Layout l;
  l.table = 0;
  l.off = Align(J * sizeof(DevTensor));
  l.stats = l.off + Align(4 * (J + 1) * sizeof(int));
  l.sums = l.stats + Align(P * J * kF * sizeof(double));
  l.factors = l.sums + Align(P * entries * sizeof(float));
  l.total = l.factors + Align(P * entries * 3 * sizeof(float));
  l.zero_bytes = l.factors - l.stats;
  return l;
}

const char* Check(cudaError_t e) {
  if (e == cudaSuccess) return "";
  static thread_local std::string msg;
  msg = std::string("lopt CUDA step: ") + cudaGetErrorString(e);
  return msg.c_str();
}

bool TimingOn() {
  static const bool on = [] {
    const char* e = std::getenv("LOPT_CUDA_TIMING");
    return e && *e && std::strcmp(e, "0") != 0;
  }();
  return on;
}

float g_last_ms[5] = {0, 0, 0, 0, 0};

// Events between the launches of one step when TimingOn().
struct StepTimer {
  cudaEvent_t ev[6] = {};
  int n = 0;
  cudaStream_t st;
  bool on;
  StepTimer(cudaStream_t s, bool allowed) : st(s), on(allowed && TimingOn()) {
    if (!on) return;
    for (auto& e : ev) cudaEventCreate(&e);
    Mark();
  }
  void Mark() {
    if (on && n < 6) cudaEventRecord(ev[n++], st);
  }
  ~StepTimer() {
    if (!on) return;
    cudaEventSynchronize(ev[n - 1]);
    for (int i = 0; i + 1 < n && i < 5; ++i) cudaEventElapsedTime(&g_last_ms[i], ev[i], ev[i + 1]);
    for (auto& e : ev) cudaEventDestroy(e);
  }
};

}  // namespace

bool LoptStepCudaLastTimings(float ms[5]) {
  if (!TimingOn()) return false;
  for (int i = 0; i < 5; ++i) ms[i] = g_last_ms[i];
  return true;
}

size_t LoptStepCudaWorkspaceBytes(const LoptCudaArgs& args,
                                  const std::vector<LoptCudaTensor>& tensors) {
  return LayoutOf(args, tensors).total;
}

LoptCudaMlp& LoptCudaMlpSetting() {
  static LoptCudaMlp mode = [] {
    const char* e = std::getenv("LOPT_CUDA_MLP");
    if (e && std::strcmp(e, "fp32") == 0) return LoptCudaMlp::kFp32;
    return LoptCudaMlp::kTf32;
  }();
  return mode;
}

namespace {
const char* StepImpl(const LoptCudaArgs& args, const std::vector<LoptCudaTensor>& tensors,
                     void* workspace, void* table_dev, CUstream_st* stream,
                     std::vector<char>* table);
}  // namespace

const char* LoptStepCudaRaw(const LoptCudaArgs& args, const std::vector<LoptCudaTensor>& tensors,
                            void* workspace, CUstream_st* stream) {
  return StepImpl(args, tensors, workspace, workspace, stream, nullptr);
}

const char* LoptStepCudaRawPersistent(const LoptCudaArgs& args,
                                      const std::vector<LoptCudaTensor>& tensors,
                                      void* workspace, void* table_dev, CUstream_st* stream,
                                      std::vector<char>* table) {
  return StepImpl(args, tensors, workspace, table_dev, stream, table);
}

size_t LoptStepCudaTableBytes(const LoptCudaArgs& args,
                              const std::vector<LoptCudaTensor>& tensors) {
  return LayoutOf(args, tensors).stats;
}

namespace {

const char* StepImpl(const LoptCudaArgs& args, const std::vector<LoptCudaTensor>& tensors,
                     void* workspace, void* table_dev, CUstream_st* stream,
                     std::vector<char>* table) {
  const bool persistent = table != nullptr;
  if (args.H != kH) return "lopt CUDA step: only hidden size 32 is supported";
  const int J = int(tensors.size());
  const int P = int(args.P);
  if (P == 0 || J == 0) return "";
  const Layout l = LayoutOf(args, tensors);
  char* ws = static_cast<char*>(workspace);
  float* sums = reinterpret_cast<float*>(ws + l.sums);
  float* factors = reinterpret_cast<float*>(ws + l.factors);

  // Host copy of the table and the tile offsets, sent in one copy.
  std::vector<char> host(l.stats);
  DevTensor* dt = reinterpret_cast<DevTensor*>(host.data() + l.table);
  int* off = reinterpret_cast<int*>(host.data() + l.off);
  int* off_acc = off;
  int* off_stat = off + (J + 1);
  int* off_mlp = off + 2 * (J + 1);
  int* off_tab = off + 3 * (J + 1);
  off_acc[0] = off_stat[0] = off_mlp[0] = off_tab[0] = 0;
  int sms = 132, dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    sms = 132;
  auto pick_tile = [&](int tile, int min_tile) {
    auto blocks = [&](int t) {
      long long b = 0;
      for (const auto& x : tensors) b += (x.n + t - 1) / t;
      return b * P;
    };
    while (tile / 2 >= min_tile && blocks(tile) < 2LL * sms) tile /= 2;
    return tile;
  };
  const int acc_tile = pick_tile(kAccTile, 256), stat_tile = pick_tile(kStatTile, 256),
            mlp_tile = pick_tile(kMlpTile, 512);
  size_t sum_at = 0;
  for (int j = 0; j < J; ++j) {
    const LoptCudaTensor& s = tensors[j];
    if (s.n >= (int64_t(1) << 31) - kAccTile) return "lopt CUDA step: tensor too large";
    DevTensor d{};
    d.g = s.g;
    d.p = s.p;
    d.mom = s.mom;
    d.rms = s.rms;
    d.fac_a = s.fac_a;
    d.fac_b = s.fac_b;
    d.u = s.u;
    d.n = int(s.n);
    d.factored = s.factored && s.n > 0 ? 1 : 0;
    if (d.factored) {
      d.row = Axis{int(s.row_axis.len), int(s.row_axis.inner),
                   int(s.row_axis.outer * s.row_axis.inner)};
      d.col = Axis{int(s.col_axis.len), int(s.col_axis.inner),
                   int(s.col_axis.outer * s.col_axis.inner)};
      d.mean_outer = int(s.mean_axis.outer);
      d.mean_len = int(s.mean_axis.len);
      d.mean_inner = int(s.mean_axis.inner);
      d.row_sum = sums + sum_at;
      d.row_factor = factors + 3 * sum_at;
      sum_at += size_t(P) * d.row.entries;
      d.col_sum = sums + sum_at;
      d.col_factor = factors + 3 * sum_at;
      sum_at += size_t(P) * d.col.entries;
    } else {
      d.row = d.col = Axis{1, 1, 1};
    }
    dt[j] = d;
    const int n = d.n;
    off_acc[j + 1] = off_acc[j] + (n + acc_tile - 1) / acc_tile;
    off_stat[j + 1] = off_stat[j] + (n + stat_tile - 1) / stat_tile;
    off_mlp[j + 1] = off_mlp[j] + (n + mlp_tile - 1) / mlp_tile;
    int tasks = 0;
    if (d.factored)
      tasks = d.mean_outer * d.mean_inner + (d.col.entries + 31) / 32;
    off_tab[j + 1] = off_tab[j] + (tasks + kTableWarps - 1) / kTableWarps;
  }
  cudaStream_t st = stream;
  StepTimer timer(st, !persistent);
  const char* err = "";
  if (persistent) {
    *table = host;  // written to ws by the caller once the capture has ended
  } else {
    err = Check(cudaMemcpyAsync(ws, host.data(), l.stats, cudaMemcpyHostToDevice, st));
  }
  if (*err) return err;
  err = Check(cudaMemsetAsync(ws + l.stats, 0, l.zero_bytes, st));
  if (*err) return err;
  timer.Mark();

  DevArgs a;
  char* tab = static_cast<char*>(table_dev);
  a.t = reinterpret_cast<const DevTensor*>(tab + l.table);
  a.off_acc = reinterpret_cast<const int*>(tab + l.off);
  a.off_stat = a.off_acc + (J + 1);
  a.off_mlp = a.off_acc + 2 * (J + 1);
  a.off_tab = a.off_acc + 3 * (J + 1);
  a.stats = reinterpret_cast<double*>(ws + l.stats);
  a.theta = args.theta;
  a.theta_stride = args.theta_stride;
  a.step = args.step;
  a.P = P;
  a.J = J;
  a.step_mult = args.step_mult;
  a.exp_mult = args.exp_mult;
  a.acc_tile = acc_tile;
  a.stat_tile = stat_tile;
  a.mlp_tile = mlp_tile;

  auto launch_count = [&](const int* o) { return (long long)o[J] * P; };
  if (launch_count(off_acc) > 0) AccumulateKernel<<<unsigned(launch_count(off_acc)), kThreads, 0, st>>>(a);
  timer.Mark();
  if (launch_count(off_tab) > 0) TablesKernel<<<unsigned(launch_count(off_tab)), kThreads, 0, st>>>(a);
  timer.Mark();
  if (launch_count(off_stat) > 0) StatsKernel<<<unsigned(launch_count(off_stat)), kThreads, 0, st>>>(a);
  timer.Mark();
  if (launch_count(off_mlp) > 0) {
    if (args.mlp == LoptCudaMlp::kTf32)
      MlpKernel<LoptCudaMlp::kTf32><<<unsigned(launch_count(off_mlp)), kThreads, 0, st>>>(a);
    else
      MlpKernel<LoptCudaMlp::kFp32><<<unsigned(launch_count(off_mlp)), kThreads, 0, st>>>(a);
  }
  timer.Mark();
  return Check(cudaGetLastError());
}

}  // namespace

}  // namespace kernels
}  // namespace lopt
