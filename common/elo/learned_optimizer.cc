#include "common/elo/learned_optimizer.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/optimizer_file.h"

namespace lopt {

LearnedOptimizer::LearnedOptimizer(std::vector<torch::Tensor> params,
                                   const v1::LearnedOptimizerSpec& spec, torch::Tensor theta)
    : torch::optim::Optimizer({torch::optim::OptimizerParamGroup(std::move(params))},
                              std::make_unique<LearnedOptimizerOptions>()),
      lopt_(spec),
      theta_(std::move(theta)) {
  TORCH_CHECK(theta_.numel() == lopt_.theta_size(), "theta has ", theta_.numel(),
              " values, small_fc_lopt with hidden size ", spec.hidden_size(), " needs ",
              lopt_.theta_size());
}

absl::StatusOr<std::unique_ptr<LearnedOptimizer>> LearnedOptimizer::FromFile(
    std::vector<torch::Tensor> params, const std::string& path) {
  auto trained = LoadOptimizerFile(path);
  if (!trained.ok()) return trained.status();
  return std::make_unique<LearnedOptimizer>(std::move(params), trained->file.options(),
                                            trained->theta);
}

torch::Tensor LearnedOptimizer::step(LossClosure closure) {
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable(true);
    loss = closure();
  }
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> all;
  for (auto& group : param_groups_)
    for (auto& p : group.params()) all.push_back(p);
  if (states_.empty()) {
    std::vector<torch::Tensor> batched;
    for (auto& p : all) batched.push_back(p.detach().unsqueeze(0));
    states_ = lopt_.InitState(batched);
  }
  // One particle: every tensor gets a leading dimension of 1.
  std::vector<torch::Tensor> params, grads;
  LoptState sub;
  std::vector<size_t> which;
  for (size_t i = 0; i < all.size(); ++i) {
    if (!all[i].grad().defined()) continue;
    params.push_back(all[i].detach().unsqueeze(0));
    grads.push_back(all[i].grad().detach().unsqueeze(0));
    sub.push_back(states_[i]);
    which.push_back(i);
  }
  if (params.empty()) return loss;
  // theta on the parameters' device, copied once (not a host-to-device copy a step).
  if (!theta_here_.defined() || theta_here_.device() != params[0].device() ||
      theta_here_.scalar_type() != params[0].scalar_type())
    theta_here_ = theta_.to(params[0].device(), params[0].scalar_type());
  const torch::Tensor& theta = theta_here_;
  torch::Tensor t = torch::full({1}, iteration_, torch::TensorOptions(torch::kInt64).device(params[0].device()));
  std::vector<torch::Tensor> u = lopt_.Step(params, grads, &sub, t, theta);
  if (HasStepMultSchedule(lopt_.spec()))
    ApplyStepMultSchedule(lopt_.spec(), StepMultFactor(lopt_.spec(), iteration_, total_steps_),
                          params, &u);
  double scale = defaults_->get_lr();
  for (size_t k = 0; k < which.size(); ++k) {
    if (which[k] < update_scales_.size()) u[k].mul_(update_scales_[which[k]]);
    all[which[k]].detach().sub_(u[k].squeeze(0), scale);
    states_[which[k]] = sub[k];
  }
  ++iteration_;
  return loss;
}

void LearnedOptimizer::save(torch::serialize::OutputArchive& archive) const {
  archive.write("theta", theta_);
  archive.write("iteration", torch::tensor(iteration_, torch::kInt64));
  std::vector<torch::Tensor> flat = FlattenLoptState(states_);
  archive.write("num_state", torch::tensor(int64_t(flat.size()), torch::kInt64));
  for (size_t i = 0; i < flat.size(); ++i) archive.write(absl::StrCat("state/", i), flat[i]);
}

void LearnedOptimizer::load(torch::serialize::InputArchive& archive) {
  torch::Tensor theta, it, n;
  archive.read("theta", theta);
  archive.read("iteration", it);
  archive.read("num_state", n);
  TORCH_CHECK(theta.numel() == theta_.numel(), "saved theta has the wrong size");
  theta_ = theta;
  theta_here_ = torch::Tensor();
  iteration_ = it.item<int64_t>();
  std::vector<torch::Tensor> flat(n.item<int64_t>());
  for (size_t i = 0; i < flat.size(); ++i) archive.read(absl::StrCat("state/", i), flat[i]);
  states_ = UnflattenLoptState(flat);
}

}  // namespace lopt
