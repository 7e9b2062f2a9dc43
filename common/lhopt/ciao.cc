#include "common/lhopt/ciao.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace lopt {

namespace {

torch::TensorOptions F64(const torch::Device& device) {
  return torch::TensorOptions(torch::kFloat64).device(device);
}

// A [P] tensor viewed to broadcast against `like` ([P, ...]) in its dtype.
torch::Tensor PerParticle(const torch::Tensor& t, const torch::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = like.size(0);
  return t.to(like.scalar_type()).view(shape);
}

// Per-particle sum of a*b over every element, accumulated in float64: [P].
torch::Tensor RowDot(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t p = a.size(0);
  return (a * b).reshape({p, -1}).sum({1}, /*keepdim=*/false, torch::kFloat64);
}

torch::Tensor Cosine(const torch::Tensor& dot, const torch::Tensor& norm_a,
                     const torch::Tensor& norm_b) {
  // openai/LHOPT: dot / max(|a| |b|, 1e-8), so a zero vector gives 0.
  return dot / (norm_a * norm_b).clamp_min(1e-8);
}

}  // namespace

CiaoHparamTensors CiaoHparamTensors::Fill(int64_t n, const CiaoHyperparameters& h) {
  auto full = [n](double x) { return torch::full({n}, x, torch::kFloat64); };
  return {full(h.lr),  full(h.one_minus_beta1), full(h.one_minus_beta2),
          full(h.eps), full(h.weight_decay),    full(h.clip_fraction)};
}

CiaoHyperparameters CiaoHparamTensors::At(int64_t i) const {
  auto get = [i](const torch::Tensor& t) { return t[i].item<double>(); };
  CiaoHyperparameters h;
  h.lr = get(lr);
  h.one_minus_beta1 = get(one_minus_beta1);
  h.one_minus_beta2 = get(one_minus_beta2);
  h.eps = get(eps);
  h.weight_decay = get(weight_decay);
  h.clip_fraction = get(clip_fraction);
  return h;
}

CiaoHparamTensors CiaoHparamTensors::Select(const torch::Tensor& index) const {
  return {lr.index_select(0, index),           one_minus_beta1.index_select(0, index),
          one_minus_beta2.index_select(0, index), eps.index_select(0, index),
          weight_decay.index_select(0, index),  clip_fraction.index_select(0, index)};
}

CiaoHparamTensors CiaoHparamTensors::On(const torch::Device& device) const {
  auto on = [&](const torch::Tensor& t) { return t.to(F64(device)); };
  return {on(lr), on(one_minus_beta1), on(one_minus_beta2), on(eps), on(weight_decay), on(clip_fraction)};
}

CiaoState InitCiaoState(const std::vector<torch::Tensor>& params) {
  TORCH_CHECK(!params.empty(), "CIAO needs at least one parameter tensor");
  CiaoState s;
  for (const auto& p : params) {
    s.m.push_back(torch::zeros_like(p));
    s.v.push_back(torch::zeros_like(p));
  }
  const int64_t n = params[0].size(0);
  auto opts = F64(params[0].device());
  s.bias_correction1 = torch::zeros({n}, opts);
  s.bias_correction2 = torch::zeros({n}, opts);
  s.rolling_max = torch::zeros({n}, opts);
  s.step = torch::zeros({n}, torch::TensorOptions(torch::kInt64).device(params[0].device()));
  return s;
}

CiaoStepResult CiaoStep(const std::vector<torch::Tensor>& params,
                        const std::vector<torch::Tensor>& grads, CiaoState* state,
                        const CiaoHparamTensors& h, const CiaoOptions& opt) {
  TORCH_CHECK(!params.empty() && params.size() == grads.size() &&
                  params.size() == state->m.size(),
              "CIAO: params, grads and state must have the same number of tensors");
  torch::NoGradGuard no_grad;
  const int64_t n = params[0].size(0);
  const torch::Device device = params[0].device();
  auto on_device = [&](const torch::Tensor& t) { return t.to(F64(device)); };
  const torch::Tensor lr = on_device(h.lr);
  const torch::Tensor omb1 = on_device(h.one_minus_beta1);
  const torch::Tensor omb2 = on_device(h.one_minus_beta2);
  const torch::Tensor eps = on_device(h.eps);
  const torch::Tensor wd = on_device(h.weight_decay);
  const torch::Tensor clip_fraction = on_device(h.clip_fraction);
  TORCH_CHECK(lr.size(0) == n, "CIAO: hyperparameters for ", lr.size(0),
              " particles, parameters for ", n);

  // Clipping against the rolling max of the global gradient norm.
  torch::Tensor grad_sq = torch::zeros({n}, F64(device));
  int64_t dim = 0;
  for (const auto& g : grads) {
    grad_sq += RowDot(g, g);
    dim += g.numel() / n;
  }
  torch::Tensor grad_norm = grad_sq.sqrt();
  state->rolling_max = torch::maximum(grad_norm, state->rolling_max * (1 - omb2));
  torch::Tensor coef = clip_fraction * state->rolling_max / (grad_norm + 1e-6);
  torch::Tensor clipped = (coef < 1).to(torch::kFloat64);
  torch::Tensor clip_scale = coef.clamp_max(1.0);

  state->bias_correction1 = state->bias_correction1 * (1 - omb1) + omb1;
  state->bias_correction2 = state->bias_correction2 * (1 - omb2) + omb2;
  state->step = state->step + 1;

  torch::Tensor dot_gm = torch::zeros({n}, F64(device));
  torch::Tensor dot_gp = torch::zeros_like(dot_gm), dot_gu = torch::zeros_like(dot_gm);
  torch::Tensor m_sq = torch::zeros_like(dot_gm), m_minus_g_sq = torch::zeros_like(dot_gm);
  torch::Tensor u_sq = torch::zeros_like(dot_gm), p_sq = torch::zeros_like(dot_gm);

  CiaoStepResult out;
  out.updates.reserve(params.size());
  for (size_t k = 0; k < params.size(); ++k) {
    const torch::Tensor& p = params[k];
    torch::Tensor g = grads[k] * PerParticle(clip_scale, p);
    torch::Tensor& m = state->m[k];
    torch::Tensor& v = state->v[k];
    m.mul_(PerParticle(1 - omb1, p)).add_(g * PerParticle(omb1, p));
    v.mul_(PerParticle(1 - omb2, p)).addcmul_(g, g * PerParticle(omb2, p));
    torch::Tensor m_hat = m / PerParticle(state->bias_correction1, p);
    torch::Tensor denom = (v / PerParticle(state->bias_correction2, p)).sqrt_().add_(
        PerParticle(eps, p));
    torch::Tensor r = m_hat / denom + PerParticle(wd, p) * p;
    torch::Tensor scale = lr;
    torch::Tensor pk_sq = RowDot(p, p);
    if (opt.lamb && p.dim() > 2) {
      // LAMB trust ratio per tensor; vectors (biases, gains) keep 1.
      torch::Tensor pn = pk_sq.sqrt();
      torch::Tensor rn = RowDot(r, r).sqrt();
      torch::Tensor trust = (pn / rn).clamp(opt.lamb_min_trust, opt.lamb_max_trust);
      trust = torch::where((pn >= 1e-8) & (rn >= 1e-8), trust, torch::ones_like(trust));
      scale = lr * trust;
    }
    torch::Tensor u = r * PerParticle(scale, p);

    dot_gm += RowDot(g, m_hat);
    dot_gp += RowDot(g, p);
    dot_gu += RowDot(g, u);
    m_sq += RowDot(m_hat, m_hat);
    torch::Tensor m_minus_g = m_hat - g;
    m_minus_g_sq += RowDot(m_minus_g, m_minus_g);
    u_sq += RowDot(u, u);
    p_sq += pk_sq;
    out.updates.push_back(std::move(u));
  }

  CiaoStats& s = out.stats;
  torch::Tensor g_norm = grad_norm * clip_scale;  // |g| after clipping
  s.grad_norm = grad_norm;
  s.clipped = clipped;
  s.clip_scale = clip_scale;
  s.update_norm = u_sq.sqrt();
  s.param_norm = p_sq.sqrt();
  s.momentum_norm = m_sq.sqrt();
  s.momentum_minus_grad_norm = m_minus_g_sq.sqrt();
  s.cos_grad_momentum = Cosine(dot_gm, g_norm, s.momentum_norm);
  s.cos_grad_param = Cosine(dot_gp, g_norm, s.param_norm);
  s.cos_grad_update = Cosine(dot_gu, g_norm, s.update_norm);
  s.dim = torch::full({n}, dim, torch::TensorOptions(torch::kInt64).device(device));
  return out;
}

// ---------------------------------------------------------------------------

CiaoOptimizer::CiaoOptimizer(std::vector<torch::Tensor> params,
                             const CiaoHyperparameters& hparams, const CiaoOptions& options)
    : torch::optim::Optimizer({torch::optim::OptimizerParamGroup(std::move(params))},
                              std::make_unique<CiaoOptimizerOptions>()) {
  auto& d = static_cast<CiaoOptimizerOptions&>(*defaults_);
  d.hparams = hparams;
  d.options = options;
  opts().hparams = hparams;
  opts().options = options;
}

// The one param group's options: what LibTorch's schedulers change.
CiaoOptimizerOptions& CiaoOptimizer::opts() {
  return static_cast<CiaoOptimizerOptions&>(param_groups_.at(0).options());
}
const CiaoOptimizerOptions& CiaoOptimizer::opts() const {
  return static_cast<const CiaoOptimizerOptions&>(param_groups_.at(0).options());
}

void CiaoOptimizer::set_hyperparameters(const CiaoHyperparameters& h) {
  opts().hparams = h;
  static_cast<CiaoOptimizerOptions&>(*defaults_).hparams = h;
}
CiaoHyperparameters CiaoOptimizer::hyperparameters() const { return opts().hparams; }

torch::Tensor CiaoOptimizer::step(LossClosure closure) {
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable(true);
    loss = closure();
  }
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> all;
  for (auto& group : param_groups_)
    for (auto& p : group.params()) all.push_back(p);
  if (all.empty()) return loss;
  if (ciao_state_.m.empty()) {
    std::vector<torch::Tensor> batched;
    for (auto& p : all) batched.push_back(p.detach().unsqueeze(0));
    ciao_state_ = InitCiaoState(batched);
  }
  // One particle: every tensor gets a leading dimension of 1.
  std::vector<torch::Tensor> params, grads;
  CiaoState sub = ciao_state_;
  sub.m.clear();
  sub.v.clear();
  std::vector<size_t> which;
  for (size_t i = 0; i < all.size(); ++i) {
    if (!all[i].grad().defined()) continue;
    params.push_back(all[i].detach().unsqueeze(0));
    grads.push_back(all[i].grad().detach().unsqueeze(0));
    sub.m.push_back(ciao_state_.m[i]);
    sub.v.push_back(ciao_state_.v[i]);
    which.push_back(i);
  }
  if (params.empty()) return loss;
  CiaoHparamTensors h = CiaoHparamTensors::Fill(1, opts().hparams);
  CiaoStepResult r = CiaoStep(params, grads, &sub, h, opts().options);
  for (size_t k = 0; k < which.size(); ++k) all[which[k]].detach().sub_(r.updates[k].squeeze(0));
  // m and v were updated in place; the per-run scalars were replaced.
  ciao_state_.bias_correction1 = sub.bias_correction1;
  ciao_state_.bias_correction2 = sub.bias_correction2;
  ciao_state_.rolling_max = sub.rolling_max;
  ciao_state_.step = sub.step;
  last_stats_ = r.stats;
  ++iteration_;
  return loss;
}

void CiaoOptimizer::save(torch::serialize::OutputArchive& archive) const {
  const CiaoHyperparameters& h = opts().hparams;
  archive.write("hparams", torch::tensor({h.lr, h.one_minus_beta1, h.one_minus_beta2, h.eps,
                                          h.weight_decay, h.clip_fraction},
                                         torch::kFloat64));
  archive.write("iteration", torch::tensor(iteration_, torch::kInt64));
  archive.write("num_params", torch::tensor(int64_t(ciao_state_.m.size()), torch::kInt64));
  if (ciao_state_.m.empty()) return;
  archive.write("bias_correction1", ciao_state_.bias_correction1);
  archive.write("bias_correction2", ciao_state_.bias_correction2);
  archive.write("rolling_max", ciao_state_.rolling_max);
  archive.write("step", ciao_state_.step);
  for (size_t i = 0; i < ciao_state_.m.size(); ++i) {
    archive.write(absl::StrCat("m/", i), ciao_state_.m[i]);
    archive.write(absl::StrCat("v/", i), ciao_state_.v[i]);
  }
}

void CiaoOptimizer::load(torch::serialize::InputArchive& archive) {
  torch::Tensor hp, it, n;
  archive.read("hparams", hp);
  archive.read("iteration", it);
  archive.read("num_params", n);
  TORCH_CHECK(hp.numel() == 6, "saved CIAO hyperparameters have the wrong size");
  auto a = hp.accessor<double, 1>();
  opts().hparams = {a[0], a[1], a[2], a[3], a[4], a[5]};
  iteration_ = it.item<int64_t>();
  ciao_state_ = CiaoState();
  const int64_t count = n.item<int64_t>();
  if (count == 0) return;
  archive.read("bias_correction1", ciao_state_.bias_correction1);
  archive.read("bias_correction2", ciao_state_.bias_correction2);
  archive.read("rolling_max", ciao_state_.rolling_max);
  archive.read("step", ciao_state_.step);
  ciao_state_.m.resize(count);
  ciao_state_.v.resize(count);
  for (int64_t i = 0; i < count; ++i) {
    archive.read(absl::StrCat("m/", i), ciao_state_.m[i]);
    archive.read(absl::StrCat("v/", i), ciao_state_.v[i]);
  }
}

}  // namespace lopt
