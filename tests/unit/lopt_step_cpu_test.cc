// The fused CPU step (kernels/lopt_step_cpu.h, what SmallFcLopt::Step runs
// on CPU float32) against the op-by-op SmallFcLopt::StepReference.
#include "kernels/lopt_step_cpu.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/tasks/task.h"

namespace lopt {
namespace {

// |a - b| <= 1e-5 |b| + 1e-7 everywhere, with the worst element in the
// failure message.
void ExpectClose(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  torch::Tensor excess = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs() -
                         (1e-5 * b.to(torch::kFloat64).abs() + 1e-7);
  double worst = excess.numel() ? excess.max().item<double>() : -1;
  EXPECT_LE(worst, 0.0) << what << ": max |a - b| = "
                        << (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>()
                        << " at max |b| = " << b.abs().max().item<double>();
}

LoptState CloneState(const LoptState& s) {
  LoptState c;
  for (const auto& t : s)
    c.push_back(LoptTensorState{t.mom.clone(), t.rms.clone(), t.fac_a.clone(), t.fac_b.clone()});
  return c;
}

// Per-particle shapes -> [P, shape...] tensors.
std::vector<torch::Tensor> RandomTensors(const std::vector<std::vector<int64_t>>& shapes, int64_t P,
                                         double scale, torch::Generator& gen) {
  std::vector<torch::Tensor> out;
  for (const auto& s : shapes) {
    std::vector<int64_t> full = {P};
    full.insert(full.end(), s.begin(), s.end());
    out.push_back(scale * torch::randn(full, gen));
  }
  return out;
}

struct Case {
  std::string name;
  std::vector<std::vector<int64_t>> shapes;
  int64_t P;
  bool shared_theta;
  int hidden;
};

// Runs fn once per instruction set the kernel can use on this CPU (AVX-512,
// AVX2, the baseline), then goes back to the widest.
template <typename Fn>
void ForEachIsa(Fn fn) {
  for (const char* isa : {"avx512", "avx2", "generic"}) {
    if (!kernels::SetLoptStepCpuIsa(isa)) continue;
    SCOPED_TRACE(std::string("isa ") + isa);
    fn();
  }
  for (const char* isa : {"avx512", "avx2", "generic"})
    if (kernels::SetLoptStepCpuIsa(isa)) break;
}

void RunCaseOnce(const Case& c);

void RunCase(const Case& c) {
  ForEachIsa([&] { RunCaseOnce(c); });
}

void RunCaseOnce(const Case& c) {
  SCOPED_TRACE(c.name);
  torch::NoGradGuard no_grad;
  v1::LearnedOptimizerSpec spec;
  spec.set_hidden_size(c.hidden);
  spec.set_step_mult(0.01f);
  spec.set_exp_mult(0.3f);
  SmallFcLopt lo(spec);
  torch::Generator gen = MakeGenerator(17, c.P, c.hidden);
  // Away from the initial zero biases, so that every part of theta matters.
  auto perturbed = [&] { return lo.InitTheta(gen) + 0.1 * torch::randn({lo.theta_size()}, gen); };
  torch::Tensor theta;
  if (c.shared_theta) {
    theta = perturbed();
  } else {
    std::vector<torch::Tensor> rows;
    for (int64_t p = 0; p < c.P; ++p) rows.push_back(perturbed());
    theta = torch::stack(rows);
  }
  std::vector<torch::Tensor> params = RandomTensors(c.shapes, c.P, 1.0, gen);
  LoptState fused = lo.InitState(params);
  LoptState ref = CloneState(fused);
  for (int it = 0; it < 5; ++it) {
    SCOPED_TRACE("step " + std::to_string(it));
    // Gradients of different scales per step, and per-particle step counts.
    std::vector<torch::Tensor> grads = RandomTensors(c.shapes, c.P, std::pow(10.0, it % 3 - 1), gen);
    torch::Tensor step = torch::arange(c.P, torch::kInt64) * 13 + it * it * 40;
    ASSERT_TRUE(LoptStepCpuSupports(params, grads, fused, step, theta));
    std::vector<torch::Tensor> uf = lo.Step(params, grads, &fused, step, theta);
    std::vector<torch::Tensor> ur = lo.StepReference(params, grads, &ref, step, theta);
    ASSERT_EQ(uf.size(), ur.size());
    for (size_t j = 0; j < ur.size(); ++j) {
      std::string t = "tensor " + std::to_string(j);
      EXPECT_EQ(uf[j].sizes(), params[j].sizes()) << t;
      EXPECT_TRUE(torch::isfinite(uf[j]).all().item<bool>()) << t;
      ExpectClose(uf[j], ur[j], t + " update");
      ExpectClose(fused[j].mom, ref[j].mom, t + " mom");
      ExpectClose(fused[j].rms, ref[j].rms, t + " rms");
      ExpectClose(fused[j].fac_a, ref[j].fac_a, t + " fac_a");
      ExpectClose(fused[j].fac_b, ref[j].fac_b, t + " fac_b");
    }
    // Both see the same parameters next step.
    for (size_t j = 0; j < params.size(); ++j) params[j] = params[j] - ur[j];
  }
}

const std::vector<std::vector<int64_t>> kMix = {{5, 4}, {7}, {3, 2, 3, 3}, {8, 3, 4, 4}, {}};

TEST(LoptStepCpu, MatchesReferenceOneParticleSharedTheta) {
  RunCase({"P=1 shared", kMix, 1, true, 32});
}

TEST(LoptStepCpu, MatchesReferenceOneParticlePerParticleTheta) {
  RunCase({"P=1 per-particle", kMix, 1, false, 32});
}

TEST(LoptStepCpu, MatchesReferenceThreeParticlesSharedTheta) {
  RunCase({"P=3 shared", kMix, 3, true, 32});
}

TEST(LoptStepCpu, MatchesReferenceThreeParticlesPerParticleTheta) {
  RunCase({"P=3 per-particle", kMix, 3, false, 32});
}

// One tensor kind at a time, and tensors of several kernel work items.
TEST(LoptStepCpu, MatchesReferenceSingleShapes) {
  for (auto s : std::vector<std::vector<int64_t>>{{5, 4}, {7}, {3, 2, 3, 3}, {}, {1}, {40, 30},
                                                  {1000}, {16}, {17, 1}})
    RunCase({"shape of " + std::to_string(s.size()) + " dims, first " +
                 (s.empty() ? std::string("-") : std::to_string(s[0])),
             {s}, 3, false, 32});
}

// Hidden sizes that are not a multiple of the kernels' register blocks.
TEST(LoptStepCpu, MatchesReferenceOtherHiddenSizes) {
  for (int h : {1, 5, 12, 33}) RunCase({"hidden " + std::to_string(h), kMix, 3, false, h});
}

// The fused path on the task it is built for: the 8x8 MLP's four tensors.
TEST(LoptStepCpu, MatchesReferenceFmnistMlpShapes) {
  RunCase({"fmnist 8x8", {{64, 32}, {32}, {32, 10}, {10}}, 4, false, 32});
}

// Magnitudes m with |exp_mult * m| near the float range of exp: 80 through
// the kernel's polynomial, 88.5 through its full-range fallback.
TEST(LoptStepCpu, MatchesReferenceAtLargeMagnitudes) {
  torch::NoGradGuard no_grad;
  v1::LearnedOptimizerSpec spec;
  spec.set_step_mult(1e-30f);
  spec.set_exp_mult(1.0f);
  SmallFcLopt lo(spec);
  const int64_t H = lo.hidden_size();
  const int64_t w2 = 41 * H + H * H, b2 = w2 + 2 * H;
  torch::Generator gen = MakeGenerator(8, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen).unsqueeze(0).repeat({2, 1});
  for (int64_t k = 0; k < H; ++k) {
    theta.select(1, w2 + 2 * k).mul_(0.01);  // |d| well below 1: d * exp(m) stays finite
    theta.select(1, w2 + 2 * k + 1).zero_();
  }
  theta[0][b2 + 1] = 80.0;  // m for every element of particle 0
  theta[1][b2 + 1] = 88.5;
  std::vector<torch::Tensor> params = RandomTensors(kMix, 2, 1.0, gen);
  std::vector<torch::Tensor> grads = RandomTensors(kMix, 2, 1.0, gen);
  ForEachIsa([&] {
    LoptState a = lo.InitState(params);
    LoptState b = CloneState(a);
    torch::Tensor step = torch::full({2}, 3, torch::kInt64);
    auto uf = lo.Step(params, grads, &a, step, theta);
    auto ur = lo.StepReference(params, grads, &b, step, theta);
    // u / (step_mult exp(m)) is the direction d: compare that, so that the
    // tolerance is the one of the other tests.
    torch::Tensor scale =
        (torch::tensor({80.0, 88.5}, torch::kFloat64).exp() * double(spec.step_mult()));
    for (size_t j = 0; j < ur.size(); ++j) {
      EXPECT_TRUE(torch::isfinite(uf[j]).all().item<bool>()) << j;
      std::vector<int64_t> bshape(ur[j].dim(), 1);
      bshape[0] = 2;
      torch::Tensor s = scale.reshape(bshape);
      ExpectClose(uf[j].to(torch::kFloat64) / s, ur[j].to(torch::kFloat64) / s,
                  "tensor " + std::to_string(j));
    }
  });
}

// Perturbing one particle's theta changes its updates and no other's.
TEST(LoptStepCpu, ThetaOfOneParticleOnlyChangesThatParticle) {
  torch::NoGradGuard no_grad;
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(9, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen).unsqueeze(0).repeat({3, 1});
  std::vector<torch::Tensor> params = RandomTensors(kMix, 3, 1.0, gen);
  std::vector<torch::Tensor> grads = RandomTensors(kMix, 3, 1.0, gen);
  LoptState a = lo.InitState(params);
  LoptState b = CloneState(a);
  torch::Tensor step = torch::full({3}, 7, torch::kInt64);
  auto ua = lo.Step(params, grads, &a, step, theta);
  torch::Tensor theta2 = theta.clone();
  theta2[1] += 0.1 * torch::randn({lo.theta_size()}, gen);
  auto ub = lo.Step(params, grads, &b, step, theta2);
  for (size_t j = 0; j < ua.size(); ++j) {
    EXPECT_TRUE(torch::equal(ua[j][0], ub[j][0])) << j;
    EXPECT_TRUE(torch::equal(ua[j][2], ub[j][2])) << j;
    EXPECT_FALSE(torch::allclose(ua[j][1], ub[j][1])) << j;
  }
}

// A shared theta [D] gives what the same theta repeated per particle gives.
TEST(LoptStepCpu, SharedThetaEqualsRepeatedTheta) {
  torch::NoGradGuard no_grad;
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(3, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen);
  std::vector<torch::Tensor> params = RandomTensors(kMix, 3, 1.0, gen);
  std::vector<torch::Tensor> grads = RandomTensors(kMix, 3, 1.0, gen);
  LoptState a = lo.InitState(params);
  LoptState b = CloneState(a);
  torch::Tensor step = torch::tensor({0, 5, 500}, torch::kInt64);
  auto ua = lo.Step(params, grads, &a, step, theta);
  auto ub = lo.Step(params, grads, &b, step, theta.unsqueeze(0).repeat({3, 1}));
  for (size_t j = 0; j < ua.size(); ++j) EXPECT_TRUE(torch::equal(ua[j], ub[j])) << j;
}

// The result does not depend on the number of threads.
TEST(LoptStepCpu, SameResultWhateverTheThreadCount) {
  torch::NoGradGuard no_grad;
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(4, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen);
  std::vector<std::vector<int64_t>> shapes = {{64, 32}, {32}, {32, 10}, {10}};
  std::vector<torch::Tensor> params = RandomTensors(shapes, 16, 1.0, gen);
  std::vector<torch::Tensor> grads = RandomTensors(shapes, 16, 1.0, gen);
  LoptState a = lo.InitState(params);
  LoptState b = CloneState(a);
  torch::Tensor step = torch::zeros({16}, torch::kInt64);
  int threads = at::get_num_threads();
  at::set_num_threads(1);
  auto ua = lo.Step(params, grads, &a, step, theta);
  at::set_num_threads(3);
  auto ub = lo.Step(params, grads, &b, step, theta);
  at::set_num_threads(threads);
  for (size_t j = 0; j < ua.size(); ++j) EXPECT_TRUE(torch::equal(ua[j], ub[j])) << j;
}

// What the kernel cannot run goes to the reference: inputs that need
// autograd (and other dtypes, which the kernel declines).
TEST(LoptStepCpu, FallsBackToReference) {
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(6, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen);
  std::vector<torch::Tensor> params = RandomTensors({{5, 4}, {7}}, 2, 1.0, gen);
  std::vector<torch::Tensor> grads = RandomTensors({{5, 4}, {7}}, 2, 1.0, gen);
  torch::Tensor step = torch::zeros({2}, torch::kInt64);
  LoptState s = lo.InitState(params);
  EXPECT_TRUE(LoptStepCpuSupports(params, grads, s, step, theta));
  EXPECT_FALSE(LoptStepCpuSupports(params, grads, s, step, theta.to(torch::kFloat64)));
  std::vector<torch::Tensor> g64 = {grads[0].to(torch::kFloat64), grads[1]};
  EXPECT_FALSE(LoptStepCpuSupports(params, g64, s, step, theta));

  torch::Tensor leaf = theta.clone().requires_grad_(true);
  LoptState a = CloneState(s), b = CloneState(s);
  EXPECT_FALSE(LoptStepCpuSupports(params, grads, a, step, leaf));
  auto ua = lo.Step(params, grads, &a, step, leaf);
  auto ub = lo.StepReference(params, grads, &b, step, leaf);
  for (size_t j = 0; j < ua.size(); ++j) {
    EXPECT_TRUE(ua[j].requires_grad()) << j;
    EXPECT_TRUE(torch::equal(ua[j], ub[j])) << j;
  }
}

}  // namespace
}  // namespace lopt

namespace lopt {
namespace {

// The shipped optimizer's theta and options (models/fmnist8_elo.lopt), on the
// shapes and scales of the Python package's CUDA-vs-CPU test (parameters 0.1,
// gradients 0.01, step counts 0, 1, 2, ...), where the CPU and CUDA steps were
// seen to differ by 1.7e-4 of the largest update: the fused CPU step stays
// with the op-by-op reference here.
TEST(LoptStepCpu, MatchesReferenceWithTheShippedThetaOnSmallGradients) {
  const char* src = std::getenv("LOPT_SOURCE_DIR");
  if (!src) GTEST_SKIP() << "LOPT_SOURCE_DIR not set (ctest sets it)";
  auto shipped = LoadOptimizerFile(std::string(src) + "/models/fmnist8_elo.lopt");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  ForEachIsa([&] {
    torch::NoGradGuard no_grad;
    SmallFcLopt lo(shipped->file.options());
    torch::Generator gen = MakeGenerator(5, 1, 0);
    std::vector<torch::Tensor> params = RandomTensors({{7, 12}, {7}, {2, 3, 4}, {}}, 1, 0.1, gen);
    LoptState fused = lo.InitState(params);
    LoptState ref = CloneState(fused);
    for (int it = 0; it < 6; ++it) {
      SCOPED_TRACE("step " + std::to_string(it));
      std::vector<torch::Tensor> grads = RandomTensors({{7, 12}, {7}, {2, 3, 4}, {}}, 1, 0.01, gen);
      torch::Tensor step = torch::full({1}, it, torch::kInt64);
      std::vector<torch::Tensor> uf = lo.Step(params, grads, &fused, step, shipped->theta);
      std::vector<torch::Tensor> ur = lo.StepReference(params, grads, &ref, step, shipped->theta);
      for (size_t j = 0; j < ur.size(); ++j) {
        const double worst = (uf[j].to(torch::kFloat64) - ur[j].to(torch::kFloat64)).abs().max().item<double>();
        const double scale = ur[j].to(torch::kFloat64).abs().max().item<double>();
        EXPECT_LE(worst, 1e-5 * scale + 1e-12) << "tensor " << j << ": max |fused - reference| " << worst
                                               << " at max |update| " << scale;
      }
      for (size_t j = 0; j < params.size(); ++j) params[j] = params[j] - ur[j];
    }
  });
}

}  // namespace
}  // namespace lopt
