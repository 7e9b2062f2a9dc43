#include "common/tasks/adam.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

namespace lopt {
namespace {

// The batched AdamW, one learning rate a particle, against LibTorch's own
// torch::optim::AdamW run separately on each particle.
TEST(Adam, MatchesTorchAdamWPerParticle) {
  torch::manual_seed(3);
  const int P = 3;
  std::vector<double> lrs = {1e-2, 1e-3, 3e-4};
  torch::Tensor w0 = torch::randn({P, 4, 5}), b0 = torch::randn({P, 5});
  std::vector<torch::Tensor> params = {w0.clone(), b0.clone()};
  AdamOptions opt;
  opt.weight_decay = 0.1;
  AdamState st = InitAdamState(params);
  std::vector<torch::Tensor> ref_w, ref_b;
  std::vector<std::unique_ptr<torch::optim::AdamW>> ref_opt;
  for (int p = 0; p < P; ++p) {
    ref_w.push_back(w0[p].clone().requires_grad_(true));
    ref_b.push_back(b0[p].clone().requires_grad_(true));
    ref_opt.push_back(std::make_unique<torch::optim::AdamW>(
        std::vector<torch::Tensor>{ref_w[p], ref_b[p]},
        torch::optim::AdamWOptions(lrs[p]).weight_decay(0.1)));
  }
  for (int s = 0; s < 6; ++s) {
    torch::Tensor gw = torch::randn({P, 4, 5}), gb = torch::randn({P, 5});
    auto u = AdamUpdates(params, {gw, gb}, &st, torch::tensor(lrs),
                         torch::full({P}, s, torch::kInt64), opt);
    params[0] -= u[0];
    params[1] -= u[1];
    for (int p = 0; p < P; ++p) {
      ref_w[p].mutable_grad() = gw[p].clone();
      ref_b[p].mutable_grad() = gb[p].clone();
      ref_opt[p]->step();
    }
  }
  for (int p = 0; p < P; ++p) {
    EXPECT_TRUE(torch::allclose(params[0][p], ref_w[p].detach(), 1e-5, 1e-6)) << p;
    EXPECT_TRUE(torch::allclose(params[1][p], ref_b[p].detach(), 1e-5, 1e-6)) << p;
  }
}

}  // namespace
}  // namespace lopt
