// The LHOPT policy's inputs: unitless features of P runs at a decision
// (REFERENCE.md §4; openai/LHOPT's inner_optimizer.py and example config).
// Every feature is a ratio, a cosine, a fraction, a CDF value, a progress or
// a one-hot, so that a tiny MLP and a transformer look alike to the policy.
//
// Feature layout of LhoptFeatureBuilder::Build ([P, kNumLhoptFeatures]):
//   0  progress                      t / T in [0, 1]
//   1  log_train_over_valid_loss     log(train / valid), 0 where not finite
//   2  train_loss_nonfinite          1 where the train loss is NaN or inf
//   3  cos_grad_momentum             means over the inner steps since the
//   4  cos_grad_param                  last decision (CiaoStatsMean)
//   5  cos_grad_update
//   6  cdf_scaled_cos_grad_momentum  Phi(cos * sqrt(dim)): the cosine in
//   7  cdf_scaled_cos_grad_param       units of its spread between random
//   8  cdf_scaled_cos_grad_update      vectors of that dimension
//   9  clip_fraction                 fraction of inner steps that clipped
//  10  log_update_over_param_norm    log(|u| / |p|)
//  11  log_noise_scale               log(|m - g| / |m|), see below
//  12  cdf_log_train_loss            CDF features: Phi((x - mu) / sigma) of
//  13  cdf_log_valid_loss              the statistic x against a running
//  14  cdf_log_train_over_valid_loss   Gaussian fit (mu, sigma) of that
//  15  cdf_cos_grad_momentum           run's own earlier values of x
//  16  cdf_cos_grad_param              (RunningGaussianCdf); 0.5 at the
//  17  cdf_cos_grad_update             first decision
//  18  cdf_clip_fraction
//  19  cdf_log_update_over_param_norm
//  20  cdf_log_noise_scale
//  21  log_lr_over_default           log(h / default) of each hyperparameter
//  22  log_weight_decay_over_default   (CiaoHyperparameters' defaults); the
//  23  log_eps_over_default            clip fraction as a logit difference
//  24  log_one_minus_beta2_over_default
//  25  log_one_minus_beta1_over_default
//  26  logit_clip_fraction_over_default
//  27+3r register r (r = 0..2): filled (0/1)
//  28+3r   log(current train loss / loss when saved), 0 if empty
//  29+3r   progress when saved, 0 if empty
//  36.. previous action, one-hot per head in ActionHeads() order
//       (7 + 3 + 3 + 3 + 3 + 5 + 10 = 34 columns), named prev_<head>_<choice>
// kNumLhoptFeatures = 70. FeatureNames() lists them in this order.
//
// Noise scale: the gradient noise scale B_noise = tr(Sigma) / |G|^2
// (McCandlish et al. 2018) estimated from two "batch sizes": the gradient g
// of one batch and CIAO's bias-corrected momentum m, an average over about
// 1 / (1 - beta1) batches that stands in for the true gradient G. Then
// |m - g|^2 ~ tr(Sigma) / B, so log(|m - g| / |m|) ~ (1/2) log(B_noise / B).
// Chosen over the per-example variance within a batch because the
// particle-batched tasks produce one gradient per particle (per-example
// gradients would cost a backward pass per example) and over a second batch
// size because it needs no extra forward/backward. openai/LHOPT records the
// same quantity with the opposite sign.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "common/lhopt/ciao.h"
#include "common/lhopt/lhopt_actions.h"

namespace lopt {

constexpr int64_t kNumLhoptFeatures = 70;

// The names of the features, in column order (size kNumLhoptFeatures).
const std::vector<std::string>& FeatureNames();

// Means of CIAO's per-step statistics over the inner steps of one decision
// interval (each [P]); the mean of `clipped` is the fraction clipped.
class CiaoStatsMean {
 public:
  void Add(const CiaoStats& s);
  // REQUIRES: count() > 0. `dim` is carried over from the last step.
  CiaoStats Mean() const;
  int64_t count() const { return count_; }
  void Reset();

  // The step count and sums, to save with a run (empty for no steps):
  // count, then CiaoStats' fields in their order, dim last.
  std::vector<torch::Tensor> state() const;
  void set_state(const std::vector<torch::Tensor>& s);

 private:
  CiaoStats sum_;
  int64_t count_ = 0;
};

// Per-element running Gaussian fits of [rows, cols] statistics with
// exponentially decaying weights (decay d: the value seen k decisions ago
// weighs d^k), with the mean's and variance's weights normalised to 1:
//   mu = sum_i w_i x_i / sum_i w_i,  var = sum_i w_i x_i^2 / sum_i w_i - mu^2.
class RunningGaussianCdf {
 public:
  RunningGaussianCdf(int64_t rows, int64_t cols, double decay = 0.9,
                     double var_floor = 1e-8);

  // Phi((x - mu) / sqrt(var + var_floor)) of `x` ([rows, cols]) against the
  // fit of the earlier values (0.5 where there are none), then folds the
  // finite entries of x into the fit. Non-finite entries give 0.5 and leave
  // their fit unchanged.
  torch::Tensor CdfThenUpdate(const torch::Tensor& x);

  // Forgets the history of the rows where `mask` ([rows] bool) is true.
  void ResetRows(const torch::Tensor& mask);

  torch::Tensor mean() const;      // [rows, cols]; 0 where no history
  torch::Tensor variance() const;  // [rows, cols]

  // Raw accumulators, to save with a run: weight, sum of x, sum of x^2.
  std::vector<torch::Tensor> state() const { return {weight_, sum_, sum_sq_}; }
  void set_state(const std::vector<torch::Tensor>& s);

 private:
  double decay_, var_floor_;
  torch::Tensor weight_, sum_, sum_sq_;  // [rows, cols] float64
};

// What the features of P runs are built from at one decision.
struct LhoptObservation {
  torch::Tensor progress;    // [P] in [0, 1]
  torch::Tensor train_loss;  // [P]
  torch::Tensor valid_loss;  // [P]
  CiaoStats inner;           // [P] each: CiaoStatsMean::Mean() of the interval
  CiaoHparamTensors hparams;  // the hyperparameters in force
  torch::Tensor prev_actions;  // [P, kNumActionHeads] int64 (KeepActions at the start)
  torch::Tensor register_filled;    // [P, kNumRestartRegisters] 0/1
  torch::Tensor register_loss;      // [P, kNumRestartRegisters], loss when saved
  torch::Tensor register_progress;  // [P, kNumRestartRegisters]
};

// Fills the register_* fields of `obs` from one RestartRegisters per run.
void FillRegisterObservation(const std::vector<RestartRegisters>& registers,
                             LhoptObservation* obs);

// Builds the features of P runs, keeping each run's CDF history.
class LhoptFeatureBuilder {
 public:
  static constexpr int64_t kNumCdfStatistics = 9;  // columns 12..20

  explicit LhoptFeatureBuilder(int64_t num_runs, double cdf_decay = 0.9);

  // [P, kNumLhoptFeatures] float32, not normalised (see EwmaNormalizer).
  // Folds this decision's statistics into each run's CDF history.
  torch::Tensor Build(const LhoptObservation& obs);

  // Runs where `mask` ([P] bool) is true start a new history.
  void ResetRuns(const torch::Tensor& mask);

  RunningGaussianCdf& cdf() { return cdf_; }

 private:
  int64_t num_runs_;
  RunningGaussianCdf cdf_;
};

// The policy's input normaliser: EWMA (beta 0.999) estimates of each
// feature's mean and variance, bias-corrected, one update per batch from the
// batch's mean of x and x^2; outputs (x - mean) / sqrt(var + eps) clipped to
// [-clip, clip]. The learner updates it from the data it trains on and ships
// its state with the policy's weights, so that acting and training
// normalise alike.
class EwmaNormalizer {
 public:
  explicit EwmaNormalizer(int64_t dim, double beta = 0.999, double clip = 2.0,
                          double eps = 1e-5);

  // Folds x ([..., dim]) into the estimates (one EWMA step, the mean over
  // every leading index). Non-finite entries count as 0.
  void Update(const torch::Tensor& x);

  // Normalised and clipped x ([..., dim]) as float32; before any Update the
  // estimates are mean 0, variance 1.
  torch::Tensor Normalize(const torch::Tensor& x) const;

  torch::Tensor mean() const;
  torch::Tensor variance() const;
  // bias correction, sum of x, sum of x^2 (float64)
  std::vector<torch::Tensor> state() const { return {weight_, sum_, sum_sq_}; }
  void set_state(const std::vector<torch::Tensor>& s);

 private:
  int64_t dim_;
  double beta_, clip_, eps_;
  torch::Tensor weight_, sum_, sum_sq_;
};

}  // namespace lopt
