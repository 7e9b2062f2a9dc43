#include "common/lhopt/power_law.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace lopt {
namespace {

std::vector<double> LogSpaced(double lo, double hi, int n) {
  std::vector<double> t;
  for (int i = 0; i < n; ++i) t.push_back(std::exp(std::log(lo) + (std::log(hi) - std::log(lo)) * i / (n - 1)));
  return t;
}

std::vector<double> Curve(const std::vector<double>& t, double a, double b, double c) {
  std::vector<double> l;
  for (double x : t) l.push_back(a * std::pow(x, -b) + c);
  return l;
}

// Noiseless: b = 0.537 lies between grid points, so only the refinement
// gets it to 1e-6.
TEST(LhoptPowerLaw, RecoversExactCurve) {
  std::vector<double> t = LogSpaced(1, 1000, 30);
  std::vector<double> l = Curve(t, 2.0, 0.537, 0.3);
  auto fit = FitPowerLaw(t, l);
  ASSERT_TRUE(fit.ok()) << fit.status();
  EXPECT_NEAR(fit->a, 2.0, 2e-6);
  EXPECT_NEAR(fit->b, 0.537, 1e-6);
  EXPECT_NEAR(fit->c, 0.3, 1e-6);
  EXPECT_LT(fit->sse, 1e-12);

  PowerLawFitOptions grid_only;
  grid_only.max_lm_iterations = 0;
  auto coarse = FitPowerLaw(t, l, grid_only);
  ASSERT_TRUE(coarse.ok());
  EXPECT_GT(coarse->sse, 100 * fit->sse + 1e-14);  // the grid alone is off
}

// Gaussian noise of sd 0.01 on a curve falling from 3.5 to about 1.1:
// tolerance a and b within 10%, c within 0.03 (the estimates' spread at
// this noise is a few percent; the seed is fixed).
TEST(LhoptPowerLaw, RecoversNoisyCurve) {
  std::mt19937 rng(42);
  std::normal_distribution<double> noise(0.0, 0.01);
  std::vector<double> t = LogSpaced(1, 2000, 40);
  std::vector<double> l = Curve(t, 2.5, 0.4, 1.0);
  for (double& x : l) x += noise(rng);
  auto fit = FitPowerLaw(t, l);
  ASSERT_TRUE(fit.ok());
  EXPECT_NEAR(fit->a, 2.5, 0.25);
  EXPECT_NEAR(fit->b, 0.4, 0.04);
  EXPECT_NEAR(fit->c, 1.0, 0.03);
}

TEST(LhoptPowerLaw, ConstraintsAndErrors) {
  // A rising curve: the best fit with a >= 0 is flat at the mean.
  std::vector<double> t = {1, 2, 4, 8};
  auto fit = FitPowerLaw(t, {1.0, 2.0, 3.0, 4.0});
  ASSERT_TRUE(fit.ok());
  EXPECT_GE(fit->a, 0);
  EXPECT_GT(fit->b, 0);
  EXPECT_NEAR(fit->c + fit->a * std::pow(8, -fit->b), 2.5, 0.5);
  EXPECT_FALSE(FitPowerLaw({1, 2}, {1, 2}).ok());
  EXPECT_FALSE(FitPowerLaw({0, 1, 2}, {3, 2, 1}).ok());
  EXPECT_FALSE(FitPowerLaw({1, 2, 3}, {3, 2}).ok());
  // Non-finite losses are left out.
  auto nan_fit = FitPowerLaw({1, 2, 4, 8, 16},
                             {3.0, std::nan(""), 2.0 * std::pow(4, -0.5) + 1, 2.0 * std::pow(8, -0.5) + 1,
                              2.0 * std::pow(16, -0.5) + 1});
  ASSERT_TRUE(nan_fit.ok());
  EXPECT_NEAR(nan_fit->c, 1.0, 1e-5);
}

TEST(LhoptPowerLaw, LogSpeedup) {
  PowerLawFit f{2.0, 0.5, 0.3, 0};
  // Reaching at t the baseline's loss at 4t: log 4.
  EXPECT_NEAR(LogSpeedup(f, 100, f(400)), std::log(4.0), 1e-9);
  EXPECT_NEAR(LogSpeedup(f, 100, f(100)), 0.0, 1e-9);
  EXPECT_NEAR(LogSpeedup(f, 100, f(50)), std::log(0.5), 1e-9);
  // Beyond the asymptote: the baseline never gets there.
  EXPECT_EQ(LogSpeedup(f, 100, 0.3), 3.0);
  EXPECT_EQ(LogSpeedup(f, 100, 0.1), 3.0);
  // Huge speed-ups and slow-downs clip.
  EXPECT_EQ(LogSpeedup(f, 10, f(1e6)), 3.0);
  EXPECT_EQ(LogSpeedup(f, 1000, f(1)), -3.0);
  // Above fit(1): extrapolated below t = 1, then clipped.
  EXPECT_NEAR(LogSpeedup(f, 1, f(0.5)), std::log(0.5), 1e-9);
  EXPECT_EQ(LogSpeedup(f, 1, 1e6), -3.0);
  EXPECT_EQ(LogSpeedup(f, 1, std::nan("")), -3.0);
  EXPECT_EQ(LogSpeedup(f, 1, INFINITY), -3.0);
  // A flat baseline: better is +clip, worse -clip.
  PowerLawFit flat{0.0, 1.0, 1.0, 0};
  EXPECT_EQ(LogSpeedup(flat, 5, 0.9), 3.0);
  EXPECT_EQ(LogSpeedup(flat, 5, 1.1), -3.0);
  EXPECT_EQ(LogSpeedup(flat, 5, 1.0), 0.0);
  EXPECT_EQ(LogSpeedup(f, 100, f(400), 1.0), 1.0);  // a custom clip
}

// Each point clipped before the mean: one point past the asymptote counts 3,
// not infinity.
TEST(LhoptPowerLaw, RunRewardAveragesClippedPoints) {
  PowerLawFit f{2.0, 0.5, 0.3, 0};
  std::vector<double> t = {10, 20, 40};
  std::vector<double> l = {f(20), f(40), 0.2};  // 2x, 2x, beyond c
  EXPECT_NEAR(RunReward(f, t, l), (2 * std::log(2.0) + 3.0) / 3, 1e-9);
  // The baseline's own curve scores 0.
  EXPECT_NEAR(RunReward(f, t, {f(10), f(20), f(40)}), 0.0, 1e-9);
}

}  // namespace
}  // namespace lopt
