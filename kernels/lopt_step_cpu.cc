#include "kernels/lopt_step_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <list>
#include <string>

#include <ATen/Parallel.h>
#include <torch/torch.h>

// The inner loops are plain C++ that the compiler vectorises. On x86-64 with
// GCC or Clang they are compiled three times, for AVX-512, AVX2+FMA and the
// baseline, through function target attributes (no -march flag, no
// intrinsics) and the widest the CPU supports is picked at run time; the
// binary still runs on any x86-64. Define LOPT_NO_CPU_DISPATCH to build the
// baseline only.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(LOPT_NO_CPU_DISPATCH)
#define LOPT_CPU_DISPATCH 1
#else
#define LOPT_CPU_DISPATCH 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LOPT_INLINE inline __attribute__((always_inline))
#define LOPT_RESTRICT __restrict__
#else
#define LOPT_INLINE inline
#define LOPT_RESTRICT
#endif

#if defined(__clang__)
#define LOPT_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define LOPT_UNROLL _Pragma("GCC unroll 32")
#else
#define LOPT_UNROLL
#endif

namespace lopt {
namespace kernels {
namespace {

constexpr int kF = kLoptNumFeatures;  // 28
// Elements per tile, the vectorised axis. 48 (3 AVX-512 vectors) is where
// GCC 12 keeps the accumulators in registers and broadcasts each weight from
// memory; at 16 or 32 it builds the broadcasts with shuffles, 3-4x slower.
constexpr int kT = 48;
constexpr int kBlockTiles = 6;  // tiles per work item (288 elements)
constexpr int64_t kBlock = int64_t(kT) * kBlockTiles;

// How a tile's features 10..27 are made.
enum class Mode {
  kElementwise,  // not factored: from v per element
  kFactored,     // from the row and column entries of each element
  kFactoredNoRowCol,  // pass 1: the same without 13..24 (summed over tables)
};

// Pointers to the first element of one tile's inputs: rows of 1 or 3
// floats per element.
struct TileIn {
  const float* g;
  const float* p;
  const float* rms;
  const float* mom;
  const float* row;  // kElementwise: v; else v_row of each element
  const float* col;  // v_col of each element
  const float* fac;  // row_factor * col_factor of each element
};

// Where a tile's inputs are copied when they are not contiguous in memory:
// a partial tile (zero-padded, so that every tile runs the same fixed-length
// loops) or a factored tensor's row and column entries.
struct TileStage {
  float g[kT], p[kT], rms[kT], mom[3 * kT], row[3 * kT], col[3 * kT], fac[3 * kT];
};

// Elements [e0, e0 + ne) of particle p, ne <= kT.
template <Mode kMode>
LOPT_INLINE TileIn TileAt(const LoptStepCpuTensor& t, int64_t p, int64_t e0, int ne,
                          TileStage* stage) {
  const int64_t base = p * t.n + e0;
  TileIn in{t.g + base, t.p + base, t.rms + base, t.mom + 3 * base, nullptr, nullptr, nullptr};
  if (ne < kT) {
    std::memset(stage, 0, sizeof(*stage));
    std::memcpy(stage->g, in.g, ne * sizeof(float));
    std::memcpy(stage->p, in.p, ne * sizeof(float));
    std::memcpy(stage->rms, in.rms, ne * sizeof(float));
    std::memcpy(stage->mom, in.mom, 3 * ne * sizeof(float));
    in.g = stage->g;
    in.p = stage->p;
    in.rms = stage->rms;
    in.mom = stage->mom;
  }
  if (kMode == Mode::kElementwise) {
    in.row = t.v + 3 * base;
    if (ne < kT) {
      std::memcpy(stage->row, in.row, 3 * ne * sizeof(float));
      in.row = stage->row;
    }
    return in;
  }
  // Gather the row and column entries; fac = row_factor * col_factor, the
  // product torch broadcasts in RawFeatures.
  const int32_t* ri = t.row_index + e0;
  const int32_t* ci = t.col_index + e0;
  const float* vr = t.v_row + 3 * p * t.rows;
  const float* fr = t.row_factor + 3 * p * t.rows;
  const float* vc = t.v_col + 3 * p * t.cols;
  const float* fc = t.col_factor + 3 * p * t.cols;
  for (int e = 0; e < ne; ++e) {
    const int64_t r = 3 * int64_t(ri[e]), c = 3 * int64_t(ci[e]);
    LOPT_UNROLL
    for (int k = 0; k < 3; ++k) {
      if (kMode == Mode::kFactored) {
        stage->row[3 * e + k] = vr[r + k];
        stage->col[3 * e + k] = vc[c + k];
      }
      stage->fac[3 * e + k] = fr[r + k] * fc[c + k];
    }
  }
  in.row = stage->row;
  in.col = stage->col;
  in.fac = stage->fac;
  return in;
}

// The 28 raw features of kT elements, x[i * kT + e], in REFERENCE.md's order
// (see SmallFcLopt::RawFeatures); the same float operations, so the same
// values. kFactoredNoRowCol leaves out 13..24.
template <Mode kMode>
LOPT_INLINE void TileFeatures(const TileIn& in, float* LOPT_RESTRICT x) {
  LOPT_UNROLL
  for (int e = 0; e < kT; ++e) {
    const float g = in.g[e], rms = in.rms[e];
    const float rr = 1.0f / std::sqrt(rms + 1e-6f);
    x[0 * kT + e] = g;
    x[1 * kT + e] = in.p[e];
    x[5 * kT + e] = rms;
    x[9 * kT + e] = rr;
    LOPT_UNROLL
    for (int c = 0; c < 3; ++c) {
      const float m = in.mom[3 * e + c];
      x[(2 + c) * kT + e] = m;
      x[(6 + c) * kT + e] = m * rr;
      if (kMode == Mode::kElementwise) {
        const float v = in.row[3 * e + c];
        const float rv = 1.0f / std::sqrt(v + 1e-8f);
        x[(10 + c) * kT + e] = g * (1.0f / std::sqrt(std::max(v + 1e-9f, 1e-9f)));
        x[(13 + c) * kT + e] = v;
        x[(16 + c) * kT + e] = v;
        x[(19 + c) * kT + e] = rv;
        x[(22 + c) * kT + e] = rv;
        x[(25 + c) * kT + e] = m * (1.0f / std::sqrt(v + 1e-6f));
      } else {
        const float fac = in.fac[3 * e + c];
        x[(10 + c) * kT + e] = g * fac;
        if (kMode == Mode::kFactored) {
          const float row = in.row[3 * e + c], col = in.col[3 * e + c];
          x[(13 + c) * kT + e] = row;
          x[(16 + c) * kT + e] = col;
          x[(19 + c) * kT + e] = 1.0f / std::sqrt(row + 1e-8f);
          x[(22 + c) * kT + e] = 1.0f / std::sqrt(col + 1e-8f);
        }
        x[(25 + c) * kT + e] = m * fac;
      }
    }
  }
}

// y[kk][e] = act(b[kk] + sum_i w[i * ldw + kk] * x[i][e]) for kk < KB: KB
// output rows of a dense layer over one tile, accumulators in registers.
template <int KB, bool kRelu>
LOPT_INLINE void DenseBlock(const float* LOPT_RESTRICT x, int I, const float* LOPT_RESTRICT w,
                            int ldw, const float* LOPT_RESTRICT b, float* LOPT_RESTRICT y) {
  float acc[KB][kT];
  LOPT_UNROLL
  for (int kk = 0; kk < KB; ++kk) {
    LOPT_UNROLL
    for (int e = 0; e < kT; ++e) acc[kk][e] = b[kk];
  }
  for (int i = 0; i < I; ++i) {
    const float* xi = x + i * kT;
    const float* wi = w + int64_t(i) * ldw;
    LOPT_UNROLL
    for (int kk = 0; kk < KB; ++kk) {
      const float wv = wi[kk];
      LOPT_UNROLL
      for (int e = 0; e < kT; ++e) acc[kk][e] += wv * xi[e];
    }
  }
  LOPT_UNROLL
  for (int kk = 0; kk < KB; ++kk) {
    LOPT_UNROLL
    for (int e = 0; e < kT; ++e) y[kk * kT + e] = kRelu ? std::max(acc[kk][e], 0.0f) : acc[kk][e];
  }
}

// A ReLU dense layer I -> K over one tile: w [I, K] row-major, y [K][kT].
template <int KB>
LOPT_INLINE void DenseRelu(const float* x, int I, const float* w, int K, const float* b,
                           float* y) {
  int k = 0;
  for (; k + KB <= K; k += KB) DenseBlock<KB, true>(x, I, w + k, K, b + k, y + k * kT);
  for (; k < K; ++k) DenseBlock<1, true>(x, I, w + k, K, b + k, y + k * kT);
}

// exp(x) for |x| <= 87 to within about 2 ulp, in arithmetic the compiler
// vectorises (Cephes' expf: x = n ln 2 + r, |r| <= ln(2) / 2).
LOPT_INLINE float ExpSmall(float x) {
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  const float er = (q * r * r + r) + 1.0f;
  const int32_t bits = (int32_t(n) + 127) * (1 << 23);  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return er * scale;
}

// u = d * exp(exp_mult * m) * step_mult over one tile, as StepReference
// orders the products.
LOPT_INLINE void TileUpdate(const float* LOPT_RESTRICT out, float exp_mult, float step_mult,
                            float* LOPT_RESTRICT u) {
  float a[kT];
  int wide = 0;
  LOPT_UNROLL
  for (int e = 0; e < kT; ++e) {
    a[e] = out[kT + e] * exp_mult;
    wide |= !(std::fabs(a[e]) <= 87.0f);  // also NaN
  }
  if (wide) {
    for (int e = 0; e < kT; ++e) u[e] = out[e] * std::exp(a[e]) * step_mult;
    return;
  }
  LOPT_UNROLL
  for (int e = 0; e < kT; ++e) u[e] = out[e] * ExpSmall(a[e]) * step_mult;
}

// What both passes share.
struct Ctx {
  const LoptStepCpuArgs* args;
  const std::vector<LoptStepCpuTensor>* tensors;
  std::vector<int64_t> block_off;  // per tensor: its first block within a particle; J + 1
  int64_t blocks_per_particle = 0;
  std::vector<double> partial;  // pass 1: [items, 28] sums of squares
  std::vector<float> scale;     // [P, J, 28] normalisers

  // Work item -> particle, tensor, element range.
  LOPT_INLINE void Decode(int64_t item, int64_t* p, int* j, int64_t* e0, int64_t* e1) const {
    *p = item / blocks_per_particle;
    int64_t b = item % blocks_per_particle;
    int jj = int(std::upper_bound(block_off.begin(), block_off.end(), b) - block_off.begin()) - 1;
    *j = jj;
    int64_t n = (*tensors)[jj].n;
    *e0 = (b - block_off[jj]) * kBlock;
    *e1 = std::min(n, *e0 + kBlock);
  }
};

// Features 13..24 of a factored tensor depend on a row or a column entry
// alone: pass 1 sums them over the tables (SumRowColFeatures), each entry
// counted as often as elements share it.
LOPT_INLINE bool FromTables(const LoptStepCpuTensor& t, int feature) {
  return t.row_index && feature >= 13 && feature < 25;
}

// lanes [kF][kT] -> sums [kF], pairwise over the lanes (vectorises; the
// same order whatever the thread count).
template <int W>
LOPT_INLINE void HalveLanes(double* LOPT_RESTRICT lanes) {
  for (int i = 0; i < kF; ++i) {
    LOPT_UNROLL
    for (int l = 0; l < W / 2; ++l) lanes[i * kT + l] += lanes[i * kT + l + W / 2];
  }
}

LOPT_INLINE void ReduceLanes(double* LOPT_RESTRICT lanes, double* LOPT_RESTRICT sums) {
  static_assert(kT == 48, "ReduceLanes halves 48 lanes to 3");
  HalveLanes<48>(lanes);
  HalveLanes<24>(lanes);
  HalveLanes<12>(lanes);
  HalveLanes<6>(lanes);
  for (int i = 0; i < kF; ++i) sums[i] = (lanes[i * kT] + lanes[i * kT + 1]) + lanes[i * kT + 2];
}

// Pass 1: per work item, the sums of squares of the raw features (but those
// FromTables).
template <Mode kMode>
LOPT_INLINE void Pass1Tile(const LoptStepCpuTensor& t, int64_t p, int64_t e, int ne,
                           TileStage* stage, float* LOPT_RESTRICT x,
                           double* LOPT_RESTRICT lanes) {
  TileFeatures<kMode>(TileAt<kMode>(t, p, e, ne, stage), x);
  for (int i = 0; i < kF; ++i) {
    if (kMode == Mode::kFactoredNoRowCol && i >= 13 && i < 25) continue;
    if (ne < kT)
      for (int l = ne; l < kT; ++l) x[i * kT + l] = 0;
    LOPT_UNROLL
    for (int l = 0; l < kT; ++l) lanes[i * kT + l] += double(x[i * kT + l]) * double(x[i * kT + l]);
  }
}

LOPT_INLINE void Pass1Impl(Ctx* ctx, int64_t begin, int64_t end) {
  alignas(64) float x[kF * kT];
  alignas(64) double lanes[kF * kT];
  TileStage stage;
  for (int64_t item = begin; item < end; ++item) {
    int64_t p, e0, e1;
    int j;
    ctx->Decode(item, &p, &j, &e0, &e1);
    const LoptStepCpuTensor& t = (*ctx->tensors)[j];
    // One accumulator per feature and lane: vectorises without reordering
    // any sum.
    std::memset(lanes, 0, sizeof(lanes));
    for (int64_t e = e0; e < e1; e += kT) {
      int ne = int(std::min<int64_t>(kT, e1 - e));
      if (t.row_index)
        Pass1Tile<Mode::kFactoredNoRowCol>(t, p, e, ne, &stage, x, lanes);
      else
        Pass1Tile<Mode::kElementwise>(t, p, e, ne, &stage, x, lanes);
    }
    ReduceLanes(lanes, &ctx->partial[item * kF]);
  }
}

// Sums of squares of features 13..24 of particle p's factored tensor t.
void SumRowColFeatures(const LoptStepCpuTensor& t, int64_t p, double* sums) {
  auto add = [&](const float* v, int64_t entries, int f_value, int f_rsqrt) {
    if (entries == 0) return;
    const double times = double(t.n / entries);  // elements per entry
    for (int k = 0; k < 3; ++k) {
      double sv = 0, sr = 0;
      for (int64_t r = 0; r < entries; ++r) {
        const float x = v[3 * r + k];
        const float rs = 1.0f / std::sqrt(x + 1e-8f);
        sv += double(x) * double(x);
        sr += double(rs) * double(rs);
      }
      sums[f_value + k] += times * sv;
      sums[f_rsqrt + k] += times * sr;
    }
  };
  add(t.v_row + 3 * p * t.rows, t.rows, 13, 19);
  add(t.v_col + 3 * p * t.cols, t.cols, 16, 22);
}

// Pass 2: normalise, run the MLP, write u.
template <int KB>
LOPT_INLINE void Pass2Impl(const Ctx* ctx, int64_t begin, int64_t end) {
  const LoptStepCpuArgs& a = *ctx->args;
  const int H = int(a.H);
  const int J = int(ctx->tensors->size());
  alignas(64) float x[kF * kT];
  alignas(64) float out[2 * kT];
  alignas(64) float ubuf[kT];
  std::vector<float> hbuf(size_t(2) * H * kT + 16);
  float* h1 = hbuf.data();
  float* h2 = h1 + H * kT;
  TileStage stage;
  for (int64_t item = begin; item < end; ++item) {
    int64_t p, e0, e1;
    int j;
    ctx->Decode(item, &p, &j, &e0, &e1);
    const LoptStepCpuTensor& t = (*ctx->tensors)[j];
    const float* th = a.theta + p * a.theta_stride;
    const float* w0 = th;  // [39, H]; rows 28.. are folded into bias0
    const float* w1 = th + 40 * H;
    const float* b1 = w1 + H * H;
    const float* w2 = b1 + H;
    const float* b2 = w2 + 2 * H;
    const float* bias0 = a.bias0 + p * H;
    const float* s = &ctx->scale[(p * J + j) * kF];
    for (int64_t e = e0; e < e1; e += kT) {
      int ne = int(std::min<int64_t>(kT, e1 - e));
      if (t.row_index)
        TileFeatures<Mode::kFactored>(TileAt<Mode::kFactored>(t, p, e, ne, &stage), x);
      else
        TileFeatures<Mode::kElementwise>(TileAt<Mode::kElementwise>(t, p, e, ne, &stage), x);
      for (int i = 0; i < kF; ++i) {
        const float si = s[i];
        LOPT_UNROLL
        for (int l = 0; l < kT; ++l) x[i * kT + l] *= si;
      }
      DenseRelu<KB>(x, kF, w0, H, bias0, h1);
      DenseRelu<KB>(h1, H, w1, H, b1, h2);
      DenseBlock<2, false>(h2, H, w2, 2, b2, out);
      TileUpdate(out, a.exp_mult, a.step_mult, ubuf);
      std::memcpy(t.u + p * t.n + e, ubuf, ne * sizeof(float));
    }
  }
}

void Pass1Generic(Ctx* c, int64_t b, int64_t e) { Pass1Impl(c, b, e); }
// Output rows per register block: what keeps the accumulators (KB x kT
// floats) within each instruction set's vector registers.
void Pass2Generic(const Ctx* c, int64_t b, int64_t e) { Pass2Impl<1>(c, b, e); }

#if LOPT_CPU_DISPATCH
#if defined(__clang__)
#define LOPT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define LOPT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#endif
#define LOPT_TARGET_AVX2 __attribute__((target("avx2,fma")))
LOPT_TARGET_AVX512 void Pass1Avx512(Ctx* c, int64_t b, int64_t e) { Pass1Impl(c, b, e); }
LOPT_TARGET_AVX512 void Pass2Avx512(const Ctx* c, int64_t b, int64_t e) { Pass2Impl<4>(c, b, e); }
LOPT_TARGET_AVX2 void Pass1Avx2(Ctx* c, int64_t b, int64_t e) { Pass1Impl(c, b, e); }
LOPT_TARGET_AVX2 void Pass2Avx2(const Ctx* c, int64_t b, int64_t e) { Pass2Impl<2>(c, b, e); }
#endif

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa DetectIsa() {
#if LOPT_CPU_DISPATCH
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kGeneric;
}

bool ParseIsa(const std::string& name, Isa* isa) {
  if (name == "generic") *isa = Isa::kGeneric;
  else if (name == "avx2") *isa = Isa::kAvx2;
  else if (name == "avx512") *isa = Isa::kAvx512;
  else return false;
  return true;
}

Isa& IsaSetting() {
  static Isa isa = [] {
    Isa best = DetectIsa();
    // LOPT_CPU_ISA=generic|avx2|avx512 picks a narrower set (benchmarks).
    const char* env = std::getenv("LOPT_CPU_ISA");
    Isa want = best;
    if (env && ParseIsa(env, &want) && int(want) <= int(best)) return want;
    return best;
  }();
  return isa;
}

Isa CurrentIsa() { return IsaSetting(); }

void Pass1(Ctx* c, int64_t b, int64_t e) {
  switch (CurrentIsa()) {
#if LOPT_CPU_DISPATCH
    case Isa::kAvx512: return Pass1Avx512(c, b, e);
    case Isa::kAvx2: return Pass1Avx2(c, b, e);
#endif
    default: return Pass1Generic(c, b, e);
  }
}

void Pass2(const Ctx* c, int64_t b, int64_t e) {
  switch (CurrentIsa()) {
#if LOPT_CPU_DISPATCH
    case Isa::kAvx512: return Pass2Avx512(c, b, e);
    case Isa::kAvx2: return Pass2Avx2(c, b, e);
#endif
    default: return Pass2Generic(c, b, e);
  }
}

}  // namespace

const char* LoptStepCpuIsa() {
  switch (CurrentIsa()) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

bool SetLoptStepCpuIsa(const std::string& name) {
  Isa want;
  if (!ParseIsa(name, &want) || int(want) > int(DetectIsa())) return false;
  IsaSetting() = want;
  return true;
}

void LoptStepCpuRaw(const LoptStepCpuArgs& args, const std::vector<LoptStepCpuTensor>& tensors) {
  const int64_t P = args.P;
  const int J = int(tensors.size());
  if (P == 0 || J == 0) return;
  Ctx ctx;
  ctx.args = &args;
  ctx.tensors = &tensors;
  ctx.block_off.resize(J + 1);
  ctx.block_off[0] = 0;
  for (int j = 0; j < J; ++j)
    ctx.block_off[j + 1] = ctx.block_off[j] + (tensors[j].n + kBlock - 1) / kBlock;
  ctx.blocks_per_particle = ctx.block_off[J];
  const int64_t items = P * ctx.blocks_per_particle;
  if (items == 0) return;
  // Items are particle-major, so an even split of their range is an even
  // split of the work whatever the mix of tensor sizes.
  ctx.partial.assign(items * kF, 0.0);
  at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { Pass1(&ctx, b, e); });

  // Per (particle, tensor, feature): rsqrt(1e-5 + mean x^2), reduced in item
  // order so that the result does not depend on the number of threads.
  ctx.scale.resize(P * J * kF);
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      for (int j = 0; j < J; ++j) {
        const LoptStepCpuTensor& t = tensors[j];
        double sums[kF] = {};
        for (int64_t b = ctx.block_off[j]; b < ctx.block_off[j + 1]; ++b) {
          const double* part = &ctx.partial[(p * ctx.blocks_per_particle + b) * kF];
          for (int i = 0; i < kF; ++i)
            if (!FromTables(t, i)) sums[i] += part[i];
        }
        if (t.row_index) SumRowColFeatures(t, p, sums);
        float* s = &ctx.scale[(p * J + j) * kF];
        const double n = double(std::max<int64_t>(t.n, 1));
        for (int i = 0; i < kF; ++i) s[i] = 1.0f / std::sqrt(float(sums[i] / n) + 1e-5f);
      }
    }
  });
  at::parallel_for(0, items, 1, [&](int64_t b, int64_t e) { Pass2(&ctx, b, e); });
}

}  // namespace kernels

namespace {

torch::Tensor AsPerParticle(const torch::Tensor& t) { return t.dim() == 1 ? t.unsqueeze(1) : t; }

std::vector<int64_t> PerParticleShape(const torch::Tensor& t) {
  std::vector<int64_t> s(t.sizes().begin() + 1, t.sizes().end());
  if (s.empty()) s.push_back(1);
  return s;
}

// For each element of a tensor shaped `shape`, its linear index once `axis`
// is removed: the entry of the statistics averaged over that axis.
std::vector<int32_t> ReducedIndex(const std::vector<int64_t>& shape, int axis) {
  int64_t inner = 1, n = 1;
  for (size_t a = 0; a < shape.size(); ++a) {
    n *= shape[a];
    if (int(a) > axis) inner *= shape[a];
  }
  TORCH_CHECK(n < (int64_t(1) << 31), "tensor too large for the fused lopt step");
  std::vector<int32_t> idx(n);
  if (n == 0) return idx;
  int32_t* out = idx.data();
  for (int64_t o = 0; o < n / (inner * shape[axis]); ++o)
    for (int64_t a = 0; a < shape[axis]; ++a)
      for (int64_t i = 0; i < inner; ++i) *out++ = int32_t(o * inner + i);
  return idx;
}

bool CpuFloat(const torch::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
}

torch::Tensor SafeRsqrt(const torch::Tensor& x) { return torch::rsqrt(x.clamp_min(1e-9)); }

}  // namespace

bool LoptStepCpuSupports(const std::vector<torch::Tensor>& params,
                         const std::vector<torch::Tensor>& grads, const LoptState& state,
                         const torch::Tensor& step, const torch::Tensor& theta) {
  if (params.empty() || grads.size() != params.size() || state.size() != params.size())
    return false;
  if (!CpuFloat(theta) || !step.defined() || !step.device().is_cpu()) return false;
  const bool grad_mode = torch::GradMode::is_enabled();
  if (grad_mode && theta.requires_grad()) return false;
  for (size_t i = 0; i < params.size(); ++i) {
    const LoptTensorState& st = state[i];
    for (const torch::Tensor* t : {&params[i], &grads[i], &st.mom, &st.rms, &st.fac_a, &st.fac_b})
      if (!CpuFloat(*t) || (grad_mode && t->requires_grad())) return false;
    if (params[i].dim() < 1) return false;
  }
  return true;
}

std::vector<torch::Tensor> LoptStepCpu(const std::vector<torch::Tensor>& params,
                                       const std::vector<torch::Tensor>& grads,
                                       const LoptState& state, const torch::Tensor& step,
                                       const torch::Tensor& theta_in, int64_t H,
                                       float step_mult, float exp_mult) {
  torch::NoGradGuard no_grad;
  const int64_t P = params[0].size(0);
  const int64_t D = kLoptNumInputs * H + H + H * H + H + 2 * H + 2;
  TORCH_CHECK(theta_in.size(-1) == D, "theta has ", theta_in.size(-1), " entries, want ", D);
  TORCH_CHECK(theta_in.dim() == 1 || (theta_in.dim() == 2 && theta_in.size(0) == P),
              "theta must be [D] or [P, D]");

  // The time features' contribution to the first layer, per particle, exactly
  // as SmallFcLopt::Mlp computes it.
  torch::Tensor theta_p = theta_in.dim() == 1 ? theta_in.unsqueeze(0).expand({P, -1}) : theta_in;
  torch::Tensor w0_time =
      theta_p.narrow(1, 0, kLoptNumInputs * H).reshape({P, kLoptNumInputs, H})
          .narrow(1, kLoptNumFeatures, kLoptNumTimeFeatures);
  torch::Tensor b0 = theta_p.narrow(1, kLoptNumInputs * H, H).reshape({P, 1, H});
  torch::Tensor bias0 =
      torch::baddbmm(b0, SmallFcLopt::TimeFeatures(step).unsqueeze(1), w0_time).contiguous();
  torch::Tensor theta = theta_in.contiguous();

  // Per tensor, the kernel's inputs: the accumulators as they are, and for a
  // factored tensor the row and column factors computed on the (small)
  // statistics tables with the ops of SmallFcLopt::RawFeatures.
  std::vector<torch::Tensor> keep;  // keeps the kernel's inputs alive
  keep.reserve(params.size() * 9);
  std::list<std::vector<int32_t>> indices;  // factored tensors' table entries
  std::vector<kernels::LoptStepCpuTensor> ts(params.size());
  std::vector<torch::Tensor> updates(params.size());
  auto flat = [&](const torch::Tensor& t, int64_t n, int64_t c) {
    torch::Tensor r = c ? t.reshape({P, n, c}).contiguous() : t.reshape({P, n}).contiguous();
    keep.push_back(r);
    return r.data_ptr<float>();
  };
  for (size_t j = 0; j < params.size(); ++j) {
    const LoptTensorState& st = state[j];
    torch::Tensor p = AsPerParticle(params[j]), g = AsPerParticle(grads[j]);
    const int64_t n = p.numel() / P;
    // The kernel reads raw pointers: check every shape it relies on.
    TORCH_CHECK(p.size(0) == P && g.sizes() == p.sizes(), "tensor ", j,
                ": params and grads must be [P, ...] alike");
    TORCH_CHECK(st.mom.numel() == 3 * P * n && st.rms.numel() == P * n, "tensor ", j,
                ": accumulators do not match the parameter");
    kernels::LoptStepCpuTensor& t = ts[j];
    t.n = n;
    t.g = flat(g, n, 0);
    t.p = flat(p, n, 0);
    t.mom = flat(st.mom, n, 3);
    t.rms = flat(st.rms, n, 0);
    FactoredDims fd = FactoredDimsOf(PerParticleShape(g));
    if (fd.factored) {
      const torch::Tensor& v_row = st.fac_a;  // [P, S without d0, 3]
      const torch::Tensor& v_col = st.fac_b;  // [P, S without d1, 3]
      int reduced_d1 = fd.d1 > fd.d0 ? fd.d1 - 1 : fd.d1;
      torch::Tensor row_mean = v_row.mean(1 + reduced_d1, /*keepdim=*/true);
      torch::Tensor row_factor = SafeRsqrt(v_row / (row_mean + 1e-9));
      torch::Tensor col_factor = SafeRsqrt(v_col);
      std::vector<int64_t> shape = PerParticleShape(g);
      t.rows = shape[fd.d0] ? n / shape[fd.d0] : 0;
      t.cols = shape[fd.d1] ? n / shape[fd.d1] : 0;
      TORCH_CHECK(v_row.numel() == 3 * P * t.rows && v_col.numel() == 3 * P * t.cols, "tensor ",
                  j, ": factored accumulators do not match the parameter");
      t.v_row = flat(v_row, t.rows, 3);
      t.row_factor = flat(row_factor, t.rows, 3);
      t.v_col = flat(v_col, t.cols, 3);
      t.col_factor = flat(col_factor, t.cols, 3);
      indices.push_back(ReducedIndex(shape, fd.d0));
      t.row_index = indices.back().data();
      indices.push_back(ReducedIndex(shape, fd.d1));
      t.col_index = indices.back().data();
    } else {
      TORCH_CHECK(st.fac_a.numel() == 3 * P * n, "tensor ", j,
                  ": accumulators do not match the parameter");
      t.v = flat(st.fac_a, n, 3);
    }
    updates[j] = torch::empty(params[j].sizes(), params[j].options());
    t.u = updates[j].data_ptr<float>();
  }

  kernels::LoptStepCpuArgs args;
  args.P = P;
  args.H = H;
  args.theta = theta.data_ptr<float>();
  args.theta_stride = theta.dim() == 1 ? 0 : D;
  args.bias0 = bias0.data_ptr<float>();
  args.step_mult = step_mult;
  args.exp_mult = exp_mult;
  kernels::LoptStepCpuRaw(args, ts);
  return updates;
}

}  // namespace lopt
