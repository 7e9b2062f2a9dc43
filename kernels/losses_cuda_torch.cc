#include "kernels/losses_cuda_torch.h"

#include <cstdlib>
#include <string>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include "kernels/losses_cuda.h"

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
