// PES on a system whose gradient is known in closed form.
//
// Each task's inner state follows s_t = s_{t-1} + theta_t (theta_t the
// particle's perturbed meta-parameters), s_0 = 0, and the loss at step t is
// f(s_t) = 0.5 |s_t - c|^2. Over truncation j (steps jK+1 .. (j+1)K) the
// per-step mean loss has the exact gradient, for a shared theta,
//   g_j = (1/K) sum_t t (t theta - c).
// The loss is quadratic in theta, so its Gaussian smoothing has the same
// gradient. PES must recover g_j in every truncation; truncated ES (no
// persistent accumulator) recovers only the part that flows through the
// current truncation's theta, and is biased from the second truncation on.
#include "common/elo/pes.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/tasks/task.h"

namespace lopt {
namespace {

constexpr int64_t kD = 3, kK = 5, kTruncations = 4;

torch::Tensor TrueGradient(const torch::Tensor& theta, const torch::Tensor& c, int64_t j) {
  torch::Tensor g = torch::zeros({kD}, torch::kFloat64);
  for (int64_t t = j * kK + 1; t <= (j + 1) * kK; ++t) g += double(t) * (double(t) * theta - c);
  return (g / double(kK)).to(torch::kFloat32);
}

double Cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return (torch::dot(a, b) / (a.norm() * b.norm())).item<double>();
}

// Runs kTruncations truncations of T tasks; `persistent` false resets every
// task at every truncation boundary (truncated ES). Returns the estimates.
std::vector<torch::Tensor> RunPes(int64_t T, bool persistent, const torch::Tensor& theta,
                               const torch::Tensor& c, uint64_t seed) {
  PesAccumulator pes(T, kD, /*sigma=*/0.05);
  torch::Tensor s = torch::zeros({2 * T, kD});
  std::vector<torch::Tensor> out;
  for (int64_t j = 0; j < kTruncations; ++j) {
    torch::Generator gen = MakeGenerator(seed, 0, j);
    torch::Tensor th = pes.BeginTruncation(theta, gen);
    if (!persistent && j > 0)
      for (int64_t i = 0; i < T; ++i) pes.Reset(i, torch::zeros({kD}));
    for (int64_t k = 0; k < kK; ++k) {
      s += th;
      pes.AddLosses(0.5 * (s - c).square().sum(1));
    }
    out.push_back(pes.EndTruncation());
  }
  return out;
}

TEST(Pes, PerturbationsAreAntitheticPairs) {
  PesAccumulator pes(4, kD, 0.01);
  torch::Generator gen = MakeGenerator(1, 0, 0);
  torch::Tensor theta = torch::randn({kD});
  torch::Tensor th = pes.BeginTruncation(theta, gen);
  ASSERT_EQ(th.sizes(), (std::vector<int64_t>{8, kD}));
  EXPECT_TRUE(torch::allclose(th.narrow(0, 0, 4) + th.narrow(0, 4, 4), 2 * theta.unsqueeze(0)));
  double sd = (th.narrow(0, 0, 4) - theta).std().item<double>();
  EXPECT_GT(sd, 0.003);
  EXPECT_LT(sd, 0.03);
}

TEST(Pes, UnbiasedInEveryTruncationAndTruncatedEsIsNot) {
  torch::Tensor theta = torch::tensor({0.3f, -0.2f, 0.1f});
  torch::Tensor c = torch::tensor({1.0f, 2.0f, -1.0f});
  const int64_t T = 20000;
  auto pes = RunPes(T, true, theta, c, 11);
  auto tes = RunPes(T, false, theta, c, 11);
  for (int64_t j = 0; j < kTruncations; ++j) {
    torch::Tensor g = TrueGradient(theta, c, j);
    double rel = torch::div((pes[j] - g).norm(), g.norm()).item<double>();
    EXPECT_GT(Cosine(pes[j], g), 0.99) << "truncation " << j;
    EXPECT_LT(rel, 0.1) << "truncation " << j << ": " << pes[j] << " vs " << g;
    if (j > 0) {
      double tes_rel = torch::div((tes[j] - g).norm(), g.norm()).item<double>();
      EXPECT_GT(tes_rel, 0.5) << "truncated ES should be biased in truncation " << j;
    }
  }
}

TEST(Pes, CosineAbove09WithEnoughParticles) {
  torch::Tensor theta = torch::tensor({-0.4f, 0.5f, 0.2f});
  torch::Tensor c = torch::tensor({0.5f, -1.0f, 2.0f});
  auto few = RunPes(8, true, theta, c, 5);
  auto many = RunPes(4096, true, theta, c, 5);
  torch::Tensor g = TrueGradient(theta, c, kTruncations - 1);
  EXPECT_GT(Cosine(many.back(), g), 0.9);
  // And the estimate is noisy with few particles: averaging matters.
  EXPECT_GT(torch::div((few.back() - g).norm(), g.norm()).item<double>(),
            torch::div((many.back() - g).norm(), g.norm()).item<double>());
}

// After a reset inside a truncation, a restored xi is credited to the
// losses that follow; the accumulator continues from it.
TEST(Pes, ResetWithRestoredAccumulator) {
  PesAccumulator pes(1, 2, 0.1);
  torch::Generator gen = MakeGenerator(2, 0, 0);
  torch::Tensor th = pes.BeginTruncation(torch::zeros({2}), gen);
  torch::Tensor eps = th[0].clone();
  pes.AddLosses(torch::tensor({1.0f, 0.0f}));  // diff 1, before the reset
  torch::Tensor restored = torch::tensor({0.5f, -0.5f});
  pes.Reset(0, restored);
  pes.AddLosses(torch::tensor({0.0f, 2.0f}));  // diff -2, after it
  torch::Tensor g = pes.EndTruncation();
  torch::Tensor want = (1.0 * eps + -2.0 * (restored + eps)) / (2 * 2 * 0.01);
  EXPECT_TRUE(torch::allclose(g, want, 1e-4, 1e-5)) << g << want;
  EXPECT_TRUE(torch::allclose(pes.xi()[0], restored + eps));
}

}  // namespace
}  // namespace lopt
