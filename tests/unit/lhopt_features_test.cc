#include "common/lhopt/lhopt_features.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include <torch/torch.h>

namespace lopt {
namespace {

double Phi(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

int Col(const std::string& name) {
  const auto& n = FeatureNames();
  for (size_t i = 0; i < n.size(); ++i)
    if (n[i] == name) return static_cast<int>(i);
  ADD_FAILURE() << "no feature " << name;
  return -1;
}

// The sequence 1, 2, 4, 4 with decay 0.5, by hand:
//   x=1: no history -> 0.5
//   x=2: history {1}, var 0 -> z = 1 / sqrt(1e-8) -> 1
//   x=4: weights {0.5, 1} on {1, 2}: mu = 2.5/1.5, E[x^2] = 4.5/1.5 = 3,
//        var = 3 - 25/9 = 2/9
//   x=4: weights {0.25, 0.5, 1} on {1, 2, 4}: mu = 5.25/1.75 = 3,
//        E[x^2] = 18.25/1.75, var = 18.25/1.75 - 9 = 10/7
TEST(LhoptFeatures, CdfOfAKnownSequence) {
  RunningGaussianCdf cdf(1, 1, 0.5, 1e-8);
  auto at = [](double x) { return torch::full({1, 1}, x, torch::kFloat64); };
  EXPECT_DOUBLE_EQ(cdf.CdfThenUpdate(at(1)).item<double>(), 0.5);
  EXPECT_NEAR(cdf.CdfThenUpdate(at(2)).item<double>(), 1.0, 1e-12);
  double mu = 2.5 / 1.5, var = 2.0 / 9.0;
  EXPECT_NEAR(cdf.CdfThenUpdate(at(4)).item<double>(), Phi((4 - mu) / std::sqrt(var + 1e-8)),
              1e-12);
  EXPECT_NEAR(cdf.mean().item<double>(), 3.0, 1e-12);
  EXPECT_NEAR(cdf.variance().item<double>(), 10.0 / 7.0, 1e-12);
  EXPECT_NEAR(cdf.CdfThenUpdate(at(4)).item<double>(), Phi(1 / std::sqrt(10.0 / 7.0 + 1e-8)),
              1e-12);
  // A value below the history's mean maps below one half, symmetrically.
  RunningGaussianCdf sym(1, 1, 0.5, 1e-8);
  for (double x : {1.0, 2.0, 4.0}) sym.CdfThenUpdate(at(x));
  EXPECT_NEAR(sym.CdfThenUpdate(at(2)).item<double>(), 1 - Phi(1 / std::sqrt(10.0 / 7.0 + 1e-8)),
              1e-12);
}

TEST(LhoptFeatures, CdfSkipsNonFiniteAndResetsRows) {
  RunningGaussianCdf cdf(2, 1, 0.9);
  torch::Tensor x = torch::tensor({{1.0}, {5.0}}, torch::kFloat64);
  cdf.CdfThenUpdate(x);
  torch::Tensor mean_before = cdf.mean().clone();
  torch::Tensor out =
      cdf.CdfThenUpdate(torch::tensor({{std::nan("")}, {5.0}}, torch::kFloat64));
  EXPECT_DOUBLE_EQ(out[0][0].item<double>(), 0.5);
  EXPECT_TRUE(torch::equal(cdf.mean(), mean_before));
  cdf.ResetRows(torch::tensor({false, true}));
  // Row 1 forgot its history: its next value is at the median again.
  out = cdf.CdfThenUpdate(torch::tensor({{3.0}, {100.0}}, torch::kFloat64));
  EXPECT_DOUBLE_EQ(out[1][0].item<double>(), 0.5);
  EXPECT_GT(out[0][0].item<double>(), 0.99);
}

TEST(LhoptFeatures, StatsMeanGivesFractionClipped) {
  CiaoStatsMean mean;
  for (int s = 0; s < 4; ++s) {
    CiaoStats st;
    auto f = [](double x) { return torch::full({2}, x, torch::kFloat64); };
    st.grad_norm = f(s);
    st.clipped = torch::tensor({s % 2 == 0 ? 1.0 : 0.0, 1.0}, torch::kFloat64);
    st.clip_scale = st.update_norm = st.param_norm = st.momentum_norm =
        st.momentum_minus_grad_norm = f(1);
    st.cos_grad_momentum = st.cos_grad_param = st.cos_grad_update = f(0.1 * s);
    st.dim = torch::full({2}, 10, torch::kInt64);
    mean.Add(st);
  }
  CiaoStats m = mean.Mean();
  EXPECT_DOUBLE_EQ(m.clipped[0].item<double>(), 0.5);
  EXPECT_DOUBLE_EQ(m.clipped[1].item<double>(), 1.0);
  EXPECT_NEAR(m.cos_grad_momentum[0].item<double>(), 0.15, 1e-12);
  EXPECT_DOUBLE_EQ(m.grad_norm[1].item<double>(), 1.5);
}

LhoptObservation MakeObservation() {
  const int64_t P = 2;
  auto f = [](std::vector<double> x) { return torch::tensor(x, torch::kFloat64); };
  LhoptObservation o;
  o.progress = f({0.25, 1.0});
  o.train_loss = f({1.0, std::nan("")});
  o.valid_loss = f({2.0, 1.0});
  o.inner.grad_norm = f({1, 1});
  o.inner.clipped = f({0.25, 0});
  o.inner.clip_scale = f({1, 1});
  o.inner.update_norm = f({0.01, 1});
  o.inner.param_norm = f({1, 10});
  o.inner.momentum_norm = f({2, 1});
  o.inner.momentum_minus_grad_norm = f({1, 1});
  o.inner.cos_grad_momentum = f({0.01, 0.5});
  o.inner.cos_grad_param = f({-0.01, 0});
  o.inner.cos_grad_update = f({0.02, 0.9});
  o.inner.dim = torch::tensor({10000, 4}, torch::kInt64);
  o.hparams = CiaoHparamTensors::Fill(P, {});
  o.hparams.lr = f({2e-3, 1e-3});
  o.prev_actions = KeepActions(P);
  o.prev_actions[1][kHeadLr] = 6;
  o.prev_actions[1][kHeadRegisters] = 9;
  std::vector<RestartRegisters> regs(P);
  regs[0].Apply({RegisterOp::kSave, 1}, 7, 4.0, 0.1);
  FillRegisterObservation(regs, &o);
  return o;
}

TEST(LhoptFeatures, LayoutAndValues) {
  const auto& names = FeatureNames();
  ASSERT_EQ(static_cast<int64_t>(names.size()), kNumLhoptFeatures);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()).size(), names.size());
  EXPECT_EQ(36 + TotalActionChoices(), kNumLhoptFeatures);

  LhoptFeatureBuilder builder(2);
  torch::Tensor x = builder.Build(MakeObservation()).to(torch::kFloat64);
  ASSERT_EQ(x.sizes(), torch::IntArrayRef({2, kNumLhoptFeatures}));
  auto v = [&](int p, const std::string& name) { return x[p][Col(name)].item<double>(); };
  EXPECT_NEAR(v(0, "progress"), 0.25, 1e-7);
  EXPECT_NEAR(v(0, "log_train_over_valid_loss"), std::log(0.5), 1e-6);
  EXPECT_EQ(v(0, "train_loss_nonfinite"), 0);
  EXPECT_EQ(v(1, "train_loss_nonfinite"), 1);
  EXPECT_EQ(v(1, "log_train_over_valid_loss"), 0);  // NaN loss: no ratio
  // Phi(cos sqrt(dim)): 0.01 * 100 = 1 standard deviation of random cosines.
  EXPECT_NEAR(v(0, "cdf_scaled_cos_grad_momentum"), Phi(1.0), 1e-6);
  EXPECT_NEAR(v(0, "cdf_scaled_cos_grad_param"), Phi(-1.0), 1e-6);
  EXPECT_NEAR(v(1, "cdf_scaled_cos_grad_update"), Phi(1.8), 1e-6);
  EXPECT_NEAR(v(0, "clip_fraction"), 0.25, 1e-7);
  EXPECT_NEAR(v(0, "log_update_over_param_norm"), std::log(0.01), 1e-5);
  EXPECT_NEAR(v(0, "log_noise_scale"), std::log(0.5), 1e-5);
  EXPECT_NEAR(v(0, "log_lr_over_default"), std::log(2.0), 1e-6);
  EXPECT_NEAR(v(0, "log_eps_over_default"), 0, 1e-7);
  EXPECT_NEAR(v(0, "logit_clip_fraction_over_default"), 0, 1e-6);
  // First decision: every CDF feature is at the median.
  for (int c = Col("cdf_log_train_loss"); c <= Col("cdf_log_noise_scale"); ++c)
    EXPECT_EQ(x[0][c].item<double>(), 0.5) << names[c];
  // Registers: run 0 saved in register 1 at loss 4, progress 0.1.
  EXPECT_EQ(v(0, "register0_filled"), 0);
  EXPECT_EQ(v(0, "register1_filled"), 1);
  EXPECT_NEAR(v(0, "register1_log_loss_over_saved"), std::log(1.0 / 4.0), 1e-6);
  EXPECT_NEAR(v(0, "register1_saved_progress"), 0.1, 1e-7);
  EXPECT_EQ(v(1, "register1_filled"), 0);
  // Previous actions: one one per head.
  EXPECT_EQ(v(0, "prev_lr_3"), 1);  // keep
  EXPECT_EQ(v(1, "prev_lr_6"), 1);
  EXPECT_EQ(v(1, "prev_lr_3"), 0);
  EXPECT_EQ(v(1, "prev_registers_9"), 1);
  EXPECT_EQ(v(0, "prev_clip_fraction_2"), 1);
  EXPECT_NEAR(x.slice(1, 36).sum(1)[0].item<double>(), kNumActionHeads, 1e-9);

  // Second decision, train loss up: its CDF feature goes above one half.
  LhoptObservation o = MakeObservation();
  o.train_loss = torch::tensor({1.5, 1.0}, torch::kFloat64);
  torch::Tensor y = builder.Build(o);
  EXPECT_GT(y[0][Col("cdf_log_train_loss")].item<double>(), 0.99);
  // Run 1's first loss was NaN, so it has no history yet.
  EXPECT_EQ(y[1][Col("cdf_log_train_loss")].item<double>(), 0.5);
}

// One update from the batch {0, 2}: mean 1, variance 1 (bias-corrected);
// outputs clip at 2.
TEST(LhoptFeatures, EwmaNormalizerNormalisesAndClips) {
  EwmaNormalizer norm(1, 0.999, 2.0, 1e-5);
  torch::Tensor probe = torch::tensor({{3.0f}, {5.0f}, {-5.0f}, {1.0f}});
  torch::Tensor before = norm.Normalize(probe);
  EXPECT_FLOAT_EQ(before[0][0].item<float>(), 2.0f);  // mean 0, var 1, clipped
  norm.Update(torch::tensor({{0.0}, {2.0}}));
  EXPECT_NEAR(norm.mean().item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(norm.variance().item<double>(), 1.0, 1e-9);
  torch::Tensor y = norm.Normalize(probe);
  EXPECT_NEAR(y[0][0].item<float>(), 2.0 / std::sqrt(1 + 1e-5), 1e-5);
  EXPECT_FLOAT_EQ(y[1][0].item<float>(), 2.0f);
  EXPECT_FLOAT_EQ(y[2][0].item<float>(), -2.0f);
  EXPECT_NEAR(y[3][0].item<float>(), 0.0, 1e-6);
  // The EWMA moves slowly: a batch at 10 shifts the mean by about 1/2 of
  // (10 - 1) at the second update (bias correction weights 0.001 vs 0.000999).
  norm.Update(torch::tensor({{10.0}, {10.0}}));
  double w1 = 0.001 * 0.999, w2 = 0.001;
  EXPECT_NEAR(norm.mean().item<double>(), (w1 * 1 + w2 * 10) / (w1 + w2), 1e-9);
}

}  // namespace
}  // namespace lopt
