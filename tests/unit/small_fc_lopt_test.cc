// small_fc_lopt against values computed here by hand, element by element,
// in double precision, with no tensor operations.
#include "common/elo/small_fc_lopt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "common/tasks/task.h"

namespace lopt {
namespace {

const double kMom[3] = {0.9, 0.99, 0.999};
const double kFac[3] = {0.9, 0.99, 0.999};

// Hand reference for one particle's tensor of shape `shape`.
struct Ref {
  std::vector<int64_t> shape;
  int64_t n;
  int d0 = -1, d1 = -1;
  std::vector<double> mom[3], rms, v[3];      // per element
  std::map<std::vector<int64_t>, double> vrow[3], vcol[3];  // keyed by reduced index

  explicit Ref(std::vector<int64_t> s) : shape(std::move(s)) {
    n = std::accumulate(shape.begin(), shape.end(), int64_t(1), std::multiplies<int64_t>());
    for (int k = 0; k < 3; ++k) mom[k].assign(n, 0), v[k].assign(n, 0);
    rms.assign(n, 0);
    if (shape.size() >= 2) {
      // Largest dim, ties to the higher axis; then the largest of the rest.
      for (int a = 0; a < int(shape.size()); ++a)
        if (d0 < 0 || shape[a] >= shape[d0]) d0 = a;
      for (int a = 0; a < int(shape.size()); ++a)
        if (a != d0 && (d1 < 0 || shape[a] >= shape[d1])) d1 = a;
    }
  }
  std::vector<int64_t> Index(int64_t e) const {
    std::vector<int64_t> idx(shape.size());
    for (int a = int(shape.size()) - 1; a >= 0; --a) {
      idx[a] = e % shape[a];
      e /= shape[a];
    }
    return idx;
  }
  static std::vector<int64_t> Without(std::vector<int64_t> idx, int a) {
    idx[a] = -1;  // marks the reduced axis
    return idx;
  }
  void Accumulate(const std::vector<double>& g) {
    for (int64_t e = 0; e < n; ++e) {
      for (int k = 0; k < 3; ++k) mom[k][e] = kMom[k] * mom[k][e] + (1 - kMom[k]) * g[e];
      rms[e] = 0.999 * rms[e] + 0.001 * g[e] * g[e];
    }
    if (d0 < 0) {
      for (int64_t e = 0; e < n; ++e)
        for (int k = 0; k < 3; ++k) v[k][e] = kFac[k] * v[k][e] + (1 - kFac[k]) * (g[e] * g[e] + 1e-30);
      return;
    }
    std::map<std::vector<int64_t>, double> row_sum, col_sum;
    for (int64_t e = 0; e < n; ++e) {
      auto idx = Index(e);
      row_sum[Without(idx, d0)] += g[e] * g[e] + 1e-30;
      col_sum[Without(idx, d1)] += g[e] * g[e] + 1e-30;
    }
    for (int k = 0; k < 3; ++k) {
      for (auto& [key, s] : row_sum)
        vrow[k][key] = kFac[k] * vrow[k][key] + (1 - kFac[k]) * s / shape[d0];
      for (auto& [key, s] : col_sum)
        vcol[k][key] = kFac[k] * vcol[k][key] + (1 - kFac[k]) * s / shape[d1];
    }
  }
  // The 28 features of element e.
  std::vector<double> Features(int64_t e, double p, double g) const {
    std::vector<double> f = {g, p, mom[0][e], mom[1][e], mom[2][e], rms[e]};
    double rr = 1 / std::sqrt(rms[e] + 1e-6);
    for (int k = 0; k < 3; ++k) f.push_back(mom[k][e] * rr);
    f.push_back(rr);
    if (d0 < 0) {
      for (int k = 0; k < 3; ++k) f.push_back(g / std::sqrt(std::max(v[k][e] + 1e-9, 1e-9)));
      for (int k = 0; k < 3; ++k) f.push_back(v[k][e]);
      for (int k = 0; k < 3; ++k) f.push_back(v[k][e]);
      for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(v[k][e] + 1e-8));
      for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(v[k][e] + 1e-8));
      for (int k = 0; k < 3; ++k) f.push_back(mom[k][e] / std::sqrt(v[k][e] + 1e-6));
      return f;
    }
    auto idx = Index(e);
    auto rkey = Without(idx, d0), ckey = Without(idx, d1);
    double vr[3], vc[3], rc[3];
    for (int k = 0; k < 3; ++k) {
      vr[k] = vrow[k].at(rkey);
      vc[k] = vcol[k].at(ckey);
      // Mean of v_row over the d1 axis.
      double mean = 0;
      for (int64_t j = 0; j < shape[d1]; ++j) {
        auto key = rkey;
        key[d1] = j;
        mean += vrow[k].at(key);
      }
      mean /= shape[d1];
      double rf = 1 / std::sqrt(std::max(vr[k] / (mean + 1e-9), 1e-9));
      double cf = 1 / std::sqrt(std::max(vc[k], 1e-9));
      rc[k] = rf * cf;
    }
    for (int k = 0; k < 3; ++k) f.push_back(g * rc[k]);
    for (int k = 0; k < 3; ++k) f.push_back(vr[k]);
    for (int k = 0; k < 3; ++k) f.push_back(vc[k]);
    for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(vr[k] + 1e-8));
    for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(vc[k] + 1e-8));
    for (int k = 0; k < 3; ++k) f.push_back(mom[k][e] * rc[k]);
    return f;
  }
};

std::vector<double> ToVec(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat64).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

void ExpectClose(double got, double want, const std::string& what) {
  EXPECT_NEAR(got, want, 2e-4 * std::abs(want) + 1e-6) << what;
}

// Two accumulation steps with different gradients on P = 2 particles, then
// every raw feature of every element of particle 1 against the hand values.
void CheckFeatures(std::vector<int64_t> shape) {
  torch::manual_seed(7);
  std::vector<int64_t> full = shape;
  full.insert(full.begin(), 2);
  torch::Tensor p = torch::randn(full);
  LoptState st = SmallFcLopt(v1::LearnedOptimizerSpec()).InitState({p});
  Ref ref(shape);
  torch::Tensor g;
  for (int s = 0; s < 2; ++s) {
    g = torch::randn(full) * (s + 1) * 0.3;
    SmallFcLopt::Accumulate(g, &st[0]);
    ref.Accumulate(ToVec(g[1]));
  }
  torch::Tensor f = SmallFcLopt::RawFeatures(p, g, st[0]);
  ASSERT_EQ(f.dim(), 3);
  ASSERT_EQ(f.size(0), 2);
  ASSERT_EQ(f.size(1), ref.n);
  ASSERT_EQ(f.size(2), 28);
  std::vector<double> pv = ToVec(p[1]), gv = ToVec(g[1]);
  std::vector<double> got = ToVec(f[1]);
  for (int64_t e = 0; e < ref.n; ++e) {
    std::vector<double> want = ref.Features(e, pv[e], gv[e]);
    for (int j = 0; j < 28; ++j)
      ExpectClose(got[e * 28 + j], want[j],
                  "shape " + c10::str(shape) + " element " + std::to_string(e) + " feature " +
                      std::to_string(j));
  }
}

TEST(SmallFcLopt, FactoredDims) {
  auto f = FactoredDimsOf({5, 4});
  EXPECT_TRUE(f.factored);
  EXPECT_EQ(f.d0, 0);
  EXPECT_EQ(f.d1, 1);
  f = FactoredDimsOf({3, 2, 3, 3});
  EXPECT_EQ(f.d0, 3);
  EXPECT_EQ(f.d1, 2);
  f = FactoredDimsOf({4, 5});
  EXPECT_EQ(f.d0, 1);
  EXPECT_EQ(f.d1, 0);
  f = FactoredDimsOf({8, 3, 4, 4});
  EXPECT_EQ(f.d0, 0);
  EXPECT_EQ(f.d1, 3);
  EXPECT_FALSE(FactoredDimsOf({7}).factored);
  EXPECT_FALSE(FactoredDimsOf({}).factored);
}

TEST(SmallFcLopt, FeaturesOf2DTensorMatchHandValues) { CheckFeatures({5, 4}); }
TEST(SmallFcLopt, FeaturesOfTransposed2DTensorMatchHandValues) { CheckFeatures({3, 6}); }
TEST(SmallFcLopt, FeaturesOf1DTensorMatchHandValues) { CheckFeatures({7}); }
TEST(SmallFcLopt, FeaturesOf4DConvTensorMatchHandValues) { CheckFeatures({3, 2, 3, 3}); }
TEST(SmallFcLopt, FeaturesOf4DTensorWithTiesMatchHandValues) { CheckFeatures({8, 3, 4, 4}); }

TEST(SmallFcLopt, NormalisationIsPerParticleAndFeature) {
  torch::Tensor raw = torch::randn({2, 6, 28});
  raw[1] *= 100;  // a particle's scale must not leak into the other's
  torch::Tensor n = SmallFcLopt::NormalizeFeatures(raw);
  std::vector<double> r = ToVec(raw), out = ToVec(n);
  for (int p = 0; p < 2; ++p)
    for (int j = 0; j < 28; ++j) {
      double ms = 0;
      for (int e = 0; e < 6; ++e) ms += r[(p * 6 + e) * 28 + j] * r[(p * 6 + e) * 28 + j];
      ms /= 6;
      for (int e = 0; e < 6; ++e) {
        int i = (p * 6 + e) * 28 + j;
        ExpectClose(out[i], r[i] / std::sqrt(1e-5 + ms), "normalised feature");
      }
    }
}

TEST(SmallFcLopt, TimeFeatures) {
  torch::Tensor tf = SmallFcLopt::TimeFeatures(torch::tensor({0, 10, 3000}, torch::kInt64));
  ASSERT_EQ(tf.sizes(), (std::vector<int64_t>{3, 11}));
  const double tau[11] = {1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5};
  for (int i = 0; i < 11; ++i) {
    ExpectClose(tf[0][i].item<double>(), std::tanh(-1.0), "t=0");
    ExpectClose(tf[1][i].item<double>(), std::tanh(10 / tau[i] - 1), "t=10");
    ExpectClose(tf[2][i].item<double>(), std::tanh(3000 / tau[i] - 1), "t=3000");
  }
  EXPECT_NEAR(tf[1][2].item<double>(), 0.0, 1e-7);  // tau = 10 at t = 10
}

TEST(SmallFcLopt, ThetaHas2402ParametersAndFanInInit) {
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  EXPECT_EQ(lo.theta_size(), 2402);
  torch::Generator gen = MakeGenerator(1, 2, 3);
  torch::Tensor theta = lo.InitTheta(gen);
  ASSERT_EQ(theta.numel(), 2402);
  torch::Tensor w0 = theta.narrow(0, 0, 39 * 32);
  EXPECT_NEAR(w0.std().item<double>(), 0.88 / std::sqrt(39.0), 0.03);  // truncated at 2 std
  EXPECT_LE(w0.abs().max().item<double>(), 2 / std::sqrt(39.0) + 1e-6);
  EXPECT_EQ(theta.narrow(0, 39 * 32, 32).abs().sum().item<double>(), 0);  // b0
}

// With every weight zero the MLP outputs its last bias (d, m) for every
// element, so the update is step_mult * d * exp(exp_mult * m) exactly.
TEST(SmallFcLopt, UpdateFormula) {
  v1::LearnedOptimizerSpec spec;
  spec.set_step_mult(0.01f);
  spec.set_exp_mult(0.5f);
  SmallFcLopt lo(spec);
  torch::Tensor theta = torch::zeros({2, lo.theta_size()});
  theta[0][lo.theta_size() - 2] = 3.0;   // d, particle 0
  theta[0][lo.theta_size() - 1] = -2.0;  // m
  theta[1][lo.theta_size() - 2] = -1.0;
  theta[1][lo.theta_size() - 1] = 4.0;
  std::vector<torch::Tensor> params = {torch::randn({2, 5, 4}), torch::randn({2, 3})};
  std::vector<torch::Tensor> grads = {torch::randn({2, 5, 4}), torch::randn({2, 3})};
  LoptState st = lo.InitState(params);
  auto u = lo.Step(params, grads, &st, torch::zeros({2}, torch::kInt64), theta);
  ASSERT_EQ(u.size(), 2u);
  EXPECT_EQ(u[0].sizes(), params[0].sizes());
  EXPECT_EQ(u[1].sizes(), params[1].sizes());
  double want0 = 0.01 * 3.0 * std::exp(0.5 * -2.0), want1 = 0.01 * -1.0 * std::exp(0.5 * 4.0);
  for (auto& t : u) {
    EXPECT_NEAR(t[0].min().item<double>(), want0, 1e-6);
    EXPECT_NEAR(t[0].max().item<double>(), want0, 1e-6);
    EXPECT_NEAR(t[1].min().item<double>(), want1, 1e-5);
    EXPECT_NEAR(t[1].max().item<double>(), want1, 1e-5);
  }
}

// The MLP against a hand-evaluated 39 -> 32 -> 32 -> 2 ReLU network.
TEST(SmallFcLopt, MlpMatchesHandEvaluation) {
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(5, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen) + 0.05 * torch::randn({2402}, gen);
  torch::Tensor x = torch::randn({1, 3, 28}, gen);
  torch::Tensor tf = SmallFcLopt::TimeFeatures(torch::tensor({17}, torch::kInt64));
  torch::Tensor out = lo.Mlp(x, tf, theta);
  std::vector<double> th = ToVec(theta), xv = ToVec(x), tv = ToVec(tf), ov = ToVec(out);
  const int H = 32;
  for (int e = 0; e < 3; ++e) {
    std::vector<double> in(39);
    for (int i = 0; i < 28; ++i) in[i] = xv[e * 28 + i];
    for (int i = 0; i < 11; ++i) in[28 + i] = tv[i];
    size_t o = 0;
    auto layer = [&](const std::vector<double>& a, int rows, int cols, bool relu) {
      std::vector<double> r(cols);
      for (int c = 0; c < cols; ++c) {
        double s = th[o + rows * cols + c];  // bias
        for (int i = 0; i < rows; ++i) s += a[i] * th[o + i * cols + c];
        r[c] = relu ? std::max(0.0, s) : s;
      }
      o += rows * cols + cols;
      return r;
    };
    auto h1 = layer(in, 39, H, true);
    auto h2 = layer(h1, H, H, true);
    auto y = layer(h2, H, 2, false);
    ExpectClose(ov[e * 2], y[0], "direction");
    ExpectClose(ov[e * 2 + 1], y[1], "magnitude");
  }
}

// Particles are independent: perturbing one particle's theta changes only
// its own updates.
TEST(SmallFcLopt, PerParticleThetaOnlyAffectsItsParticle) {
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(9, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen).unsqueeze(0).repeat({3, 1});
  std::vector<torch::Tensor> params = {torch::randn({3, 6, 5}), torch::randn({3, 5})};
  std::vector<torch::Tensor> grads = {torch::randn({3, 6, 5}), torch::randn({3, 5})};
  LoptState a = lo.InitState(params), b = lo.InitState(params);
  auto ua = lo.Step(params, grads, &a, torch::zeros({3}, torch::kInt64), theta);
  torch::Tensor theta2 = theta.clone();
  theta2[1] += 0.1 * torch::randn({lo.theta_size()}, gen);
  auto ub = lo.Step(params, grads, &b, torch::zeros({3}, torch::kInt64), theta2);
  for (size_t j = 0; j < ua.size(); ++j) {
    EXPECT_TRUE(torch::equal(ua[j][0], ub[j][0]));
    EXPECT_TRUE(torch::equal(ua[j][2], ub[j][2]));
    EXPECT_FALSE(torch::allclose(ua[j][1], ub[j][1]));
  }
}

}  // namespace
}  // namespace lopt
