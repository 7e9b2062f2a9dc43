// Fused CUDA small_fc_lopt step (REFERENCE.md section 1): the accumulator
// updates, the 28 features, their per-tensor normalisation and the
// 39 -> 32 -> 32 -> 2 MLP for every tensor of every particle in four
// multi-tensor launches, none of which materialises the [P, N, 28] features.
//
// This header and kernels/lopt_step_cuda.cu use raw device pointers and the
// CUDA runtime only (no LibTorch), so that they compile with nvcc against the
// CUDA headers alone; kernels/lopt_step_cuda_torch.cc is the LibTorch glue
// (SmallFcLopt::Step dispatches there for CUDA float32 tensors).
//
// Launches of one step, all on one stream:
//   0. one host-to-device copy of the tensor table (none in the persistent
//      form used under CUDA-graph capture), one memset of the reduction scratch;
//   1. accumulate: mom, rms (and v of unfactored tensors) updated in place;
//      g^2 + 1e-30 summed into the row and column sums of factored tensors
//      (shared-memory window per block, then one global atomic per entry);
//   2. tables: v_row, v_col EMAs from those sums, row_factor = safe_rsqrt(
//      v_row / (mean of v_row over the reduced d1 axis + 1e-9)), col_factor =
//      safe_rsqrt(v_col), and the sums of squares of features 13..24 (which
//      depend on one row or column entry alone) over the tables; warp tasks
//      (a group of v_row entries sharing a mean, or 32 v_col entries) spread
//      over many blocks;
//   3. statistics: the sums of squares of the element features (0..12,
//      25..27; all 28 for unfactored tensors) per (particle, tensor), block
//      reductions then double atomics;
//   4. MLP: features recomputed, normalised, the MLP run per element
//      (time features folded into the first bias), u written.
// Blocks of every launch map to (particle, tensor, tile) through a table of
// tile offsets; one launch covers every tensor of every particle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

// cudaStream_t without the CUDA headers: callers that have them may pass
// their stream; the type is the runtime's opaque pointer.
struct CUstream_st;

namespace lopt {
namespace kernels {

// How the MLP's matrix products run.
enum class LoptCudaMlp : int {
  kFp32 = 0,  // FFMA on CUDA cores: float32 throughout (the default)
  kTf32 = 1,  // tensor cores: mma.sync m16n8k8, operands rounded to TF32
              // (10-bit mantissa), FP32 accumulate; about 1e-3 relative error
};

// A reduction over one axis of a per-particle shape, seen as [outer, len, inner]:
// element e = (o * len + a) * inner + i has table entry o * inner + i.
struct LoptCudaAxis {
  int64_t outer = 1;
  int64_t len = 1;
  int64_t inner = 1;
};

// One tensor of P particles with n elements per particle; every pointer is
// contiguous float32 device memory.
struct LoptCudaTensor {
  int64_t n = 0;
  const float* g = nullptr;  // [P, n]
  const float* p = nullptr;  // [P, n]
  float* mom = nullptr;      // [P, n, 3], updated in place
  float* rms = nullptr;      // [P, n], updated in place
  // Unfactored (factored == false): fac_a is v [P, n, 3], updated in place.
  // Factored: fac_a is v_row [P, rows, 3] (reduced over d0), fac_b v_col
  // [P, cols, 3] (reduced over d1), both updated in place.
  bool factored = false;
  float* fac_a = nullptr;
  float* fac_b = nullptr;
  LoptCudaAxis row_axis;   // the reduction over d0 (rows = outer * inner)
  LoptCudaAxis col_axis;   // the reduction over d1 (cols = outer * inner)
  LoptCudaAxis mean_axis;  // v_row's axis that was d1, within v_row's shape
  float* u = nullptr;      // [P, n] output: p_new = p - u
};

struct LoptCudaArgs {
  int64_t P = 0;
  int64_t H = 32;                // hidden size; only 32 is supported
  const float* theta = nullptr;  // device [D] or [P, D], D = 39H + H + HH + H + 2H + 2
  int64_t theta_stride = 0;      // 0: one theta shared by all particles; else D
  const float* step = nullptr;   // device [P]: updates already applied, as float
  float step_mult = 0;
  float exp_mult = 0;
  LoptCudaMlp mlp = LoptCudaMlp::kFp32;
};

// Device scratch one call needs (tables, factors, sums), in bytes.
size_t LoptStepCudaWorkspaceBytes(const LoptCudaArgs& args,
                                  const std::vector<LoptCudaTensor>& tensors);

// One step on `stream` (null: the legacy default stream). `workspace` holds
// at least LoptStepCudaWorkspaceBytes, 256-byte aligned, and must stay
// untouched until the step's work on the stream is done. Returns an error
// string (empty on success): a failed launch or copy.
const char* LoptStepCudaRaw(const LoptCudaArgs& args, const std::vector<LoptCudaTensor>& tensors,
                            void* workspace, CUstream_st* stream);

// The same step for CUDA-graph capture. The tensor table (pointers, shapes,
// tile offsets; LoptStepCudaTableBytes of them) is read from `table_dev`, a
// buffer that must outlive the graph and that nothing else writes: a
// workspace from the graph's memory pool would share its memory with the
// step's dead temporaries. Nothing is copied on `stream` (a capture would
// record a copy from host memory gone by the replay): the table comes back
// in `table`, and the caller writes it to `table_dev` once the capture has
// ended, finished before the first replay (LoptStepCudaFinishCapture: a
// blocking copy on the current stream). What `stream` records is one memset and the
// four kernels; `workspace` (its scratch) may be graph-pool memory.
size_t LoptStepCudaTableBytes(const LoptCudaArgs& args, const std::vector<LoptCudaTensor>& tensors);
const char* LoptStepCudaRawPersistent(const LoptCudaArgs& args,
                                      const std::vector<LoptCudaTensor>& tensors,
                                      void* workspace, void* table_dev, CUstream_st* stream,
                                      std::vector<char>* table);

// Per-launch device times of the last step, for benchmarks: when
// LOPT_CUDA_TIMING=1 is set at start-up, every step records CUDA events
// between its launches and waits for them (slow: for profiling only).
// ms[0] table copy + memset, [1] accumulate, [2] tables, [3] statistics,
// [4] MLP. False when timing is off.
bool LoptStepCudaLastTimings(float ms[5]);

// The MLP precision SmallFcLopt::Step uses: LOPT_CUDA_MLP=fp32|tf32 in the
// environment at start-up (default tf32: tensor cores, FP32 accumulation, 1.75x
// faster on ViT-B/16; the meta-test of a PES run matches FP32's, see
// kernels/lopt_step_cuda.md); tests and benchmarks may change it.
LoptCudaMlp& LoptCudaMlpSetting();

}  // namespace kernels
}  // namespace lopt
