#include "kernels/losses_cuda_torch.h"

#include <cstdlib>
#include <string>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "kernels/losses_cuda.h"
#include "kernels/mlp_task_cuda.h"

namespace lopt {

bool CudaFusedLossesEnabled() {
  static const bool on = [] {
    const char* e = std::getenv("LOPT_CUDA_FUSED_LOSSES");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

torch::Tensor CrossEntropyCudaFused(const torch::Tensor& logits_in, const torch::Tensor& y_in,
                                    torch::Tensor* dlogits) {
  c10::cuda::CUDAGuard guard(logits_in.device());
  TORCH_CHECK(logits_in.dim() == 3 && y_in.dim() == 2, "logits [P, B, C], labels [G, B]");
  torch::Tensor logits = logits_in.contiguous();
  torch::Tensor y = y_in.to(torch::kInt64).contiguous();
  const int64_t P = logits.size(0), B = logits.size(1), C = logits.size(2), G = y.size(0);
  TORCH_CHECK(G > 0 && P % G == 0 && y.size(1) == B, "labels do not match the logits");
  torch::Tensor loss = torch::empty({P}, logits.options());
  float* d = nullptr;
  if (dlogits) {
    *dlogits = torch::empty_like(logits);
    d = dlogits->data_ptr<float>();
  }
  const char* err = kernels::CrossEntropyCuda(logits.data_ptr<float>(), y.data_ptr<int64_t>(), P,
                                              G, B, C, loss.data_ptr<float>(), d,
                                              c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(*err == 0, err);
  return loss;
}

bool MlpTaskLossAndGradCudaFused(const std::vector<torch::Tensor>& p, const torch::Tensor& x,
                                 const torch::Tensor& y, int activation, torch::Tensor* loss,
                                 std::vector<torch::Tensor>* grads) {
  static const bool on = [] {
    const char* e = std::getenv("LOPT_CUDA_FUSED_MLP");
    return !(e && std::string(e) == "0");
  }();
  if (!on || p.size() != 4 || activation < 0 || activation > 2 || !x.is_cuda() ||
      x.dim() != 3 || y.dim() != 2 || x.scalar_type() != torch::kFloat32)
    return false;
  for (const auto& t : p)
    if (!t.is_cuda() || t.scalar_type() != torch::kFloat32 || t.device() != x.device()) return false;
  kernels::MlpTaskShape s;
  s.P = p[0].size(0);
  s.G = x.size(0);
  s.B = x.size(1);
  s.in = x.size(2);
  s.hidden = p[1].size(-1);
  s.classes = p[3].size(-1);
  if (p[0].dim() != 3 || p[0].size(1) != s.in || p[0].size(2) != s.hidden || p[2].dim() != 3 ||
      p[2].size(1) != s.hidden || p[2].size(2) != s.classes || y.size(0) != s.G ||
      y.size(1) != s.B || s.P % s.G != 0 || kernels::MlpTaskSharedBytes(s) < 0)
    return false;
  c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor xc = x.contiguous(), yc = y.to(torch::kInt64).contiguous();
  std::vector<torch::Tensor> pc;
  for (const auto& t : p) pc.push_back(t.contiguous());
  const int slices = kernels::MlpTaskSlices(s);
  // One flat output (loss, then each gradient), zeroed only where blocks add into it.
  int64_t n = s.P;
  if (grads) for (const auto& t : pc) n += t.numel();
  torch::Tensor out = slices > 1 ? torch::zeros({n}, x.options()) : torch::empty({n}, x.options());
  *loss = out.narrow(0, 0, s.P);
  float* g[4] = {nullptr, nullptr, nullptr, nullptr};
  if (grads) {
    grads->assign(4, torch::Tensor());
    int64_t off = s.P;
    for (int i = 0; i < 4; ++i) {
      (*grads)[i] = out.narrow(0, off, pc[i].numel()).view(pc[i].sizes());
      g[i] = (*grads)[i].data_ptr<float>();
      off += pc[i].numel();
    }
  }
  const char* err = kernels::MlpTaskLossAndGradCuda(
      s, slices, kernels::MlpActivation(activation), xc.data_ptr<float>(),
      yc.data_ptr<int64_t>(), pc[0].data_ptr<float>(), pc[1].data_ptr<float>(),
      pc[2].data_ptr<float>(), pc[3].data_ptr<float>(), loss->data_ptr<float>(), g[0], g[1],
      g[2], g[3], c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(*err == 0, err);
  return true;
}

torch::Tensor BehaviorCloningCudaFused(const std::vector<torch::Tensor>& params,
                                       const std::vector<torch::Tensor>& grads,
                                       std::vector<torch::Tensor>& m,
                                       std::vector<torch::Tensor>& v,
                                       std::vector<torch::Tensor>& u, const torch::Tensor& step,
                                       const torch::Tensor& lr, const torch::Tensor& alpha,
                                       double beta1, double beta2, double eps,
                                       double weight_decay) {
  const size_t J = params.size();
  if (!CudaFusedLossesEnabled() || J == 0 || J > size_t(kernels::kBcMaxTensors) ||
      grads.size() != J || m.size() != J || v.size() != J || u.size() != J)
    return torch::Tensor();
  const int64_t P = params[0].size(0);
  auto ok = [&](const torch::Tensor& t, const torch::Tensor& like) {
    return t.defined() && t.is_cuda() && t.scalar_type() == torch::kFloat32 && t.is_contiguous() &&
           t.sizes() == like.sizes() && t.device() == like.device();
  };
  for (size_t j = 0; j < J; ++j)
    if (!ok(params[j], params[j]) || !ok(grads[j], params[j]) || !ok(m[j], params[j]) ||
        !ok(v[j], params[j]) || !ok(u[j], params[j]))
      return torch::Tensor();
  for (const torch::Tensor* t : {&step, &lr})
    if (!t->is_cuda() || t->scalar_type() != torch::kFloat32 || t->numel() != P ||
        !t->is_contiguous())
      return torch::Tensor();
  if (!alpha.is_cuda() || alpha.scalar_type() != torch::kFloat32 || alpha.numel() != 1)
    return torch::Tensor();
  c10::cuda::CUDAGuard guard(params[0].device());
  kernels::BcTensors t;
  t.count = int(J);
  for (size_t j = 0; j < J; ++j) {
    t.param[j] = params[j].data_ptr<float>();
    t.grad[j] = grads[j].data_ptr<float>();
    t.m[j] = m[j].data_ptr<float>();
    t.v[j] = v[j].data_ptr<float>();
    t.u[j] = u[j].data_ptr<float>();
    t.n[j] = P > 0 ? params[j].numel() / P : 0;
  }
  torch::Tensor bc = torch::zeros({P}, params[0].options());
  const char* err = kernels::BehaviorCloningCuda(
      t, P, step.data_ptr<float>(), lr.data_ptr<float>(), alpha.data_ptr<float>(), float(beta1),
      float(beta2), float(eps), float(weight_decay), bc.data_ptr<float>(),
      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(*err == 0, err);
  return bc;
}

void BcMetaLossesCudaFused(const torch::Tensor& task_in, const torch::Tensor& bc_in,
                           double max_loss, const torch::Tensor& alpha, const torch::Tensor& reset,
                           torch::Tensor& diff_pre, torch::Tensor& diff_post,
                           torch::Tensor& sum_meta, torch::Tensor& sum_task,
                           torch::Tensor& sum_bc) {
  c10::cuda::CUDAGuard guard(task_in.device());
  torch::Tensor task = task_in.to(torch::kFloat32).contiguous();
  torch::Tensor bc = bc_in.to(torch::kFloat32).contiguous();
  const int64_t T = task.size(0) / 2;
  TORCH_CHECK(bc.numel() == 2 * T && alpha.scalar_type() == torch::kFloat32 &&
                  reset.scalar_type() == torch::kBool && diff_pre.scalar_type() == torch::kFloat64 &&
                  diff_post.scalar_type() == torch::kFloat64 &&
                  sum_meta.scalar_type() == torch::kFloat64 &&
                  sum_task.scalar_type() == torch::kFloat64 &&
                  sum_bc.scalar_type() == torch::kFloat64,
              "BcMetaLossesCudaFused: unexpected types");
  const char* err = kernels::BcMetaLossesCuda(
      task.data_ptr<float>(), bc.data_ptr<float>(), T, float(max_loss), alpha.data_ptr<float>(),
      reset.data_ptr<bool>(), diff_pre.data_ptr<double>(), diff_post.data_ptr<double>(),
      sum_meta.data_ptr<double>(), sum_task.data_ptr<double>(), sum_bc.data_ptr<double>(),
      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(*err == 0, err);
}

void PesLossesCudaFused(const torch::Tensor& losses_in, double max_loss, const torch::Tensor& reset,
                        torch::Tensor& diff_pre, torch::Tensor& diff_post, torch::Tensor& sum) {
  c10::cuda::CUDAGuard guard(losses_in.device());
  torch::Tensor losses = losses_in.to(torch::kFloat32).contiguous();
  const int64_t T = losses.size(0) / 2;
  TORCH_CHECK(reset.scalar_type() == torch::kBool && reset.is_contiguous() &&
                  diff_pre.scalar_type() == torch::kFloat64 && diff_pre.is_contiguous() &&
                  diff_post.scalar_type() == torch::kFloat64 && diff_post.is_contiguous() &&
                  sum.scalar_type() == torch::kFloat64,
              "PesLossesCudaFused: unexpected accumulator types");
  const char* err = kernels::PesLossesCuda(
      losses.data_ptr<float>(), T, float(max_loss), reset.data_ptr<bool>(),
      diff_pre.data_ptr<double>(), diff_post.data_ptr<double>(), sum.data_ptr<double>(),
      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(*err == 0, err);
}

}  // namespace lopt
