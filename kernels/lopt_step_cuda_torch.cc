#include "kernels/lopt_step_cuda_torch.h"

#include <cuda_runtime_api.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "kernels/lopt_step_cuda.h"

namespace lopt {
namespace {

torch::Tensor AsPerParticle(const torch::Tensor& t) { return t.dim() == 1 ? t.unsqueeze(1) : t; }

std::vector<int64_t> PerParticleShape(const torch::Tensor& t) {
  std::vector<int64_t> s(t.sizes().begin() + 1, t.sizes().end());
  if (s.empty()) s.push_back(1);
  return s;
}

// [outer, len, inner] of a reduction over `axis` of `shape`.
kernels::LoptCudaAxis AxisOf(const std::vector<int64_t>& shape, int axis) {
  kernels::LoptCudaAxis a;
  for (int i = 0; i < int(shape.size()); ++i) {
    if (i < axis) a.outer *= shape[i];
    else if (i > axis) a.inner *= shape[i];
  }
  a.len = shape[axis];
  return a;
}

// The tables of the steps captured on this thread: a buffer allocated
// before the capture (so no temporary of the captured step shares it) and
// the host copies waiting for the capture's end.
struct CaptureArena {
  torch::Tensor buf;
  size_t used = 0;
  std::vector<std::pair<size_t, std::vector<char>>> pending;
};

CaptureArena& Arena() {
  static thread_local CaptureArena arena;
  return arena;
}

}  // namespace

bool LoptStepCudaSupports(const std::vector<torch::Tensor>& params,
                          const std::vector<torch::Tensor>& grads, const LoptState& state,
                          const torch::Tensor& step, const torch::Tensor& theta,
                          int64_t hidden_size) {
  if (hidden_size != 32) return false;
  if (params.empty() || grads.size() != params.size() || state.size() != params.size())
    return false;
  if (!theta.defined() || !theta.is_cuda() || theta.scalar_type() != torch::kFloat32) return false;
  const torch::Device dev = theta.device();
  if (!step.defined() || step.device() != dev) return false;
  const bool grad_mode = torch::GradMode::is_enabled();
  if (grad_mode && theta.requires_grad()) return false;
  auto ok = [&](const torch::Tensor& t, bool in_place) {
    return t.defined() && t.device() == dev && t.scalar_type() == torch::kFloat32 &&
           (!in_place || t.is_contiguous()) && !(grad_mode && t.requires_grad());
  };
  for (size_t i = 0; i < params.size(); ++i) {
    const LoptTensorState& st = state[i];
    if (params[i].dim() < 1 || !ok(params[i], false) || !ok(grads[i], false)) return false;
    if (!ok(st.mom, true) || !ok(st.rms, true) || !ok(st.fac_a, true) || !ok(st.fac_b, true))
      return false;
  }
  return true;
}

std::vector<torch::Tensor> LoptStepCuda(const std::vector<torch::Tensor>& params,
                                        const std::vector<torch::Tensor>& grads, LoptState* state,
                                        const torch::Tensor& step, const torch::Tensor& theta_in,
                                        int64_t H, float step_mult, float exp_mult) {
  torch::NoGradGuard no_grad;
  c10::cuda::CUDAGuard guard(theta_in.device());
  const int64_t P = params[0].size(0);
  const int64_t D = kLoptNumInputs * H + H + H * H + H + 2 * H + 2;
  TORCH_CHECK(theta_in.size(-1) == D, "theta has ", theta_in.size(-1), " entries, want ", D);
  TORCH_CHECK(theta_in.dim() == 1 || (theta_in.dim() == 2 && theta_in.size(0) == P),
              "theta must be [D] or [P, D]");
  torch::Tensor theta = theta_in.contiguous();
  torch::Tensor step_f = step.to(torch::kFloat32).reshape({-1}).contiguous();
  TORCH_CHECK(step_f.numel() == P, "step must have one entry per particle");

  std::vector<torch::Tensor> keep;  // contiguous copies of p and g, alive until the launches
  keep.reserve(2 * params.size());
  std::vector<kernels::LoptCudaTensor> ts(params.size());
  std::vector<torch::Tensor> updates(params.size());
  for (size_t j = 0; j < params.size(); ++j) {
    LoptTensorState& st = (*state)[j];
    torch::Tensor p = AsPerParticle(params[j]).contiguous();
    torch::Tensor g = AsPerParticle(grads[j]).contiguous();
    keep.push_back(p);
    keep.push_back(g);
    const int64_t n = p.numel() / P;
    TORCH_CHECK(p.size(0) == P && g.sizes() == p.sizes(), "tensor ", j,
                ": params and grads must be [P, ...] alike");
    TORCH_CHECK(st.mom.numel() == 3 * P * n && st.rms.numel() == P * n, "tensor ", j,
                ": accumulators do not match the parameter");
    kernels::LoptCudaTensor& t = ts[j];
    t.n = n;
    t.g = g.data_ptr<float>();
    t.p = p.data_ptr<float>();
    t.mom = st.mom.data_ptr<float>();
    t.rms = st.rms.data_ptr<float>();
    std::vector<int64_t> shape = PerParticleShape(g);
    FactoredDims fd = FactoredDimsOf(shape);
    t.factored = fd.factored;
    t.fac_a = st.fac_a.data_ptr<float>();
    if (fd.factored) {
      t.row_axis = AxisOf(shape, fd.d0);
      t.col_axis = AxisOf(shape, fd.d1);
      std::vector<int64_t> row_shape = shape;  // v_row: shape without d0
      row_shape.erase(row_shape.begin() + fd.d0);
      t.mean_axis = AxisOf(row_shape, fd.d1 > fd.d0 ? fd.d1 - 1 : fd.d1);
      TORCH_CHECK(st.fac_a.numel() == 3 * P * t.row_axis.outer * t.row_axis.inner &&
                      st.fac_b.numel() == 3 * P * t.col_axis.outer * t.col_axis.inner,
                  "tensor ", j, ": factored accumulators do not match the parameter");
      t.fac_b = st.fac_b.data_ptr<float>();
    } else {
      TORCH_CHECK(st.fac_a.numel() == 3 * P * n, "tensor ", j,
                  ": accumulators do not match the parameter");
    }
    updates[j] = torch::empty(params[j].sizes(), params[j].options());
    t.u = updates[j].data_ptr<float>();
  }

  kernels::LoptCudaArgs args;
  args.P = P;
  args.H = H;
  args.theta = theta.data_ptr<float>();
  args.theta_stride = theta.dim() == 1 ? 0 : D;
  args.step = step_f.data_ptr<float>();
  args.step_mult = step_mult;
  args.exp_mult = exp_mult;
  args.mlp = kernels::LoptCudaMlpSetting();
  const size_t bytes = kernels::LoptStepCudaWorkspaceBytes(args, ts);
  torch::Tensor ws = torch::empty({int64_t(bytes)}, theta.options().dtype(torch::kUInt8));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TORCH_CHECK(cudaStreamIsCapturing(stream, &capture) == cudaSuccess, "cudaStreamIsCapturing");
  const char* err = "";
  if (capture == cudaStreamCaptureStatusActive) {
    // Under CUDA-graph capture: the table goes to the device once, after the
    // capture (LoptStepCudaFinishCapture), into the buffer that
    // LoptStepCudaBeginCapture allocated before it; the scratch may share
    // memory with dead temporaries of the graph's pool.
    CaptureArena& arena = Arena();
    TORCH_CHECK(arena.buf.defined() && arena.buf.device() == theta.device(),
                "LoptStepCuda under CUDA-graph capture needs LoptStepCudaBeginCapture first");
    const size_t at = (arena.used + 255) & ~size_t(255);
    const size_t need = kernels::LoptStepCudaTableBytes(args, ts);
    TORCH_CHECK(at + need <= size_t(arena.buf.numel()), "LoptStepCudaBeginCapture: ",
                arena.buf.numel(), " bytes are too few for the tables of this capture");
    std::vector<char> table;
    err = kernels::LoptStepCudaRawPersistent(args, ts, ws.data_ptr(),
                                             static_cast<char*>(arena.buf.data_ptr()) + at,
                                             stream, &table);
    arena.used = at + need;
    arena.pending.push_back({at, std::move(table)});
  } else {
    err = kernels::LoptStepCudaRaw(args, ts, ws.data_ptr(), stream);
  }
  TORCH_CHECK(*err == 0, err);
  return updates;
}

void LoptStepCudaBeginCapture(torch::Device device, int64_t bytes) {
  CaptureArena& arena = Arena();
  arena.buf = torch::empty({bytes}, torch::TensorOptions().dtype(torch::kUInt8).device(device));
  arena.used = 0;
  arena.pending.clear();
}

torch::Tensor LoptStepCudaFinishCapture() {
  CaptureArena& arena = Arena();
  // A blocking copy on the current stream, finished when this returns. Not a
  // plain cudaMemcpy: that runs on the legacy default stream, which the
  // unroller's stream (a non-blocking pool stream) does not wait for, and it
  // returns once the bytes are staged, before they reach the device; on a
  // busy GPU the first replay then read a half-written table (garbage
  // losses, an illegal address).
  for (auto& [at, table] : arena.pending) {
    torch::Tensor host = torch::from_blob(table.data(), {int64_t(table.size())}, torch::kUInt8);
    arena.buf.narrow(0, int64_t(at), int64_t(table.size())).copy_(host, /*non_blocking=*/false);
  }
  TORCH_CHECK(cudaStreamSynchronize(c10::cuda::getCurrentCUDAStream().stream()) == cudaSuccess,
              "LoptStepCudaFinishCapture: table upload failed");
  torch::Tensor buf = arena.buf;
  arena = CaptureArena();
  return buf;
}

}  // namespace lopt
