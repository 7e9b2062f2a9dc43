#include "learner/outer_optimizer.h"

#include <cmath>

#include <torch/torch.h>

namespace lopt {

OuterOptimizer::OuterOptimizer(const v1::OuterOptimizerSpec& spec, int64_t total_steps,
                               int64_t dim)
    : spec_(spec), total_steps_(total_steps), m_(torch::zeros({dim})), v_(torch::zeros({dim})) {}

double OuterOptimizer::LrAt(int64_t step) const {
  double lr = spec_.lr();
  int64_t warm = spec_.warmup_steps();
  if (warm > 0 && step < warm) return lr * double(step + 1) / double(warm);
  if (spec_.schedule() == v1::COSINE) {
    double span = std::max<int64_t>(1, total_steps_ - warm);
    double frac = std::min(1.0, double(step - warm) / span);
    double min_lr = lr * spec_.min_lr_ratio();
    return min_lr + 0.5 * (lr - min_lr) * (1 + std::cos(M_PI * frac));
  }
  return lr;
}

int64_t OuterOptimizer::Apply(torch::Tensor& theta, const torch::Tensor& grad_in, int64_t step) {
  torch::NoGradGuard no_grad;
  torch::Tensor finite = torch::isfinite(grad_in);
  int64_t bad = grad_in.numel() - finite.sum().item<int64_t>();
  double c = spec_.grad_clip_value();
  torch::Tensor g = torch::where(finite, grad_in, torch::zeros_like(grad_in)).clamp(-c, c);
  ++updates_;
  double b1 = spec_.beta1(), b2 = spec_.beta2();
  m_.mul_(b1).add_(g, 1 - b1);
  v_.mul_(b2).addcmul_(g, g, 1 - b2);
  double bc1 = 1 - std::pow(b1, double(updates_));
  double bc2 = 1 - std::pow(b2, double(updates_));
  double lr = LrAt(step);
  theta.mul_(1 - lr * spec_.weight_decay());
  theta.sub_(lr * (m_ / bc1) / ((v_ / bc2).sqrt() + spec_.eps()));
  return bad;
}

NamedTensors OuterOptimizer::SaveState() const {
  return {{"outer/m", m_}, {"outer/v", v_},
          {"outer/updates", torch::tensor(updates_, torch::kInt64)}};
}

absl::Status OuterOptimizer::LoadState(const NamedTensors& state) {
  auto m = Find(state, "outer/m");
  auto v = Find(state, "outer/v");
  auto u = Find(state, "outer/updates");
  if (!m.ok() || !v.ok() || !u.ok())
    return absl::DataLossError("checkpoint lacks the outer optimiser's state");
  if (m->sizes() != m_.sizes() || v->sizes() != v_.sizes())
    return absl::InvalidArgumentError("checkpoint's outer optimiser state has the wrong size");
  m_.copy_(*m);
  v_.copy_(*v);
  updates_ = u->item<int64_t>();
  return absl::OkStatus();
}

}  // namespace lopt
