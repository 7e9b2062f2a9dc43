// Adam / AdamW over particle-batched tensors, with a learning rate per
// particle: the behaviour-cloning teacher of ELO and the AdamW baseline grid
// of `lopt eval` (every learning rate of the grid is a particle of one run).
#pragma once

#include <vector>

#include <torch/types.h>

namespace lopt {

struct AdamState {
  std::vector<torch::Tensor> m;  // each [P, ...]
  std::vector<torch::Tensor> v;
};

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // decoupled (AdamW); 0 gives Adam
};

AdamState InitAdamState(const std::vector<torch::Tensor>& params);

// Folds grads into `state` and returns the updates u (p_new = p - u) of
// torch.optim.AdamW: lr * (m_hat / (sqrt(v_hat) + eps) + wd * p).
//   lr:   [P] per-particle learning rates
//   step: [P] updates already applied (bias correction uses step + 1)
std::vector<torch::Tensor> AdamUpdates(const std::vector<torch::Tensor>& params,
                                       const std::vector<torch::Tensor>& grads,
                                       AdamState* state, const torch::Tensor& lr,
                                       const torch::Tensor& step, const AdamOptions& opt);

}  // namespace lopt
