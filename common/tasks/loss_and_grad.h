// The autograd path every task family without a hand-written backward takes:
// the loss over all particles and, if asked, each particle's gradient.
#pragma once

#include <functional>
#include <vector>

#include <torch/types.h>

namespace lopt {

using LossFn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;
// From the per-particle loss [P] and the leaves it was computed on, the
// gradients, one a parameter (e.g. with loss scaling).
using GradientFn = std::function<void(const torch::Tensor& loss, const std::vector<torch::Tensor>& leaves,
                                      std::vector<torch::Tensor>* grads)>;

// Runs `loss_fn` on the parameters ([P] losses) and, if `grads` is set,
// differentiates it on detached leaves: by default the gradient of the sum,
// which, the particles being independent, is every particle's own;
// `differentiate` replaces that step.
torch::Tensor LossAndGradOf(const std::vector<torch::Tensor>& params, const LossFn& loss_fn,
                            std::vector<torch::Tensor>* grads, const GradientFn& differentiate = nullptr);

}  // namespace lopt
