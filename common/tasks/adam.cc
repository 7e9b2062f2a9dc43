#include "common/tasks/adam.h"

#include <torch/torch.h>

namespace lopt {

AdamState InitAdamState(const std::vector<torch::Tensor>& params) {
  AdamState s;
  for (const auto& p : params) {
    s.m.push_back(torch::zeros_like(p));
    s.v.push_back(torch::zeros_like(p));
  }
  return s;
}

std::vector<torch::Tensor> AdamUpdates(const std::vector<torch::Tensor>& params,
                                       const std::vector<torch::Tensor>& grads,
                                       AdamState* state, const torch::Tensor& lr,
                                       const torch::Tensor& step, const AdamOptions& opt) {
  torch::Tensor t = step.to(torch::kFloat64) + 1;
  torch::Tensor bc1 = (1 - torch::pow(opt.beta1, t)).to(torch::kFloat32);
  torch::Tensor bc2_sqrt = torch::sqrt(1 - torch::pow(opt.beta2, t)).to(torch::kFloat32);
  torch::Tensor lr32 = lr.to(torch::kFloat32);
  std::vector<torch::Tensor> updates;
  updates.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor& g = grads[i];
    state->m[i].mul_(opt.beta1).add_(g, 1 - opt.beta1);
    state->v[i].mul_(opt.beta2).addcmul_(g, g, 1 - opt.beta2);
    std::vector<int64_t> shape(g.dim(), 1);
    shape[0] = g.size(0);
    torch::Tensor denom = state->v[i].sqrt() / bc2_sqrt.view(shape) + opt.eps;
    torch::Tensor u = state->m[i] / bc1.view(shape) / denom;
    if (opt.weight_decay != 0) u = u + opt.weight_decay * params[i];
    updates.push_back(u * lr32.view(shape));
  }
  return updates;
}

}  // namespace lopt
