// LHOPT's reward: fit a power law L(t) = a * t^(-b) + c to the baseline's
// (the EMA policy's) loss curve on a task, and score a run by its log
// speed-up over that fit (REFERENCE.md §4).
#pragma once

#include <vector>

#include "absl/status/statusor.h"

namespace lopt {

struct PowerLawFit {
  double a = 0;  // >= 0
  double b = 0;  // > 0
  double c = 0;  // the asymptote
  double sse = 0;  // sum of squared residuals over the fitted points
  double operator()(double t) const;
};

struct PowerLawFitOptions {
  // The grid of exponents b searched before refining: log-spaced, inclusive.
  double b_min = 1e-3;
  double b_max = 10;
  int b_grid_points = 200;
  int max_lm_iterations = 200;
};

// Least-squares fit of L(t) = a t^(-b) + c, a >= 0, b > 0: for each b of
// the grid the best (a, c) in closed form (linear least squares, a clamped
// at 0), then Levenberg-Marquardt on (a, b, c) from the best grid point,
// with steps projected onto the constraints. Points with a non-finite loss
// are left out (a diverged baseline step says nothing about the curve).
// Errors (INVALID_ARGUMENT): sizes differ, a t <= 0 or non-finite, fewer
// than 3 finite points.
absl::StatusOr<PowerLawFit> FitPowerLaw(const std::vector<double>& t,
                                        const std::vector<double>& loss,
                                        const PowerLawFitOptions& options = {});

// The log speed-up of reaching `loss` at time `t` over the fitted baseline:
// log(t_b / t) where fit(t_b) = loss, clipped to [-clip, clip].
//   * loss at or below the asymptote c: the baseline never gets there, so
//     t_b = infinity and the result is +clip (0 for a loss equal to a flat
//     fit's c, a = 0);
//   * loss above fit(1) = a + c: the power law is still defined for
//     0 < t_b < 1 and is extrapolated there, giving a negative log speed-up
//     that the clip bounds;
//   * a non-finite loss (a diverged run): -clip.
// t_b is computed in log space so that it cannot overflow.
double LogSpeedup(const PowerLawFit& fit, double t, double loss, double clip = 3);

// A run's reward: the mean over its points (t_i, loss_i) of LogSpeedup,
// each clipped before averaging so that one point past the asymptote or one
// divergence cannot outweigh the rest of the curve. Within [-clip, clip].
// REQUIRES: t.size() == loss.size() > 0.
double RunReward(const PowerLawFit& fit, const std::vector<double>& t,
                 const std::vector<double>& loss, double clip = 3);

}  // namespace lopt
