#include "common/lhopt/power_law.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace lopt {

namespace {

struct Points {
  std::vector<double> t, loss;
};

double Sse(const Points& p, double a, double b, double c) {
  double s = 0;
  for (size_t i = 0; i < p.t.size(); ++i) {
    const double r = a * std::pow(p.t[i], -b) + c - p.loss[i];
    s += r * r;
  }
  return s;
}

// The best (a >= 0, c) for a fixed b, in closed form.
PowerLawFit FitLinear(const Points& p, double b) {
  const double n = static_cast<double>(p.t.size());
  double mx = 0, my = 0;
  std::vector<double> x(p.t.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = std::pow(p.t[i], -b);
    mx += x[i];
    my += p.loss[i];
  }
  mx /= n;
  my /= n;
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    sxy += (x[i] - mx) * (p.loss[i] - my);
  }
  PowerLawFit f;
  f.b = b;
  f.a = sxx > 0 ? std::max(0.0, sxy / sxx) : 0.0;
  f.c = my - f.a * mx;
  f.sse = Sse(p, f.a, f.b, f.c);
  return f;
}

// Solves the 3x3 system m x = y by Gaussian elimination with partial
// pivoting; false if singular.
bool Solve3(double m[3][3], double y[3], double x[3]) {
  for (int col = 0; col < 3; ++col) {
    int piv = col;
    for (int r = col + 1; r < 3; ++r)
      if (std::abs(m[r][col]) > std::abs(m[piv][col])) piv = r;
    if (std::abs(m[piv][col]) < 1e-300) return false;
    std::swap(m[col], m[piv]);
    std::swap(y[col], y[piv]);
    for (int r = col + 1; r < 3; ++r) {
      const double f = m[r][col] / m[col][col];
      for (int k = col; k < 3; ++k) m[r][k] -= f * m[col][k];
      y[r] -= f * y[col];
    }
  }
  for (int r = 2; r >= 0; --r) {
    double s = y[r];
    for (int k = r + 1; k < 3; ++k) s -= m[r][k] * x[k];
    x[r] = s / m[r][r];
  }
  return true;
}

constexpr double kMinB = 1e-6;

PowerLawFit Refine(const Points& p, PowerLawFit f, int max_iterations) {
  double lambda = 1e-3;
  for (int it = 0; it < max_iterations; ++it) {
    double jtj[3][3] = {};
    double jtr[3] = {};
    for (size_t i = 0; i < p.t.size(); ++i) {
      const double x = std::pow(p.t[i], -f.b);
      const double r = f.a * x + f.c - p.loss[i];
      const double j[3] = {x, -f.a * x * std::log(p.t[i]), 1.0};
      for (int u = 0; u < 3; ++u) {
        jtr[u] += j[u] * r;
        for (int v = 0; v < 3; ++v) jtj[u][v] += j[u] * j[v];
      }
    }
    bool improved = false;
    while (lambda < 1e16) {
      double m[3][3], y[3], d[3] = {};
      for (int u = 0; u < 3; ++u) {
        for (int v = 0; v < 3; ++v) m[u][v] = jtj[u][v];
        m[u][u] += lambda * std::max(jtj[u][u], 1e-12);
        y[u] = -jtr[u];
      }
      if (Solve3(m, y, d)) {
        PowerLawFit g;
        g.a = std::max(0.0, f.a + d[0]);
        g.b = std::max(kMinB, f.b + d[1]);
        g.c = f.c + d[2];
        g.sse = Sse(p, g.a, g.b, g.c);
        if (std::isfinite(g.sse) && g.sse < f.sse) {
          const double gain = f.sse - g.sse;
          const bool converged = gain <= 1e-14 * f.sse || g.sse == 0;
          f = g;
          lambda = std::max(lambda / 10, 1e-12);
          improved = !converged;
          break;
        }
      }
      lambda *= 10;
    }
    if (!improved) break;
  }
  return f;
}

}  // namespace

double PowerLawFit::operator()(double t) const { return a * std::pow(t, -b) + c; }

absl::StatusOr<PowerLawFit> FitPowerLaw(const std::vector<double>& t,
                                        const std::vector<double>& loss,
                                        const PowerLawFitOptions& options) {
  if (t.size() != loss.size())
    return absl::InvalidArgumentError(
        absl::StrCat("power-law fit: ", t.size(), " times but ", loss.size(), " losses"));
  Points p;
  for (size_t i = 0; i < t.size(); ++i) {
    if (!(std::isfinite(t[i]) && t[i] > 0))
      return absl::InvalidArgumentError(
          absl::StrCat("power-law fit: time must be finite and > 0, got ", t[i]));
    if (!std::isfinite(loss[i])) continue;
    p.t.push_back(t[i]);
    p.loss.push_back(loss[i]);
  }
  if (p.t.size() < 3)
    return absl::InvalidArgumentError(absl::StrCat(
        "power-law fit needs at least 3 points with a finite loss, got ", p.t.size()));
  if (options.b_grid_points < 2 || !(options.b_min > 0) || !(options.b_max > options.b_min))
    return absl::InvalidArgumentError("power-law fit: bad exponent grid");

  PowerLawFit best;
  best.sse = std::numeric_limits<double>::infinity();
  const double lo = std::log(options.b_min), hi = std::log(options.b_max);
  for (int k = 0; k < options.b_grid_points; ++k) {
    const double b = std::exp(lo + (hi - lo) * k / (options.b_grid_points - 1));
    PowerLawFit f = FitLinear(p, b);
    if (f.sse < best.sse) best = f;
  }
  return Refine(p, best, options.max_lm_iterations);
}

double LogSpeedup(const PowerLawFit& fit, double t, double loss, double clip) {
  if (!std::isfinite(loss)) return -clip;
  if (fit.a <= 0) {
    if (loss < fit.c) return clip;
    return loss > fit.c ? -clip : 0.0;
  }
  if (loss <= fit.c) return clip;
  const double log_tb = (std::log(fit.a) - std::log(loss - fit.c)) / fit.b;
  const double s = log_tb - std::log(t);
  if (std::isnan(s)) return -clip;
  return std::clamp(s, -clip, clip);
}

double RunReward(const PowerLawFit& fit, const std::vector<double>& t,
                 const std::vector<double>& loss, double clip) {
  if (t.empty() || t.size() != loss.size()) return -clip;
  double s = 0;
  for (size_t i = 0; i < t.size(); ++i) s += LogSpeedup(fit, t[i], loss[i], clip);
  return s / static_cast<double>(t.size());
}

}  // namespace lopt
