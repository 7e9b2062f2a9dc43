#include "common/lhopt/lhopt_features.h"

#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace lopt {

namespace {

torch::Tensor NormalCdf(const torch::Tensor& z) {
  return 0.5 * torch::erfc(-z / std::sqrt(2.0));
}

torch::Tensor Logit(const torch::Tensor& p) { return torch::log(p) - torch::log1p(-p); }

// log(a / b) with 0 where it is not finite (zero, negative or NaN inputs).
torch::Tensor SafeLogRatio(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor r = torch::log(a) - torch::log(b);
  return torch::where(torch::isfinite(r), r, torch::zeros_like(r));
}

// log(a / b) of norms, with a floor so that a zero norm stays finite.
torch::Tensor LogNormRatio(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::log(a + 1e-12) - torch::log(b + 1e-12);
}

std::vector<std::string> BuildNames() {
  std::vector<std::string> n = {
      "progress",
      "log_train_over_valid_loss",
      "train_loss_nonfinite",
      "cos_grad_momentum",
      "cos_grad_param",
      "cos_grad_update",
      "cdf_scaled_cos_grad_momentum",
      "cdf_scaled_cos_grad_param",
      "cdf_scaled_cos_grad_update",
      "clip_fraction",
      "log_update_over_param_norm",
      "log_noise_scale",
      "cdf_log_train_loss",
      "cdf_log_valid_loss",
      "cdf_log_train_over_valid_loss",
      "cdf_cos_grad_momentum",
      "cdf_cos_grad_param",
      "cdf_cos_grad_update",
      "cdf_clip_fraction",
      "cdf_log_update_over_param_norm",
      "cdf_log_noise_scale",
      "log_lr_over_default",
      "log_weight_decay_over_default",
      "log_eps_over_default",
      "log_one_minus_beta2_over_default",
      "log_one_minus_beta1_over_default",
      "logit_clip_fraction_over_default",
  };
  for (int r = 0; r < kNumRestartRegisters; ++r) {
    n.push_back(absl::StrCat("register", r, "_filled"));
    n.push_back(absl::StrCat("register", r, "_log_loss_over_saved"));
    n.push_back(absl::StrCat("register", r, "_saved_progress"));
  }
  for (const auto& head : ActionHeads())
    for (int64_t c = 0; c < head.num_choices; ++c)
      n.push_back(absl::StrCat("prev_", head.name, "_", c));
  TORCH_CHECK(static_cast<int64_t>(n.size()) == kNumLhoptFeatures,
              "feature layout out of date: ", n.size(), " names");
  return n;
}

}  // namespace

const std::vector<std::string>& FeatureNames() {
  static const std::vector<std::string>* names = new std::vector<std::string>(BuildNames());
  return *names;
}

// ---------------------------------------------------------------------------

void CiaoStatsMean::Add(const CiaoStats& s) {
  auto add = [](torch::Tensor& acc, const torch::Tensor& x) {
    acc = acc.defined() ? acc + x.to(torch::kFloat64) : x.to(torch::kFloat64);
  };
  add(sum_.grad_norm, s.grad_norm);
  add(sum_.clipped, s.clipped);
  add(sum_.clip_scale, s.clip_scale);
  add(sum_.update_norm, s.update_norm);
  add(sum_.param_norm, s.param_norm);
  add(sum_.momentum_norm, s.momentum_norm);
  add(sum_.momentum_minus_grad_norm, s.momentum_minus_grad_norm);
  add(sum_.cos_grad_momentum, s.cos_grad_momentum);
  add(sum_.cos_grad_param, s.cos_grad_param);
  add(sum_.cos_grad_update, s.cos_grad_update);
  sum_.dim = s.dim;
  ++count_;
}

CiaoStats CiaoStatsMean::Mean() const {
  TORCH_CHECK(count_ > 0, "CiaoStatsMean::Mean of no steps");
  const double n = static_cast<double>(count_);
  CiaoStats m;
  m.grad_norm = sum_.grad_norm / n;
  m.clipped = sum_.clipped / n;
  m.clip_scale = sum_.clip_scale / n;
  m.update_norm = sum_.update_norm / n;
  m.param_norm = sum_.param_norm / n;
  m.momentum_norm = sum_.momentum_norm / n;
  m.momentum_minus_grad_norm = sum_.momentum_minus_grad_norm / n;
  m.cos_grad_momentum = sum_.cos_grad_momentum / n;
  m.cos_grad_param = sum_.cos_grad_param / n;
  m.cos_grad_update = sum_.cos_grad_update / n;
  m.dim = sum_.dim;
  return m;
}

void CiaoStatsMean::Reset() {
  sum_ = CiaoStats();
  count_ = 0;
}

std::vector<torch::Tensor> CiaoStatsMean::state() const {
  if (count_ == 0) return {};
  const CiaoStats& s = sum_;
  return {torch::tensor(count_, torch::kInt64), s.grad_norm.clone(), s.clipped.clone(),
          s.clip_scale.clone(), s.update_norm.clone(), s.param_norm.clone(),
          s.momentum_norm.clone(), s.momentum_minus_grad_norm.clone(),
          s.cos_grad_momentum.clone(), s.cos_grad_param.clone(), s.cos_grad_update.clone(),
          s.dim.clone()};
}

void CiaoStatsMean::set_state(const std::vector<torch::Tensor>& s) {
  if (s.empty()) return Reset();
  TORCH_CHECK(s.size() == 12 && s[0].numel() == 1 && s[0].item<int64_t>() > 0,
              "bad CiaoStatsMean state: need a step count > 0 and 11 tensors");
  for (size_t i = 2; i < 12; ++i)
    TORCH_CHECK(s[i].sizes() == s[1].sizes(), "bad CiaoStatsMean state: tensor ", i,
                " has another shape than the first sum");
  auto f64 = [](const torch::Tensor& t) { return t.to(torch::kFloat64).clone(); };
  count_ = s[0].item<int64_t>();
  sum_.grad_norm = f64(s[1]);
  sum_.clipped = f64(s[2]);
  sum_.clip_scale = f64(s[3]);
  sum_.update_norm = f64(s[4]);
  sum_.param_norm = f64(s[5]);
  sum_.momentum_norm = f64(s[6]);
  sum_.momentum_minus_grad_norm = f64(s[7]);
  sum_.cos_grad_momentum = f64(s[8]);
  sum_.cos_grad_param = f64(s[9]);
  sum_.cos_grad_update = f64(s[10]);
  sum_.dim = s[11].to(torch::kInt64).clone();
}

// ---------------------------------------------------------------------------

RunningGaussianCdf::RunningGaussianCdf(int64_t rows, int64_t cols, double decay,
                                       double var_floor)
    : decay_(decay),
      var_floor_(var_floor),
      weight_(torch::zeros({rows, cols}, torch::kFloat64)),
      sum_(torch::zeros({rows, cols}, torch::kFloat64)),
      sum_sq_(torch::zeros({rows, cols}, torch::kFloat64)) {
  TORCH_CHECK(decay > 0 && decay <= 1, "CDF decay must be in (0, 1], got ", decay);
}

torch::Tensor RunningGaussianCdf::mean() const {
  return torch::where(weight_ > 0, sum_ / weight_.clamp_min(1e-300), torch::zeros_like(sum_));
}

torch::Tensor RunningGaussianCdf::variance() const {
  torch::Tensor mu = mean();
  torch::Tensor ex2 = torch::where(weight_ > 0, sum_sq_ / weight_.clamp_min(1e-300),
                                   torch::zeros_like(sum_sq_));
  return (ex2 - mu * mu).clamp_min(0);
}

torch::Tensor RunningGaussianCdf::CdfThenUpdate(const torch::Tensor& x_in) {
  torch::Tensor x = x_in.to(torch::kFloat64);
  TORCH_CHECK(x.sizes() == weight_.sizes(), "CDF input has shape ", x.sizes(), ", expected ",
              weight_.sizes());
  torch::Tensor finite = torch::isfinite(x);
  torch::Tensor z = (x - mean()) / torch::sqrt(variance() + var_floor_);
  torch::Tensor cdf = torch::where(finite & (weight_ > 0), NormalCdf(z), torch::full_like(x, 0.5));
  torch::Tensor xf = torch::where(finite, x, torch::zeros_like(x));
  weight_ = torch::where(finite, weight_ * decay_ + 1, weight_);
  sum_ = torch::where(finite, sum_ * decay_ + xf, sum_);
  sum_sq_ = torch::where(finite, sum_sq_ * decay_ + xf * xf, sum_sq_);
  return cdf;
}

void RunningGaussianCdf::ResetRows(const torch::Tensor& mask) {
  torch::Tensor keep = (~mask.to(torch::kBool)).to(torch::kFloat64).unsqueeze(1);
  weight_ = weight_ * keep;
  sum_ = sum_ * keep;
  sum_sq_ = sum_sq_ * keep;
}

void RunningGaussianCdf::set_state(const std::vector<torch::Tensor>& s) {
  TORCH_CHECK(s.size() == 3 && s[0].sizes() == weight_.sizes(), "bad CDF state");
  weight_ = s[0].to(torch::kFloat64);
  sum_ = s[1].to(torch::kFloat64);
  sum_sq_ = s[2].to(torch::kFloat64);
}

// ---------------------------------------------------------------------------

void FillRegisterObservation(const std::vector<RestartRegisters>& registers,
                             LhoptObservation* obs) {
  const int64_t n = static_cast<int64_t>(registers.size());
  torch::Tensor filled = torch::zeros({n, kNumRestartRegisters}, torch::kFloat64);
  torch::Tensor loss = torch::zeros_like(filled), progress = torch::zeros_like(filled);
  auto f = filled.accessor<double, 2>();
  auto l = loss.accessor<double, 2>();
  auto p = progress.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int r = 0; r < kNumRestartRegisters && r < registers[i].num_registers(); ++r) {
      const RegisterEntry& e = registers[i].entry(r);
      if (!e.filled) continue;
      f[i][r] = 1;
      l[i][r] = e.loss;
      p[i][r] = e.progress;
    }
  }
  obs->register_filled = filled;
  obs->register_loss = loss;
  obs->register_progress = progress;
}

LhoptFeatureBuilder::LhoptFeatureBuilder(int64_t num_runs, double cdf_decay)
    : num_runs_(num_runs), cdf_(num_runs, kNumCdfStatistics, cdf_decay) {}

void LhoptFeatureBuilder::ResetRuns(const torch::Tensor& mask) { cdf_.ResetRows(mask); }

torch::Tensor LhoptFeatureBuilder::Build(const LhoptObservation& obs) {
  torch::NoGradGuard no_grad;
  const int64_t n = num_runs_;
  auto f64 = [](const torch::Tensor& t) { return t.to(torch::kCPU).to(torch::kFloat64); };
  TORCH_CHECK(obs.progress.numel() == n, "observation of ", obs.progress.numel(),
              " runs, builder of ", n);
  const CiaoStats& s = obs.inner;
  torch::Tensor progress = f64(obs.progress).clamp(0, 1);
  torch::Tensor train = f64(obs.train_loss), valid = f64(obs.valid_loss);
  torch::Tensor log_ratio = SafeLogRatio(train, valid);
  torch::Tensor nonfinite = (~torch::isfinite(train)).to(torch::kFloat64);
  torch::Tensor cos_gm = f64(s.cos_grad_momentum), cos_gp = f64(s.cos_grad_param),
                cos_gu = f64(s.cos_grad_update);
  torch::Tensor sqrt_dim = f64(s.dim).sqrt();
  torch::Tensor clip = f64(s.clipped);
  torch::Tensor log_u_over_p = LogNormRatio(f64(s.update_norm), f64(s.param_norm));
  torch::Tensor log_noise = LogNormRatio(f64(s.momentum_minus_grad_norm), f64(s.momentum_norm));

  // Losses on a log scale before their CDF: a loss falling from 2 to 1 is
  // the same event as one falling from 0.02 to 0.01.
  torch::Tensor cdf_in = torch::stack({torch::log(train), torch::log(valid), log_ratio, cos_gm,
                                       cos_gp, cos_gu, clip, log_u_over_p, log_noise},
                                      1);
  torch::Tensor cdf = cdf_.CdfThenUpdate(cdf_in);

  const CiaoHyperparameters d;
  const CiaoHparamTensors& h = obs.hparams;
  auto log_over = [&](const torch::Tensor& x, double def) { return torch::log(f64(x) / def); };
  torch::Tensor default_logit = torch::full({n}, std::log(d.clip_fraction / (1 - d.clip_fraction)),
                                            torch::kFloat64);

  torch::Tensor head_cols = torch::stack(
      {progress, log_ratio, nonfinite, cos_gm, cos_gp, cos_gu, NormalCdf(cos_gm * sqrt_dim),
       NormalCdf(cos_gp * sqrt_dim), NormalCdf(cos_gu * sqrt_dim), clip, log_u_over_p,
       log_noise},
      1);
  torch::Tensor hparam_cols = torch::stack(
      {log_over(h.lr, d.lr), log_over(h.weight_decay, d.weight_decay), log_over(h.eps, d.eps),
       log_over(h.one_minus_beta2, d.one_minus_beta2),
       log_over(h.one_minus_beta1, d.one_minus_beta1),
       Logit(f64(h.clip_fraction)) - default_logit},
      1);

  torch::Tensor filled = f64(obs.register_filled);
  torch::Tensor saved_loss = f64(obs.register_loss);
  torch::Tensor reg_log_loss =
      SafeLogRatio(train.unsqueeze(1).expand_as(saved_loss), saved_loss) * filled;
  torch::Tensor reg_cols =
      torch::stack({filled, reg_log_loss, f64(obs.register_progress) * filled}, 2)
          .reshape({n, 3 * kNumRestartRegisters});

  std::vector<torch::Tensor> one_hots;
  torch::Tensor prev = obs.prev_actions.to(torch::kCPU).to(torch::kInt64);
  TORCH_CHECK(prev.dim() == 2 && prev.size(0) == n && prev.size(1) == kNumActionHeads,
              "prev_actions must be [P, ", kNumActionHeads, "]");
  const auto& heads = ActionHeads();
  for (int k = 0; k < kNumActionHeads; ++k)
    one_hots.push_back(
        torch::one_hot(prev.select(1, k), heads[k].num_choices).to(torch::kFloat64));

  std::vector<torch::Tensor> parts = {head_cols, cdf, hparam_cols, reg_cols};
  parts.insert(parts.end(), one_hots.begin(), one_hots.end());
  torch::Tensor out = torch::cat(parts, 1);
  TORCH_CHECK(out.size(1) == kNumLhoptFeatures, "built ", out.size(1), " features");
  return out.to(torch::kFloat32);
}

// ---------------------------------------------------------------------------

EwmaNormalizer::EwmaNormalizer(int64_t dim, double beta, double clip, double eps)
    : dim_(dim),
      beta_(beta),
      clip_(clip),
      eps_(eps),
      weight_(torch::zeros({}, torch::kFloat64)),
      sum_(torch::zeros({dim}, torch::kFloat64)),
      sum_sq_(torch::zeros({dim}, torch::kFloat64)) {}

void EwmaNormalizer::Update(const torch::Tensor& x_in) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = x_in.detach().to(torch::kCPU).to(torch::kFloat64).reshape({-1, dim_});
  x = torch::where(torch::isfinite(x), x, torch::zeros_like(x));
  weight_ = weight_ * beta_ + (1 - beta_);
  sum_ = sum_ * beta_ + (1 - beta_) * x.mean(0);
  sum_sq_ = sum_sq_ * beta_ + (1 - beta_) * (x * x).mean(0);
}

torch::Tensor EwmaNormalizer::mean() const {
  if (weight_.item<double>() == 0) return torch::zeros({dim_}, torch::kFloat64);
  return sum_ / weight_;
}

torch::Tensor EwmaNormalizer::variance() const {
  if (weight_.item<double>() == 0) return torch::ones({dim_}, torch::kFloat64);
  torch::Tensor mu = mean();
  return (sum_sq_ / weight_ - mu * mu).clamp_min(0);
}

torch::Tensor EwmaNormalizer::Normalize(const torch::Tensor& x) const {
  torch::Tensor mu = mean().to(x.device(), torch::kFloat32);
  torch::Tensor sd = torch::sqrt(variance() + eps_).to(x.device(), torch::kFloat32);
  torch::Tensor y = (x.to(torch::kFloat32) - mu) / sd;
  y = torch::where(torch::isfinite(y), y, torch::zeros_like(y));
  return y.clamp(-clip_, clip_);
}

void EwmaNormalizer::set_state(const std::vector<torch::Tensor>& s) {
  TORCH_CHECK(s.size() == 3 && s[1].numel() == dim_, "bad normaliser state");
  weight_ = s[0].to(torch::kFloat64).reshape({});
  sum_ = s[1].to(torch::kFloat64);
  sum_sq_ = s[2].to(torch::kFloat64);
}

}  // namespace lopt
