#include "common/elo/small_fc_lopt.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "common/tasks/task.h"
#include "kernels/lopt_step_cpu.h"
#ifdef LOPT_WITH_CUDA
#include "kernels/lopt_step_cuda_torch.h"
#endif

namespace lopt {
namespace {

const double kMomDecays[3] = {0.9, 0.99, 0.999};
const double kRmsDecay = 0.999;
const double kFacDecays[3] = {0.9, 0.99, 0.999};
const double kTimescales[kLoptNumTimeFeatures] = {1,    3,    10,   30,    100,  300,
                                                  1e3,  3e3,  1e4,  3e4,   1e5};

torch::Tensor Decays(const double (&d)[3], const torch::Tensor& like) {
  return torch::tensor({d[0], d[1], d[2]}, like.options());
}

torch::Tensor SafeRsqrt(const torch::Tensor& x) { return torch::rsqrt(x.clamp_min(1e-9)); }

// EMA with three decays over a trailing axis: acc [..., 3], x [...].
void Ema3(torch::Tensor& acc, const torch::Tensor& x, const double (&d)[3]) {
  torch::Tensor beta = Decays(d, acc);
  acc.mul_(beta).add_(x.unsqueeze(-1) * (1 - beta));
}

std::vector<int64_t> PerParticleShape(const torch::Tensor& t) {
  std::vector<int64_t> s(t.sizes().begin() + 1, t.sizes().end());
  if (s.empty()) s.push_back(1);  // scalars are treated as 1-D, as upstream
  return s;
}

torch::Tensor AsPerParticle(const torch::Tensor& t) {
  return t.dim() == 1 ? t.unsqueeze(1) : t;
}

// Truncated normal at +-2 std by rejection, as haiku's initializer.
torch::Tensor TruncatedNormal(int64_t rows, int64_t cols, double std, torch::Generator& gen) {
  torch::Tensor x = torch::randn({rows, cols}, gen);
  while (true) {
    torch::Tensor bad = x.abs() > 2;
    int64_t n = bad.sum().item<int64_t>();
    if (n == 0) break;
    x.masked_scatter_(bad, torch::randn({n}, gen));
  }
  return x * std;
}

}  // namespace

FactoredDims FactoredDimsOf(const std::vector<int64_t>& shape) {
  FactoredDims f;
  if (shape.size() < 2) return f;
  std::vector<int> order(shape.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return shape[a] < shape[b]; });
  f.factored = true;
  f.d0 = order[order.size() - 1];
  f.d1 = order[order.size() - 2];
  return f;
}

SmallFcLopt::SmallFcLopt(const v1::LearnedOptimizerSpec& spec) : spec_(spec) {}

int64_t SmallFcLopt::theta_size() const {
  int64_t h = hidden_size();
  return kLoptNumInputs * h + h + h * h + h + h * 2 + 2;
}

torch::Tensor SmallFcLopt::InitTheta(torch::Generator& gen) const {
  int64_t h = hidden_size();
  std::vector<torch::Tensor> parts = {
      TruncatedNormal(kLoptNumInputs, h, 1.0 / std::sqrt(double(kLoptNumInputs)), gen).flatten(),
      torch::zeros({h}),
      TruncatedNormal(h, h, 1.0 / std::sqrt(double(h)), gen).flatten(),
      torch::zeros({h}),
      TruncatedNormal(h, 2, 1.0 / std::sqrt(double(h)), gen).flatten(),
      torch::zeros({2})};
  return torch::cat(parts);
}

LoptState SmallFcLopt::InitState(const std::vector<torch::Tensor>& params) const {
  LoptState state;
  for (const auto& raw : params) {
    torch::Tensor p = AsPerParticle(raw);
    auto opts = p.options();
    std::vector<int64_t> full(p.sizes().begin(), p.sizes().end());
    LoptTensorState st;
    auto with = [&](std::vector<int64_t> s, int64_t last) {
      s.push_back(last);
      return torch::zeros(s, opts);
    };
    st.mom = with(full, 3);
    st.rms = with(full, 1);
    FactoredDims f = FactoredDimsOf(PerParticleShape(p));
    if (f.factored) {
      std::vector<int64_t> row = full, col = full;
      row.erase(row.begin() + 1 + f.d0);
      col.erase(col.begin() + 1 + f.d1);
      st.fac_a = with(row, 3);
      st.fac_b = with(col, 3);
    } else {
      st.fac_a = with(full, 3);
      st.fac_b = torch::zeros({p.size(0), 0}, opts);
    }
    state.push_back(std::move(st));
  }
  return state;
}

namespace {

bool IsCpuFloatContiguous(const torch::Tensor& t) {
  return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
}

// The momentum and rms EMAs in one pass over memory (the op-by-op version
// reads and writes each accumulator three times). Same float arithmetic as
// the tensor ops: acc * beta + g * (1 - beta), with beta and 1 - beta in float.
void MomRmsEmaInPlace(const torch::Tensor& g, torch::Tensor& mom, torch::Tensor& rms) {
  const float* gp = g.data_ptr<float>();
  float* m = mom.data_ptr<float>();
  float* r = rms.data_ptr<float>();
  float b[3], one_minus_b[3];
  for (int k = 0; k < 3; ++k) {
    b[k] = float(kMomDecays[k]);
    one_minus_b[k] = 1.0f - b[k];
  }
  const float rb = float(kRmsDecay), one_minus_rb = 1.0f - rb;
  const int64_t n = g.numel();
  for (int64_t i = 0; i < n; ++i) {
    float gi = gp[i];
    for (int k = 0; k < 3; ++k) m[3 * i + k] = m[3 * i + k] * b[k] + gi * one_minus_b[k];
    r[i] = r[i] * rb + gi * gi * one_minus_rb;
  }
}

}  // namespace

void SmallFcLopt::Accumulate(const torch::Tensor& raw_g, LoptTensorState* st) {
  torch::Tensor g = AsPerParticle(raw_g);
  if (IsCpuFloatContiguous(g) && IsCpuFloatContiguous(st->mom) && IsCpuFloatContiguous(st->rms) &&
      !(torch::GradMode::is_enabled() && g.requires_grad())) {
    MomRmsEmaInPlace(g, st->mom, st->rms);
  } else {
    Ema3(st->mom, g, kMomDecays);
    // 1 - float32(0.999), as the reference computes it, not float32(1 - 0.999).
    st->rms.mul_(kRmsDecay).add_(g.square().unsqueeze(-1) * double(1.0f - float(kRmsDecay)));
  }
  torch::Tensor g2 = g.square() + 1e-30;
  FactoredDims f = FactoredDimsOf(PerParticleShape(g));
  if (f.factored) {
    Ema3(st->fac_a, g2.mean(1 + f.d0), kFacDecays);  // v_row: reduce over d0
    Ema3(st->fac_b, g2.mean(1 + f.d1), kFacDecays);  // v_col: reduce over d1
  } else {
    Ema3(st->fac_a, g2, kFacDecays);
  }
}

torch::Tensor SmallFcLopt::RawFeatures(const torch::Tensor& raw_p, const torch::Tensor& raw_g,
                                       const LoptTensorState& st) {
  torch::Tensor p = AsPerParticle(raw_p), g = AsPerParticle(raw_g);
  const torch::Tensor& m = st.mom;
  torch::Tensor rsqrt_rms = torch::rsqrt(st.rms + 1e-6);
  std::vector<torch::Tensor> f = {g.unsqueeze(-1), p.unsqueeze(-1), m, st.rms,
                                  m * rsqrt_rms, rsqrt_rms};
  FactoredDims fd = FactoredDimsOf(PerParticleShape(g));
  if (fd.factored) {
    const torch::Tensor& v_row = st.fac_a;
    const torch::Tensor& v_col = st.fac_b;
    int reduced_d1 = fd.d1 > fd.d0 ? fd.d1 - 1 : fd.d1;
    torch::Tensor row_mean = v_row.mean(1 + reduced_d1, /*keepdim=*/true);
    torch::Tensor row_factor = SafeRsqrt(v_row / (row_mean + 1e-9)).unsqueeze(1 + fd.d0);
    torch::Tensor col_factor = SafeRsqrt(v_col).unsqueeze(1 + fd.d1);
    torch::Tensor rc = row_factor * col_factor;  // broadcasts to [P, S..., 3]
    std::vector<int64_t> full(m.sizes().begin(), m.sizes().end());
    torch::Tensor row_feat = v_row.unsqueeze(1 + fd.d0).expand(full);
    torch::Tensor col_feat = v_col.unsqueeze(1 + fd.d1).expand(full);
    f.push_back(g.unsqueeze(-1) * rc);
    f.push_back(row_feat);
    f.push_back(col_feat);
    f.push_back(torch::rsqrt(row_feat + 1e-8));
    f.push_back(torch::rsqrt(col_feat + 1e-8));
    f.push_back(m * rc);
  } else {
    const torch::Tensor& v = st.fac_a;
    torch::Tensor rsqrt_v = torch::rsqrt(v + 1e-8);
    f.push_back(g.unsqueeze(-1) * SafeRsqrt(v + 1e-9));
    f.push_back(v);
    f.push_back(v);
    f.push_back(rsqrt_v);
    f.push_back(rsqrt_v);
    f.push_back(m * torch::rsqrt(v + 1e-6));
  }
  return torch::cat(f, -1).reshape({p.size(0), -1, kLoptNumFeatures});
}

torch::Tensor SmallFcLopt::NormalizeFeatures(const torch::Tensor& raw) {
  return raw * torch::rsqrt(raw.square().mean(1, /*keepdim=*/true) + 1e-5);
}

torch::Tensor SmallFcLopt::TimeFeatures(const torch::Tensor& step) {
  torch::Tensor tau = torch::tensor(
      std::vector<double>(std::begin(kTimescales), std::end(kTimescales)),
      step.options().dtype(torch::kFloat32));
  return torch::tanh(step.to(torch::kFloat32).unsqueeze(-1) / tau - 1.0);
}

torch::Tensor SmallFcLopt::Mlp(const torch::Tensor& x, const torch::Tensor& tf,
                               const torch::Tensor& theta_in) const {
  int64_t P = x.size(0), h = hidden_size();
  torch::Tensor theta = theta_in.dim() == 1 ? theta_in.unsqueeze(0).expand({P, -1}) : theta_in;
  int64_t o = 0;
  auto take = [&](int64_t rows, int64_t cols) {
    torch::Tensor t = theta.narrow(1, o, rows * cols).reshape({P, rows, cols});
    o += rows * cols;
    return t;
  };
  torch::Tensor w0 = take(kLoptNumInputs, h), b0 = take(1, h);
  torch::Tensor w1 = take(h, h), b1 = take(1, h);
  torch::Tensor w2 = take(h, 2), b2 = take(1, 2);
  // The time features are the same for every element of a particle: fold
  // their contribution into the first bias instead of tiling them N times.
  torch::Tensor bias0 = torch::baddbmm(b0, tf.unsqueeze(1),
                                       w0.narrow(1, kLoptNumFeatures, kLoptNumTimeFeatures));
  torch::Tensor a = torch::relu(torch::baddbmm(bias0, x, w0.narrow(1, 0, kLoptNumFeatures)));
  a = torch::relu(torch::baddbmm(b1, a, w1));
  return torch::baddbmm(b2, a, w2);
}

std::vector<torch::Tensor> SmallFcLopt::Step(const std::vector<torch::Tensor>& params,
                                             const std::vector<torch::Tensor>& grads,
                                             LoptState* state, const torch::Tensor& step,
                                             const torch::Tensor& theta) const {
#ifdef LOPT_WITH_CUDA
  if (LoptStepCudaSupports(params, grads, *state, step, theta, hidden_size()))
    return LoptStepCuda(params, grads, state, step, theta, hidden_size(), spec_.step_mult(),
                        spec_.exp_mult());
#endif
  if (!LoptStepCpuSupports(params, grads, *state, step, theta))
    return StepReference(params, grads, state, step, theta);
  for (size_t i = 0; i < params.size(); ++i) Accumulate(grads[i], &(*state)[i]);
  return LoptStepCpu(params, grads, *state, step, theta, hidden_size(), spec_.step_mult(),
                     spec_.exp_mult());
}

std::vector<torch::Tensor> SmallFcLopt::StepReference(const std::vector<torch::Tensor>& params,
                                                      const std::vector<torch::Tensor>& grads,
                                                      LoptState* state,
                                                      const torch::Tensor& step,
                                                      const torch::Tensor& theta) const {
  std::vector<torch::Tensor> feats;
  feats.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    Accumulate(grads[i], &(*state)[i]);
    feats.push_back(NormalizeFeatures(RawFeatures(params[i], grads[i], (*state)[i])));
  }
  torch::Tensor out = Mlp(torch::cat(feats, 1), TimeFeatures(step), theta);
  torch::Tensor u = out.select(-1, 0) *
                    torch::exp(out.select(-1, 1) * spec_.exp_mult()) * spec_.step_mult();
  std::vector<torch::Tensor> updates;
  updates.reserve(params.size());
  int64_t o = 0;
  for (const auto& p : params) {
    int64_t n = p.numel() / p.size(0);
    updates.push_back(u.narrow(1, o, n).reshape(p.sizes()));
    o += n;
  }
  return updates;
}

std::vector<torch::Tensor> FlattenLoptState(const LoptState& state) {
  std::vector<torch::Tensor> flat;
  for (const auto& st : state) {
    flat.push_back(st.mom);
    flat.push_back(st.rms);
    flat.push_back(st.fac_a);
    flat.push_back(st.fac_b);
  }
  return flat;
}

LoptState UnflattenLoptState(const std::vector<torch::Tensor>& flat) {
  LoptState state;
  for (size_t i = 0; i + 3 < flat.size(); i += 4)
    state.push_back(LoptTensorState{flat[i], flat[i + 1], flat[i + 2], flat[i + 3]});
  return state;
}

bool HasStepMultSchedule(const v1::LearnedOptimizerSpec& spec) {
  return spec.warmup_fraction() > 0 || spec.step_mult_schedule() == v1::COSINE ||
         spec.weight_decay() > 0;
}

double StepMultFactor(const v1::LearnedOptimizerSpec& spec, int64_t t, int64_t total_steps) {
  if (total_steps <= 0) return 1.0;
  const double it = double(t), n = double(total_steps);
  // A whole number of warm-up steps (0.05 is not exact in float32).
  const double warmup = std::max(1.0, std::round(double(spec.warmup_fraction()) * n));
  if (spec.warmup_fraction() > 0 && it < warmup) return it / warmup;  // from 0, as ELO's code
  if (spec.step_mult_schedule() != v1::COSINE) return 1.0;
  const double frac = std::clamp(it / std::max(n - 1, 1.0), 0.0, 1.0);
  const double lo = double(spec.min_step_mult()), hi = double(spec.step_mult());
  return (lo + (hi - lo) * 0.5 * (1.0 + std::cos(M_PI * frac))) / hi;
}

void ApplyStepMultSchedule(const v1::LearnedOptimizerSpec& spec, double factor,
                           const std::vector<torch::Tensor>& params,
                           std::vector<torch::Tensor>* updates) {
  const double wd = double(spec.step_mult()) * double(spec.weight_decay());
  for (size_t j = 0; j < updates->size(); ++j) {
    torch::Tensor& u = (*updates)[j];
    if (wd > 0) u.add_(params[j], wd);
    if (factor != 1.0) u.mul_(factor);
  }
}

namespace {
// The random stream of theta's initialisation (MakeGenerator's stream index).
constexpr uint64_t kStreamThetaInit = 2;
}  // namespace

torch::Tensor InitialTheta(const v1::JobSpec& job) {
  torch::Generator gen = MakeGenerator(job.seed(), kStreamThetaInit, 0);
  return SmallFcLopt(job.lopt()).InitTheta(gen);
}

}  // namespace lopt
