#include "common/elo/pes.h"

#include <torch/torch.h>

#include "common/tasks/task.h"

#ifdef LOPT_WITH_CUDA
#include "kernels/losses_cuda_torch.h"
#endif

namespace lopt {

PesAccumulator::PesAccumulator(int64_t num_tasks, int64_t dim, double sigma,
                               torch::Device device)
    : sigma_(sigma),
      xi_(torch::zeros({num_tasks, dim}, torch::device(device))),
      eps_(torch::zeros({num_tasks, dim}, torch::device(device))),
      xi_after_(torch::zeros({num_tasks, dim}, torch::device(device))),
      reset_(torch::zeros({num_tasks}, torch::device(device).dtype(torch::kBool))),
      diff_pre_(torch::zeros({num_tasks}, torch::device(device).dtype(torch::kFloat64))),
      diff_post_(torch::zeros({num_tasks}, torch::device(device).dtype(torch::kFloat64))) {}

torch::Tensor PesAccumulator::BeginTruncation(const torch::Tensor& theta,
                                              torch::Generator& gen) {
  eps_ = (torch::randn(xi_.sizes(), gen) * sigma_).to(xi_.device());
  reset_.zero_();
  diff_pre_.zero_();
  diff_post_.zero_();
  xi_after_.zero_();
  steps_ = 0;
  torch::Tensor th = theta.to(xi_.device()).unsqueeze(0);
  return torch::cat({th + eps_, th - eps_}, 0);
}

void PesAccumulator::Reset(int64_t task, const torch::Tensor& xi_restored) {
  reset_[task] = true;
  diff_post_[task] = 0.0;  // a second reset in one truncation forgets the first unroll's tail
  xi_after_[task].copy_(xi_restored);
}

void PesAccumulator::AddLosses(const torch::Tensor& losses) {
  int64_t T = num_tasks();
  torch::Tensor l = losses.to(torch::kFloat64);
  torch::Tensor diff = l.narrow(0, 0, T) - l.narrow(0, T, T);
  diff_post_ += torch::where(reset_, diff, torch::zeros_like(diff));
  diff_pre_ += torch::where(reset_, torch::zeros_like(diff), diff);
  ++steps_;
}

void PesAccumulator::AddBcLossesUncounted(const torch::Tensor& task_losses,
                                         const torch::Tensor& bc_losses,
                                         const torch::Tensor& alpha, double max_loss,
                                         torch::Tensor& sum_meta, torch::Tensor& sum_task,
                                         torch::Tensor& sum_bc) {
#ifdef LOPT_WITH_CUDA
  if (task_losses.is_cuda() && CudaFusedLossesEnabled()) {
    BcMetaLossesCudaFused(task_losses, bc_losses, max_loss, alpha, reset_, diff_pre_, diff_post_,
                          sum_meta, sum_task, sum_bc);
    return;
  }
#endif
  torch::Tensor task = NormalizeMetaLoss(task_losses, max_loss);
  torch::Tensor bc = NormalizeMetaLoss(bc_losses, max_loss);
  torch::Tensor meta = (1 - alpha) * bc + alpha * task;
  // meta is already clipped: AddClippedLossesUncounted's clip is a no-op.
  AddClippedLossesUncounted(meta, max_loss, sum_meta);
  sum_task.add_(task.mean());
  sum_bc.add_(bc.mean());
}

void PesAccumulator::AddClippedLossesUncounted(const torch::Tensor& losses, double max_loss,
                                               torch::Tensor& sum) {
#ifdef LOPT_WITH_CUDA
  if (losses.is_cuda() && CudaFusedLossesEnabled()) {
    PesLossesCudaFused(losses, max_loss, reset_, diff_pre_, diff_post_, sum);
    return;
  }
#endif
  torch::Tensor l = torch::where(torch::isfinite(losses), losses,
                                 torch::full_like(losses, max_loss)).clamp_max(max_loss);
  int64_t T = num_tasks();
  torch::Tensor d = l.to(torch::kFloat64);
  torch::Tensor diff = d.narrow(0, 0, T) - d.narrow(0, T, T);
  diff_post_ += torch::where(reset_, diff, torch::zeros_like(diff));
  diff_pre_ += torch::where(reset_, torch::zeros_like(diff), diff);
  sum += d.mean();
}

torch::Tensor PesAccumulator::CurrentXi(int64_t task) const {
  return (reset_[task].item<bool>() ? xi_after_[task] : xi_[task]) + eps_[task];
}

torch::Tensor PesAccumulator::EndTruncation() {
  torch::Tensor r = reset_.unsqueeze(1);
  torch::Tensor xi_pre = xi_ + eps_;
  torch::Tensor xi_post = xi_after_ + eps_;
  double scale = 1.0 / (std::max<int64_t>(steps_, 1) * 2.0 * sigma_ * sigma_);
  torch::Tensor g = (diff_pre_.to(torch::kFloat32).unsqueeze(1) * xi_pre +
                     diff_post_.to(torch::kFloat32).unsqueeze(1) * xi_post) * scale;
  xi_ = torch::where(r, xi_post, xi_pre);
  return g.mean(0);
}

}  // namespace lopt
