#include "common/lhopt/ciao.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <vector>

#include <torch/torch.h>

namespace lopt {
namespace {

// A scalar, one-particle CIAO written from the formulas in ciao.h with plain
// doubles: the hand computation the tensor code must agree with.
struct RefCiao {
  std::vector<double> m, v;
  double bc1 = 0, bc2 = 0, rolling_max = 0;
  bool last_clipped = false;
  double last_scale = 1;

  // Returns u (p_new = p - u).
  std::vector<double> Step(const std::vector<double>& p, const std::vector<double>& g,
                           const CiaoHyperparameters& h) {
    if (m.empty()) {
      m.assign(p.size(), 0);
      v.assign(p.size(), 0);
    }
    double gn = 0;
    for (double x : g) gn += x * x;
    gn = std::sqrt(gn);
    rolling_max = std::max(gn, rolling_max * (1 - h.one_minus_beta2));
    double coef = h.clip_fraction * rolling_max / (gn + 1e-6);
    last_clipped = coef < 1;
    last_scale = std::min(coef, 1.0);
    bc1 = bc1 * (1 - h.one_minus_beta1) + h.one_minus_beta1;
    bc2 = bc2 * (1 - h.one_minus_beta2) + h.one_minus_beta2;
    std::vector<double> u(p.size());
    for (size_t i = 0; i < p.size(); ++i) {
      double gc = g[i] * last_scale;
      m[i] = (1 - h.one_minus_beta1) * m[i] + h.one_minus_beta1 * gc;
      v[i] = (1 - h.one_minus_beta2) * v[i] + h.one_minus_beta2 * gc * gc;
      double r = (m[i] / bc1) / (std::sqrt(v[i] / bc2) + h.eps) + h.weight_decay * p[i];
      u[i] = h.lr * r;
    }
    return u;
  }
};

torch::Tensor Row(const std::vector<double>& x) {
  return torch::tensor(x, torch::kFloat64).unsqueeze(0);  // [1, n]
}

std::vector<double> Vec(const torch::Tensor& t) {
  torch::Tensor c = t.reshape({-1}).to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// First step by hand: the bias corrections make m_hat = g_c and
// sqrt(v_hat) = |g_c| elementwise, and the rolling max is |g| itself, so the
// gradient is always scaled by 0.8 |g| / (|g| + 1e-6) on step 1.
TEST(Ciao, FirstStepByHand) {
  CiaoHyperparameters h;  // lr 1e-3, omb1 0.1, omb2 1e-2, eps 1e-6, wd 1e-2, clip 0.8
  std::vector<double> p = {0.5, -1.0, 2.0}, g = {0.3, 0.4, 0.0};  // |g| = 0.5
  std::vector<torch::Tensor> params = {Row(p)};
  CiaoState st = InitCiaoState(params);
  CiaoStepResult r = CiaoStep(params, {Row(g)}, &st, CiaoHparamTensors::Fill(1, h));
  const double s = 0.8 * 0.5 / (0.5 + 1e-6);
  for (int i = 0; i < 3; ++i) {
    double gc = s * g[i];
    double expected = 1e-3 * (gc / (std::abs(gc) + 1e-6) + 1e-2 * p[i]);
    EXPECT_NEAR(r.updates[0][0][i].item<double>(), expected, 1e-15) << i;
  }
  EXPECT_EQ(r.stats.clipped.item<double>(), 1.0);
  EXPECT_NEAR(r.stats.clip_scale.item<double>(), s, 1e-15);
  EXPECT_NEAR(r.stats.grad_norm.item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(st.rolling_max.item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(r.stats.cos_grad_momentum.item<double>(), 1.0, 1e-12);  // m_hat = g_c
  // cos(g, p) = (0.15 - 0.4) / (0.5 * sqrt(5.25))
  EXPECT_NEAR(r.stats.cos_grad_param.item<double>(), -0.25 / (0.5 * std::sqrt(5.25)), 1e-12);
  EXPECT_NEAR(r.stats.param_norm.item<double>(), std::sqrt(5.25), 1e-12);
  EXPECT_EQ(r.stats.dim.item<int64_t>(), 3);
}

// Two steps against the scalar reference: small then large gradient (the
// second clipped against the new max), and large then small (the second
// under 0.8 x the decayed max: not clipped, applied whole).
TEST(Ciao, MatchesHandComputationWithAndWithoutClipping) {
  CiaoHyperparameters h;
  h.lr = 3e-2;
  h.weight_decay = 0.1;
  std::vector<double> p0 = {0.5, -1.0, 2.0, 0.25};
  struct Case {
    std::vector<double> g1, g2;
    bool clipped2;
  };
  std::vector<Case> cases = {
      {{0.01, -0.02, 0.03, 0.0}, {1.0, 2.0, -1.5, 0.5}, true},
      {{3.0, -4.0, 1.0, 2.0}, {0.1, 0.2, -0.1, 0.05}, false},
  };
  for (const auto& c : cases) {
    RefCiao ref;
    std::vector<double> p = p0;
    std::vector<torch::Tensor> params = {Row(p0)};
    CiaoState st = InitCiaoState(params);
    for (const auto* g : {&c.g1, &c.g2}) {
      std::vector<double> u_ref = ref.Step(p, *g, h);
      CiaoStepResult r = CiaoStep(params, {Row(*g)}, &st, CiaoHparamTensors::Fill(1, h));
      std::vector<double> u = Vec(r.updates[0]);
      for (size_t i = 0; i < p.size(); ++i) {
        EXPECT_NEAR(u[i], u_ref[i], 1e-14 + 1e-12 * std::abs(u_ref[i]));
        p[i] -= u_ref[i];
      }
      EXPECT_EQ(r.stats.clipped.item<double>(), ref.last_clipped ? 1.0 : 0.0);
      EXPECT_NEAR(r.stats.clip_scale.item<double>(), ref.last_scale, 1e-14);
      params[0] = params[0] - r.updates[0];
    }
    EXPECT_EQ(ref.last_clipped, c.clipped2);
    EXPECT_EQ(st.step.item<int64_t>(), 2);
  }
}

// The stats are those of the step taken: |u|, cos(g, u) from the returned u.
TEST(Ciao, StatsDescribeTheUpdate) {
  torch::manual_seed(1);
  std::vector<torch::Tensor> params = {torch::randn({2, 3, 4}), torch::randn({2, 4})};
  std::vector<torch::Tensor> grads = {torch::randn({2, 3, 4}), torch::randn({2, 4})};
  CiaoState st = InitCiaoState(params);
  CiaoStepResult r = CiaoStep(params, grads, &st, CiaoHparamTensors::Fill(2, {}));
  torch::Tensor u = torch::cat({r.updates[0].reshape({2, -1}), r.updates[1].reshape({2, -1})}, 1);
  torch::Tensor g = torch::cat({grads[0].reshape({2, -1}), grads[1].reshape({2, -1})}, 1);
  torch::Tensor cos = (u * g).sum(1) / (u.norm(2, 1) * g.norm(2, 1));
  EXPECT_TRUE(torch::allclose(r.stats.update_norm.to(torch::kFloat32), u.norm(2, 1), 1e-5));
  EXPECT_TRUE(torch::allclose(r.stats.cos_grad_update.to(torch::kFloat32), cos, 1e-4));
  EXPECT_TRUE((r.stats.cos_grad_update > 0.5).all().item<bool>());  // Adam descends along g
  EXPECT_EQ(r.stats.dim[0].item<int64_t>(), 16);
}

// P particles with their own hyperparameters in one call give what each
// particle gives alone, with and without LAMB.
TEST(Ciao, BatchedEqualsPerParticleLoop) {
  for (bool lamb : {false, true}) {
    torch::manual_seed(7);
    const int64_t P = 4;
    CiaoOptions opt;
    opt.lamb = lamb;
    CiaoHparamTensors h = CiaoHparamTensors::Fill(P, {});
    h.lr = torch::tensor({1e-3, 1e-2, 3e-4, 1e-1}, torch::kFloat64);
    h.one_minus_beta1 = torch::tensor({0.1, 0.5, 0.02, 1.0}, torch::kFloat64);
    h.one_minus_beta2 = torch::tensor({1e-2, 1e-3, 0.1, 1e-4}, torch::kFloat64);
    h.eps = torch::tensor({1e-6, 1e-3, 1e-8, 1e-1}, torch::kFloat64);
    h.weight_decay = torch::tensor({1e-2, 0.0, 0.5, 1e-4}, torch::kFloat64);
    h.clip_fraction = torch::tensor({0.8, 0.3, 0.99, 0.5}, torch::kFloat64);
    std::vector<torch::Tensor> params = {torch::randn({P, 5, 3}), torch::randn({P, 3})};
    std::vector<std::vector<torch::Tensor>> single(P);
    std::vector<CiaoState> single_state;
    for (int64_t i = 0; i < P; ++i) {
      single[i] = {params[0].slice(0, i, i + 1).clone(), params[1].slice(0, i, i + 1).clone()};
      single_state.push_back(InitCiaoState(single[i]));
    }
    CiaoState st = InitCiaoState(params);
    for (int step = 0; step < 5; ++step) {
      // Gradient scale varies by step so that clipping engages on some.
      double scale = (step % 2 == 0) ? 1.0 : 0.1 * (step + 1);
      std::vector<torch::Tensor> grads = {torch::randn({P, 5, 3}) * scale,
                                          torch::randn({P, 3}) * scale};
      CiaoStepResult r = CiaoStep(params, grads, &st, h, opt);
      for (int64_t i = 0; i < P; ++i) {
        torch::Tensor idx = torch::tensor({i}, torch::kInt64);
        std::vector<torch::Tensor> g = {grads[0].slice(0, i, i + 1), grads[1].slice(0, i, i + 1)};
        CiaoStepResult ri = CiaoStep(single[i], g, &single_state[i], h.Select(idx), opt);
        for (int k = 0; k < 2; ++k) {
          EXPECT_TRUE(torch::allclose(r.updates[k][i], ri.updates[k][0], 1e-5, 1e-7))
              << "lamb " << lamb << " step " << step << " particle " << i << " tensor " << k;
          single[i][k] = single[i][k] - ri.updates[k];
        }
        EXPECT_EQ(r.stats.clipped[i].item<double>(), ri.stats.clipped[0].item<double>());
        EXPECT_NEAR(r.stats.cos_grad_momentum[i].item<double>(),
                    ri.stats.cos_grad_momentum[0].item<double>(), 1e-5);
        EXPECT_NEAR(r.stats.update_norm[i].item<double>(), ri.stats.update_norm[0].item<double>(),
                    1e-6 * (1 + ri.stats.update_norm[0].item<double>()));
      }
      for (int k = 0; k < 2; ++k) params[k] = params[k] - r.updates[k];
    }
  }
}

// With LAMB, a matrix's step is lr * |p| (trust = |p| / |r|); a vector's
// step is not rescaled.
TEST(Ciao, LambTrustRatioScalesMatricesOnly) {
  torch::manual_seed(2);
  std::vector<torch::Tensor> params = {torch::randn({1, 6, 5}, torch::kFloat64),
                                       torch::randn({1, 5}, torch::kFloat64)};
  std::vector<torch::Tensor> grads = {torch::randn({1, 6, 5}, torch::kFloat64),
                                      torch::randn({1, 5}, torch::kFloat64)};
  CiaoHyperparameters h;
  h.lr = 0.01;
  CiaoOptions with;
  with.lamb = true;
  CiaoState s1 = InitCiaoState(params), s2 = InitCiaoState(params);
  auto plain = CiaoStep(params, grads, &s1, CiaoHparamTensors::Fill(1, h));
  auto lamb = CiaoStep(params, grads, &s2, CiaoHparamTensors::Fill(1, h), with);
  EXPECT_NEAR(lamb.updates[0].norm().item<double>(), 0.01 * params[0].norm().item<double>(),
              1e-12);
  EXPECT_TRUE(torch::allclose(lamb.updates[1], plain.updates[1]));
}

// With clipping out of reach and fixed betas, CIAO is AdamW: compare the
// torch::optim form with LibTorch's own AdamW on a small module, then check
// that set_hyperparameters takes effect on the next step.
TEST(Ciao, OptimizerMatchesTorchAdamWAndTakesNewHyperparameters) {
  torch::manual_seed(5);
  torch::nn::Linear a(4, 3), b(4, 3);
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < a->parameters().size(); ++i)
      b->parameters()[i].copy_(a->parameters()[i]);
  }
  CiaoHyperparameters h;
  h.clip_fraction = 1e9;
  CiaoOptimizer ciao(a->parameters(), h);
  torch::optim::AdamW adamw(b->parameters(), torch::optim::AdamWOptions(1e-3)
                                                 .betas(std::make_tuple(0.9, 0.99))
                                                 .eps(1e-6)
                                                 .weight_decay(1e-2));
  torch::Tensor x = torch::randn({8, 4}), y = torch::randn({8, 3});
  for (int s = 0; s < 5; ++s) {
    ciao.zero_grad();
    adamw.zero_grad();
    torch::mse_loss(a(x), y).backward();
    torch::mse_loss(b(x), y).backward();
    ciao.step();
    adamw.step();
  }
  for (size_t i = 0; i < a->parameters().size(); ++i)
    EXPECT_TRUE(torch::allclose(a->parameters()[i], b->parameters()[i], 1e-5, 1e-7)) << i;
  EXPECT_EQ(ciao.last_stats().clipped.item<double>(), 0.0);

  EXPECT_EQ(ciao.iteration(), 5);
}

// A new learning rate takes effect on the next step and nothing else
// changes: from the same state, lr x2 gives exactly twice the step (u is
// linear in lr). LibTorch's set_lr (what its schedulers call) is the same knob.
TEST(Ciao, OptimizerTakesNewHyperparameters) {
  torch::manual_seed(6);
  torch::Tensor x = torch::randn({8, 4}), y = torch::randn({8, 3});
  std::vector<torch::Tensor> steps;
  for (int variant = 0; variant < 3; ++variant) {
    torch::manual_seed(9);
    torch::nn::Linear m(4, 3);
    CiaoOptimizer opt(m->parameters());
    for (int s = 0; s < 3; ++s) {
      opt.zero_grad();
      torch::mse_loss(m(x), y).backward();
      opt.step();
    }
    CiaoHyperparameters h = opt.hyperparameters();
    if (variant == 1) {
      h.lr *= 2;
      opt.set_hyperparameters(h);
      EXPECT_DOUBLE_EQ(opt.hyperparameters().lr, 2e-3);
    }
    if (variant == 2) opt.param_groups()[0].options().set_lr(2e-3);
    torch::Tensor before = m->weight.detach().clone();
    opt.zero_grad();
    torch::mse_loss(m(x), y).backward();
    opt.step();
    steps.push_back(before - m->weight.detach());
  }
  // float32 parameters: the difference of two values near 0.5 carries
  // rounding of about 1e-4 of a 1e-3 step.
  EXPECT_TRUE(torch::allclose(steps[1], 2 * steps[0], 1e-3, 1e-8));
  EXPECT_TRUE(torch::allclose(steps[2], steps[1], 1e-6, 1e-10));
  EXPECT_FALSE(torch::allclose(steps[1], steps[0], 1e-3, 1e-8));
}

// A saved optimizer resumes exactly: moments, bias corrections, rolling max
// and hyperparameters all come back.
TEST(Ciao, OptimizerSaveLoadResumesExactly) {
  torch::manual_seed(8);
  torch::Tensor x = torch::randn({8, 4}), y = torch::randn({8, 3});
  torch::nn::Linear a(4, 3);
  CiaoHyperparameters h;
  h.lr = 5e-3;
  h.clip_fraction = 0.6;
  CiaoOptimizer opt_a(a->parameters(), h);
  auto train = [&](torch::nn::Linear& m, CiaoOptimizer& o, int steps) {
    for (int s = 0; s < steps; ++s) {
      o.zero_grad();
      torch::mse_loss(m(x), y).backward();
      o.step();
    }
  };
  train(a, opt_a, 3);
  std::stringstream buf;
  {
    torch::serialize::OutputArchive out;
    opt_a.save(out);
    out.save_to(buf);
  }
  torch::nn::Linear b(4, 3);
  {
    torch::NoGradGuard ng;
    b->weight.copy_(a->weight);
    b->bias.copy_(a->bias);
  }
  CiaoOptimizer opt_b(b->parameters());  // default hyperparameters until load
  {
    torch::serialize::InputArchive in;
    in.load_from(buf);
    opt_b.load(in);
  }
  EXPECT_DOUBLE_EQ(opt_b.hyperparameters().clip_fraction, 0.6);
  EXPECT_EQ(opt_b.iteration(), 3);
  train(a, opt_a, 2);
  train(b, opt_b, 2);
  EXPECT_TRUE(torch::equal(a->weight, b->weight));
  EXPECT_TRUE(torch::equal(a->bias, b->bias));
}

}  // namespace
}  // namespace lopt
