#include "common/tasks/task.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/tasks/activation.h"
#include "common/tasks/byte_lm_task.h"
#include "common/tasks/idx_dataset.h"
#include "common/tasks/image_augmentation.h"
#include "common/tasks/loss_and_grad.h"
#include "common/tasks/neumf_task.h"
#include "common/tasks/speech_ctc_task.h"
#ifdef LOPT_WITH_CUDA
#include "kernels/losses_cuda_torch.h"
#endif

namespace lopt {

torch::Tensor RepeatGroups(const torch::Tensor& t, int64_t replicas) {
  if (replicas == 1) return t;
  std::vector<int64_t> reps(t.dim(), 1);
  reps[0] = replicas;
  return t.repeat(reps);
}

torch::Tensor NormalizeMetaLoss(const torch::Tensor& loss, double max_loss) {
  torch::Tensor l = torch::where(torch::isfinite(loss), loss,
                                 torch::full_like(loss, max_loss));
  return l.clamp_max(max_loss);
}

torch::Generator MakeGenerator(uint64_t seed, uint64_t stream, uint64_t index) {
  // SplitMix64 over the three words: distinct (stream, index) pairs give
  // unrelated seeds.
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  uint64_t s = mix(mix(mix(seed) ^ stream) ^ index);
  return at::make_generator<at::CPUGeneratorImpl>(s);
}

torch::Tensor LossAndGradOf(const std::vector<torch::Tensor>& params, const LossFn& loss_fn,
                            std::vector<torch::Tensor>* grads, const GradientFn& differentiate) {
  if (grads == nullptr) {
    torch::NoGradGuard no_grad;
    return loss_fn(params);
  }
  torch::AutoGradMode enable_grad(true);
  std::vector<torch::Tensor> leaves;
  leaves.reserve(params.size());
  for (const auto& p : params) leaves.push_back(p.detach().requires_grad_(true));
  torch::Tensor loss = loss_fn(leaves);
  if (differentiate)
    differentiate(loss, leaves, grads);
  else
    *grads = torch::autograd::grad({loss.sum()}, leaves);
  return loss.detach();
}

namespace {

// The activation's derivative as a function of its output h = act(a).
torch::Tensor ActivationDerivative(const torch::Tensor& h, v1::Activation a) {
  switch (a) {
    case v1::TANH: return 1 - h.square();
    case v1::SIGMOID: return h * (1 - h);
    default: return (h > 0).to(h.scalar_type());
  }
}

// Per-particle mean cross-entropy: logits [P, B, C], labels [P, B].
torch::Tensor CrossEntropy(const torch::Tensor& logits, const torch::Tensor& y) {
  torch::Tensor logp = torch::log_softmax(logits, -1);
  return -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1);
}

// Truncated-normal-free fan-in init (uniform +-1/sqrt(fan_in), as
// torch.nn.Linear), one independent draw per group, replicated.
torch::Tensor FanInUniform(std::vector<int64_t> shape, int64_t fan_in,
                           int64_t groups, int64_t replicas, torch::Generator& gen) {
  shape.insert(shape.begin(), groups);
  double bound = 1.0 / std::sqrt(double(fan_in));
  torch::Tensor t = torch::rand(shape, gen).mul_(2 * bound).sub_(bound);
  return RepeatGroups(t, replicas);
}

class ImageTaskBase : public Task {
 public:
  ImageTaskBase(std::shared_ptr<const ImageDataset> data, int64_t batch_size,
                torch::Device device)
      : data_(OnDevice(std::move(data), device)), batch_size_(batch_size), device_(device) {}

  torch::Device device() const override { return device_; }

  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    torch::Tensor idx = torch::randint(data_->train_x.size(0), {groups * batch_size_},
                                       gen, torch::kInt64).to(device_);
    return Batch{data_->train_x.index_select(0, idx).view({groups, batch_size_, -1}),
                 data_->train_y.index_select(0, idx).view({groups, batch_size_})};
  }

  torch::Tensor LossAndGrad(const TaskState& state, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    int64_t P = state.num_particles();
    int64_t reps = P / batch.x.size(0);
    torch::Tensor x = RepeatGroups(batch.x, reps);
    torch::Tensor y = RepeatGroups(batch.y, reps);
    return LossAndGradOf(
        state.params,
        [&](const std::vector<torch::Tensor>& p) { return CrossEntropy(Forward(p, x), y); },
        grads);
  }

  EvalResult Evaluate(const TaskState& state) const override {
    torch::NoGradGuard no_grad;
    int64_t P = state.num_particles();
    int64_t n = data_->test_x.size(0);
    const int64_t chunk = std::max<int64_t>(
        1, (1 << 22) / (P * data_->test_x.size(1) * ActivationsPerPixel()));
    auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(device_);
    torch::Tensor loss_sum = torch::zeros({P}, f64);
    torch::Tensor correct = torch::zeros({P}, f64);
    for (int64_t s = 0; s < n; s += chunk) {
      int64_t e = std::min(n, s + chunk);
      torch::Tensor x = data_->test_x.slice(0, s, e).unsqueeze(0).expand({P, e - s, -1});
      torch::Tensor y = data_->test_y.slice(0, s, e).unsqueeze(0).expand({P, e - s});
      torch::Tensor logits = Forward(state.params, x.contiguous());
      torch::Tensor logp = torch::log_softmax(logits, -1);
      loss_sum -= logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).sum(-1).to(torch::kFloat64);
      correct += logits.argmax(-1).eq(y).sum(-1).to(torch::kFloat64);
    }
    return EvalResult{(loss_sum / double(n)).to(torch::kFloat32).cpu(),
                      (correct / double(n)).to(torch::kFloat32).cpu()};
  }

  double MaxMetaLoss() const override {
    return 1.5 * std::log(double(data_->num_classes));
  }

 protected:
  // logits [P, B, C] from parameters and inputs x [P, B, H*W].
  virtual torch::Tensor Forward(const std::vector<torch::Tensor>& p,
                                const torch::Tensor& x) const = 0;

  // The widest layer's activations an input pixel makes: Evaluate sizes its
  // test-set chunks so that they stay near 16 MiB a tensor.
  virtual int64_t ActivationsPerPixel() const { return 1; }

  // The dataset on `device` (the CPU one itself on the CPU): uploaded once.
  static std::shared_ptr<const ImageDataset> OnDevice(std::shared_ptr<const ImageDataset> d,
                                                      torch::Device device) {
    if (device.is_cpu()) return d;
    auto copy = std::make_shared<ImageDataset>(*d);
    copy->train_x = d->train_x.to(device);
    copy->train_y = d->train_y.to(device);
    copy->test_x = d->test_x.to(device);
    copy->test_y = d->test_y.to(device);
    return copy;
  }

  std::shared_ptr<const ImageDataset> data_;
  int64_t batch_size_;
  torch::Device device_;
};

class FmnistMlpTask : public ImageTaskBase {
 public:
  FmnistMlpTask(const v1::FmnistMlpSpec& spec, std::shared_ptr<const ImageDataset> data,
                torch::Device device)
      : ImageTaskBase(std::move(data), spec.batch_size(), device), act_(spec.activation()) {
    int64_t in = data_->image_size * data_->image_size;
    std::vector<int64_t> sizes(spec.hidden_sizes().begin(), spec.hidden_sizes().end());
    sizes.push_back(data_->num_classes);
    for (int64_t out : sizes) {
      shapes_.push_back({in, out});
      shapes_.push_back({out});
      in = out;
    }
  }
  std::string name() const override {
    return absl::StrCat("fmnist_mlp_", data_->image_size);
  }

  // Forward and backward written out (5 batched matrix products a hidden
  // layer) instead of autograd's graph: the same numbers, fewer and fused
  // kernels. GELU, whose derivative is not a function of its output, takes
  // the autograd path.
  torch::Tensor LossAndGrad(const TaskState& state, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    if (act_ == v1::GELU) return ImageTaskBase::LossAndGrad(state, batch, grads);
    torch::NoGradGuard no_grad;
    const auto& p = state.params;
#ifdef LOPT_WITH_CUDA
    if (batch.x.is_cuda() && p.size() == 4) {
      // One hidden layer: one fused kernel for the whole step where it fits.
      const int code = act_ == v1::TANH ? 1 : act_ == v1::SIGMOID ? 2 : 0;
      torch::Tensor loss;
      if (MlpTaskLossAndGradCudaFused(p, batch.x, batch.y, code, &loss, grads)) return loss;
    }
#endif
    const int64_t P = state.num_particles(), G = batch.x.size(0), reps = P / G;
    const int64_t B = batch.x.size(1);
    // The first layer reads each group's batch in place, one product per
    // replica, instead of copying the batch to every particle.
    torch::Tensor a = torch::empty({P, B, p[0].size(2)}, batch.x.options());
    for (int64_t r = 0; r < reps; ++r) {
      torch::Tensor out = a.narrow(0, r * G, G);
      torch::baddbmm_out(out, p[1].narrow(0, r * G, G).unsqueeze(1), batch.x,
                         p[0].narrow(0, r * G, G));
    }
    std::vector<torch::Tensor> hidden;  // each hidden layer's output
    for (size_t i = 2; i < p.size(); i += 2) {
      hidden.push_back(Activate(a, act_));
      a = torch::baddbmm(p[i + 1].unsqueeze(1), hidden.back(), p[i]);
    }
#ifdef LOPT_WITH_CUDA
    if (a.is_cuda() && CudaFusedLossesEnabled()) {
      // One fused kernel for the loss and d(loss)/d(logits).
      torch::Tensor d;
      torch::Tensor loss = CrossEntropyCudaFused(a, batch.y, grads ? &d : nullptr);
      if (grads == nullptr) return loss;
      Backward(p, batch, hidden, d, grads);
      return loss;
    }
#endif
    // Cross-entropy through a log-sum-exp of the logits a [P, B, C].
    torch::Tensor y = RepeatGroups(batch.y, reps).unsqueeze(-1);
    torch::Tensor m = a.amax(-1, /*keepdim=*/true);
    torch::Tensor e = (a - m).exp_();
    torch::Tensor sum = e.sum(-1, /*keepdim=*/true);
    torch::Tensor lse = sum.log().add_(m).squeeze(-1);
    torch::Tensor loss = (lse - a.gather(-1, y).squeeze(-1)).mean(-1);
    if (grads == nullptr) return loss;
    // d(mean CE)/d(logits) = (softmax - onehot) / B.
    torch::Tensor d = e.div_(sum);
    d.scatter_add_(-1, y, torch::full(y.sizes(), -1.0, d.options()));
    d.div_(double(B));
    Backward(p, batch, hidden, d, grads);
    return loss;
  }

  // The backward pass from d = d(loss)/d(logits) [P, B, C].
  void Backward(const std::vector<torch::Tensor>& p, const Batch& batch,
                const std::vector<torch::Tensor>& hidden, torch::Tensor d,
                std::vector<torch::Tensor>* grads) const {
    const int64_t P = p[0].size(0), G = batch.x.size(0), reps = P / G;
    grads->assign(p.size(), torch::Tensor());
    for (int64_t l = int64_t(p.size() / 2) - 1; l >= 1; --l) {
      const torch::Tensor& in = hidden[l - 1];
      (*grads)[2 * l] = torch::bmm(in.transpose(1, 2), d);
      (*grads)[2 * l + 1] = d.sum(1);
      torch::Tensor dh = torch::bmm(d, p[2 * l].transpose(1, 2));
      d = act_ == v1::RELU ? torch::threshold_backward(dh, in, 0)
                           : dh.mul_(ActivationDerivative(in, act_));
    }
    torch::Tensor w0 = torch::empty_like(p[0]);
    for (int64_t r = 0; r < reps; ++r) {
      torch::Tensor out = w0.narrow(0, r * G, G);
      torch::bmm_out(out, batch.x.transpose(1, 2), d.narrow(0, r * G, G));
    }
    (*grads)[0] = w0;
    (*grads)[1] = d.sum(1);
  }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s;
    for (size_t i = 0; i < shapes_.size(); i += 2) {
      int64_t fan_in = shapes_[i][0];
      s.params.push_back(FanInUniform(shapes_[i], fan_in, groups, replicas, gen).to(device_));
      s.params.push_back(
          FanInUniform(shapes_[i + 1], fan_in, groups, replicas, gen).to(device_));
    }
    return s;
  }

 protected:
  torch::Tensor Forward(const std::vector<torch::Tensor>& p,
                        const torch::Tensor& x) const override {
    torch::Tensor h = x;
    for (size_t i = 0; i < p.size(); i += 2) {
      h = torch::baddbmm(p[i + 1].unsqueeze(1), h, p[i]);
      if (i + 2 < p.size()) h = Activate(h, act_);
    }
    return h;
  }

 private:
  v1::Activation act_;
  std::vector<std::vector<int64_t>> shapes_;
};

// Conv 3x3 stride 2 layers, global average pooling, a linear head. The P
// particles' convolutions run as one grouped convolution (groups = P).
class FmnistCnnTask : public ImageTaskBase {
 public:
  FmnistCnnTask(const v1::FmnistCnnSpec& spec, std::shared_ptr<const ImageDataset> data,
                torch::Device device)
      : ImageTaskBase(std::move(data), spec.batch_size(), device), act_(spec.activation()) {
    int64_t in = 1;
    for (int c : spec.channels()) {
      shapes_.push_back({c, in, 3, 3});
      shapes_.push_back({c});
      in = c;
    }
    shapes_.push_back({in, data_->num_classes});
    shapes_.push_back({data_->num_classes});
  }
  std::string name() const override {
    return absl::StrCat("fmnist_cnn_", data_->image_size);
  }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s;
    for (size_t i = 0; i + 2 < shapes_.size(); i += 2) {
      int64_t fan_in = shapes_[i][1] * 9;
      s.params.push_back(FanInUniform(shapes_[i], fan_in, groups, replicas, gen));
      s.params.push_back(FanInUniform(shapes_[i + 1], fan_in, groups, replicas, gen));
    }
    int64_t fan_in = shapes_[shapes_.size() - 2][0];
    s.params.push_back(FanInUniform(shapes_[shapes_.size() - 2], fan_in, groups, replicas, gen));
    s.params.push_back(FanInUniform(shapes_.back(), fan_in, groups, replicas, gen));
    for (auto& p : s.params) p = p.to(device_);
    return s;
  }

 protected:
  torch::Tensor Forward(const std::vector<torch::Tensor>& p,
                        const torch::Tensor& x) const override {
    int64_t P = x.size(0), B = x.size(1), S = data_->image_size;
    // [P, B, S*S] -> [B, P * 1, S, S]
    torch::Tensor h = x.view({P, B, 1, S, S}).transpose(0, 1).reshape({B, P, S, S});
    size_t n_conv = (p.size() - 2) / 2;
    for (size_t l = 0; l < n_conv; ++l) {
      const torch::Tensor& w = p[2 * l];  // [P, out, in, 3, 3]
      int64_t out = w.size(1);
      h = torch::conv2d(h, w.reshape({P * out, w.size(2), 3, 3}),
                        p[2 * l + 1].reshape({P * out}), /*stride=*/2,
                        /*padding=*/1, /*dilation=*/1, /*groups=*/P);
      h = Activate(h, act_);
    }
    int64_t c = h.size(1) / P;
    torch::Tensor feat = h.mean({2, 3}).view({B, P, c}).transpose(0, 1);  // [P, B, c]
    return torch::baddbmm(p.back().unsqueeze(1), feat, p[p.size() - 2]);
  }

 private:
  v1::Activation act_;
  std::vector<std::vector<int64_t>> shapes_;
};

// v1::FmnistResnetSpec: a stem conv, one residual basic block a stage, global
// average pooling, a linear head; every conv is followed by a group norm.
// As in the CNN, the P particles' convolutions run as one grouped convolution
// (groups = P) on [B, P * channels, H, W] activations, and the group norm's
// P * groups groups never straddle two particles. Autograd differentiates it.
class FmnistResnetTask : public ImageTaskBase {
 public:
  FmnistResnetTask(const v1::FmnistResnetSpec& spec, std::shared_ptr<const ImageDataset> data,
                   torch::Device device)
      : ImageTaskBase(std::move(data), spec.batch_size(), device), act_(spec.activation()) {
    // Each conv is [out, in, k, k] followed by the norm's scale and shift
    // [out]; the order is the one Forward consumes them in.
    auto conv_norm = [&](int64_t out, int64_t in, int64_t k) {
      shapes_.push_back({out, in, k, k});
      shapes_.push_back({out});
      shapes_.push_back({out});
    };
    int64_t in = spec.channels(0);
    conv_norm(in, 1, 3);  // the stem
    for (int s = 0; s < spec.channels_size(); ++s) {
      int64_t c = spec.channels(s);
      conv_norm(c, in, 3);
      conv_norm(c, c, 3);
      if (s > 0) conv_norm(c, in, 1);  // the projection shortcut
      in = c;
    }
    shapes_.push_back({in, data_->num_classes});
    shapes_.push_back({data_->num_classes});
    widest_ = *std::max_element(spec.channels().begin(), spec.channels().end());
  }
  std::string name() const override {
    return absl::StrCat("fmnist_resnet_", data_->image_size);
  }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  // Convs uniform +-1/sqrt(fan_in) (torch.nn.Conv2d's bound), norms scale 1
  // and shift 0 (torch.nn.GroupNorm's), the head as the CNN's.
  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s;
    for (size_t i = 0; i + 2 < shapes_.size(); i += 3) {
      const auto& w = shapes_[i];
      s.params.push_back(FanInUniform(w, w[1] * w[2] * w[3], groups, replicas, gen));
      s.params.push_back(torch::ones({groups * replicas, w[0]}));
      s.params.push_back(torch::zeros({groups * replicas, w[0]}));
    }
    const auto& head = shapes_[shapes_.size() - 2];
    s.params.push_back(FanInUniform(head, head[0], groups, replicas, gen));
    s.params.push_back(FanInUniform(shapes_.back(), head[0], groups, replicas, gen));
    for (auto& p : s.params) p = p.to(device_);
    return s;
  }

  // The norm's groups of a layer of `channels`: groups of channels / 8
  // channels where 8 divides them, fewer and larger groups otherwise.
  static int64_t NormGroups(int64_t channels) { return std::gcd<int64_t>(channels, 8); }

 protected:
  torch::Tensor Forward(const std::vector<torch::Tensor>& p,
                        const torch::Tensor& x) const override {
    const int64_t P = x.size(0), B = x.size(1), S = data_->image_size;
    size_t next = 0;  // the next conv's weight in p
    // Conv (no bias: the norm's shift plays its part) and group norm, all particles.
    auto conv_norm = [&](const torch::Tensor& in, int64_t stride) {
      const torch::Tensor& w = p[next];  // [P, out, in, k, k]
      const int64_t out = w.size(1), k = w.size(3);
      // NCHW throughout: channels-last makes oneDNN's grouped convolution twice
      // as fast but LibTorch 1.13's group norm three times as slow, and the
      // whole step slower (measured on the CPU, P = 16).
      torch::Tensor y = torch::conv2d(in, w.reshape({P * out, w.size(2), k, k}), {}, stride,
                                      /*padding=*/k / 2, /*dilation=*/1, /*groups=*/P);
      y = torch::group_norm(y, P * NormGroups(out), p[next + 1].reshape({P * out}),
                            p[next + 2].reshape({P * out}), kNormEps);
      next += 3;
      return y;
    };
    // [P, B, S*S] -> [B, P * 1, S, S]
    torch::Tensor h = x.view({P, B, 1, S, S}).transpose(0, 1).reshape({B, P, S, S});
    h = Activate(conv_norm(h, 1), act_);
    for (int64_t s = 0; next + 2 < p.size(); ++s) {
      const int64_t stride = s == 0 ? 1 : 2;
      torch::Tensor main = Activate(conv_norm(h, stride), act_);
      main = conv_norm(main, 1);
      torch::Tensor shortcut = s == 0 ? h : conv_norm(h, stride);
      h = Activate(main + shortcut, act_);
    }
    const int64_t c = h.size(1) / P;
    torch::Tensor feat = h.mean({2, 3}).view({B, P, c}).transpose(0, 1);  // [P, B, c]
    return torch::baddbmm(p.back().unsqueeze(1), feat, p[p.size() - 2]);
  }

  int64_t ActivationsPerPixel() const override { return widest_; }

 private:
  static constexpr double kNormEps = 1e-5;
  v1::Activation act_;
  std::vector<std::vector<int64_t>> shapes_;
  int64_t widest_ = 1;
};

// 0.5 * mean_i h_i (x_i - c_i - noise_i)^2; h and c are drawn per task
// (stored in aux), noise per step.
class NoisyQuadraticTask : public Task {
 public:
  NoisyQuadraticTask(const v1::NoisyQuadraticSpec& spec, uint64_t seed, torch::Device device)
      : spec_(spec), device_(device) {
    std::mt19937_64 rng(seed);
    dim_ = std::uniform_int_distribution<int64_t>(spec.min_dim(), spec.max_dim())(rng);
    shapes_ = {{dim_}};
  }
  std::string name() const override { return absl::StrCat("noisy_quadratic_", dim_); }
  torch::Device device() const override { return device_; }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    double lo = spec_.min_log10_condition(), hi = spec_.max_log10_condition();
    torch::Tensor log_cond = torch::rand({groups, 1}, gen) * (hi - lo) + lo;
    torch::Tensor h = torch::pow(10.0, -torch::rand({groups, dim_}, gen) * log_cond);
    torch::Tensor c = torch::randn({groups, dim_}, gen);
    torch::Tensor x0 = torch::randn({groups, dim_}, gen);
    TaskState s;
    s.params = {RepeatGroups(x0, replicas).to(device_)};
    s.aux = {RepeatGroups(h, replicas).to(device_), RepeatGroups(c, replicas).to(device_)};
    return s;
  }
  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    return Batch{(torch::randn({groups, dim_}, gen) * spec_.noise_stddev()).to(device_), {}};
  }
  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    int64_t reps = s.num_particles() / batch.x.size(0);
    torch::Tensor r = s.params[0] - s.aux[1] - RepeatGroups(batch.x, reps);
    torch::Tensor hr = s.aux[0] * r;
    if (grads) *grads = {hr / double(dim_)};
    return 0.5 * (hr * r).mean(-1);
  }
  EvalResult Evaluate(const TaskState& s) const override {
    torch::Tensor r = s.params[0] - s.aux[1];
    torch::Tensor loss = 0.5 * (s.aux[0] * r * r).mean(-1);
    loss = loss.cpu();
    return EvalResult{loss, torch::full_like(loss, std::nan(""))};
  }
  // Expected initial loss is 0.5 * E[h] * E[(x0 - c)^2] <= 1.
  double MaxMetaLoss() const override { return 1.5; }

 private:
  v1::NoisyQuadraticSpec spec_;
  torch::Device device_;
  int64_t dim_;
  std::vector<std::vector<int64_t>> shapes_;
};

// learned_optimization's parameter-scale augmentation: the optimizer sees
// stored parameters q = p / s and gradients s * dL/dp, with a log-uniform s
// per tensor and task, kept as the last aux tensor [P, num_tensors].
class ParamScaledTask : public Task {
 public:
  ParamScaledTask(std::unique_ptr<Task> inner, const v1::ParamScaleAugmentation& spec)
      : inner_(std::move(inner)), spec_(spec) {}
  std::string name() const override { return inner_->name() + "_param_scaled"; }
  torch::Device device() const override { return inner_->device(); }
  const std::vector<std::vector<int64_t>>& param_shapes() const override {
    return inner_->param_shapes();
  }
  std::vector<double> UpdateScales() const override { return inner_->UpdateScales(); }
  bool CudaGraphCapturable() const override { return inner_->CudaGraphCapturable(); }
  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s = inner_->Init(groups, replicas, gen);
    int64_t n = s.params.size();
    double lo = std::log(spec_.min_scale()), hi = std::log(spec_.max_scale());
    torch::Tensor scales =
        RepeatGroups(torch::exp(torch::rand({groups, n}, gen) * (hi - lo) + lo), replicas)
            .to(inner_->device());
    for (int64_t i = 0; i < n; ++i) s.params[i] = s.params[i] / Col(scales, i, s.params[i]);
    s.aux.push_back(scales);
    return s;
  }
  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    return inner_->SampleBatch(groups, gen);
  }
  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    TaskState real = Unscale(s);
    torch::Tensor loss = inner_->LossAndGrad(real, batch, grads);
    if (grads)
      for (size_t i = 0; i < grads->size(); ++i)
        (*grads)[i] = (*grads)[i] * Col(s.aux.back(), i, (*grads)[i]);
    return loss;
  }
  EvalResult Evaluate(const TaskState& s) const override { return inner_->Evaluate(Unscale(s)); }
  double MaxMetaLoss() const override { return inner_->MaxMetaLoss(); }

 private:
  static torch::Tensor Col(const torch::Tensor& scales, int64_t i, const torch::Tensor& like) {
    std::vector<int64_t> shape(like.dim(), 1);
    shape[0] = like.size(0);
    return scales.select(1, i).view(shape);
  }
  TaskState Unscale(const TaskState& s) const {
    TaskState real;
    real.aux.assign(s.aux.begin(), s.aux.end() - 1);
    for (size_t i = 0; i < s.params.size(); ++i)
      real.params.push_back(s.params[i] * Col(s.aux.back(), i, s.params[i]));
    return real;
  }
  std::unique_ptr<Task> inner_;
  v1::ParamScaleAugmentation spec_;
};

// muP (as the `mup` package and muLO use it) on top of a STANDARD MLP: the
// task stores q and computes with p = c * q, c = 1 / m for the readout's
// weight (MuReadout divides the readout's input by the width multiplier m),
// 1 elsewhere; the readout's stored weight starts sqrt(m) times the standard
// draw (mup's rescaling), so its effective scale falls as 1/sqrt(m); hidden
// matrices report an update scale of 1 / m (MuAdam's lr / width_mult).
class MupMlpTask : public Task {
 public:
  MupMlpTask(std::unique_ptr<Task> inner, int64_t base_width)
      : inner_(std::move(inner)) {
    const auto& shapes = inner_->param_shapes();  // [in, out], [out], ...
    const int64_t L = int64_t(shapes.size() / 2);
    std::vector<int64_t> fan_ins;
    for (int64_t l = 0; l < L; ++l) fan_ins.push_back(shapes[2 * l][0]);
    scales_ = MupMlpUpdateScales(fan_ins, base_width);
    mult_.assign(shapes.size(), 1.0);
    if (L >= 2) {
      readout_m_ = double(fan_ins[L - 1]) / double(base_width);  // the readout's fan-in multiplier
      mult_[2 * (L - 1)] = 1.0 / readout_m_;
    }
  }
  std::string name() const override { return inner_->name() + "_mup"; }
  torch::Device device() const override { return inner_->device(); }
  const std::vector<std::vector<int64_t>>& param_shapes() const override {
    return inner_->param_shapes();
  }
  std::vector<double> UpdateScales() const override { return scales_; }
  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s = inner_->Init(groups, replicas, gen);
    for (size_t i = 0; i < s.params.size(); ++i)
      if (mult_[i] != 1.0) s.params[i] = s.params[i] * std::sqrt(readout_m_);
    return s;
  }
  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    return inner_->SampleBatch(groups, gen);
  }
  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    torch::Tensor loss = inner_->LossAndGrad(Effective(s), batch, grads);
    if (grads)
      for (size_t i = 0; i < grads->size(); ++i)
        if (mult_[i] != 1.0) (*grads)[i].mul_(mult_[i]);
    return loss;
  }
  EvalResult Evaluate(const TaskState& s) const override {
    return inner_->Evaluate(Effective(s));
  }
  double MaxMetaLoss() const override { return inner_->MaxMetaLoss(); }

 private:
  TaskState Effective(const TaskState& s) const {
    TaskState p;
    p.aux = s.aux;
    for (size_t i = 0; i < s.params.size(); ++i)
      p.params.push_back(mult_[i] == 1.0 ? s.params[i] : s.params[i] * mult_[i]);
    return p;
  }
  std::unique_ptr<Task> inner_;
  std::vector<double> mult_, scales_;
  double readout_m_ = 1.0;
};

// v1::ImageAugmentation on every batch SampleBatch draws; Evaluate's test
// split is the inner task's, untouched.
class AugmentedImageTask : public Task {
 public:
  AugmentedImageTask(std::unique_ptr<Task> inner, int64_t image_size,
                     const v1::ImageAugmentation& spec)
      : inner_(std::move(inner)), image_size_(image_size), spec_(spec) {}
  std::string name() const override { return inner_->name() + "_augmented"; }
  torch::Device device() const override { return inner_->device(); }
  const std::vector<std::vector<int64_t>>& param_shapes() const override {
    return inner_->param_shapes();
  }
  std::vector<double> UpdateScales() const override { return inner_->UpdateScales(); }
  bool CudaGraphCapturable() const override { return inner_->CudaGraphCapturable(); }
  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    return inner_->Init(groups, replicas, gen);
  }
  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    Batch b = inner_->SampleBatch(groups, gen);
    b.x = AugmentImages(b.x, image_size_, spec_, gen);
    return b;
  }
  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    return inner_->LossAndGrad(s, batch, grads);
  }
  EvalResult Evaluate(const TaskState& s) const override { return inner_->Evaluate(s); }
  double MaxMetaLoss() const override { return inner_->MaxMetaLoss(); }

 private:
  std::unique_ptr<Task> inner_;
  int64_t image_size_;
  v1::ImageAugmentation spec_;
};

}  // namespace

std::vector<double> MupMlpUpdateScales(const std::vector<int64_t>& fan_ins, int64_t base_width) {
  const size_t L = fan_ins.size();
  std::vector<double> scales(2 * L, 1.0);
  for (size_t l = 1; l + 1 < L; ++l) scales[2 * l] = double(base_width) / double(fan_ins[l]);
  return scales;
}

void ScaleUpdates(const std::vector<double>& scales, std::vector<torch::Tensor>* updates) {
  for (size_t j = 0; j < scales.size() && j < updates->size(); ++j)
    if (scales[j] != 1.0) (*updates)[j].mul_(scales[j]);
}

namespace {
torch::Device& DefaultDevice() {
  static torch::Device device(torch::kCPU);
  return device;
}
}  // namespace

torch::Device DefaultTaskDevice() { return DefaultDevice(); }
void SetDefaultTaskDevice(torch::Device device) { DefaultDevice() = device; }

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(name);
  } catch (const std::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device ", name, ": expected cpu, cuda or cuda:N"));
  }
  if (device.is_cpu()) return device;
  if (!device.is_cuda())
    return absl::InvalidArgumentError(absl::StrCat("--device ", name, ": expected cpu or cuda"));
#ifndef LOPT_WITH_CUDA
  return absl::FailedPreconditionError(absl::StrCat(
      "--device ", name, ": this build has no CUDA (configure with -DLOPT_CUDA=ON against a "
      "LibTorch with CUDA)"));
#else
  if (!torch::cuda::is_available())
    return absl::FailedPreconditionError(absl::StrCat("--device ", name, ": no CUDA GPU is visible"));
  if (device.has_index() && device.index() >= int(torch::cuda::device_count()))
    return absl::InvalidArgumentError(absl::StrCat("--device ", name, ": only ",
                                                   torch::cuda::device_count(), " GPUs"));
  if (!device.has_index()) device = torch::Device(torch::kCUDA, 0);
  return device;
#endif
}

absl::StatusOr<std::unique_ptr<Task>> MakeTask(const v1::TaskSpec& spec, uint64_t seed) {
  return MakeTask(spec, seed, DefaultTaskDevice());
}

absl::StatusOr<std::unique_ptr<Task>> MakeTask(const v1::TaskSpec& spec, uint64_t seed,
                                               torch::Device device) {
  std::unique_ptr<Task> task;
  switch (spec.family_case()) {
    case v1::TaskSpec::kFmnistMlp: {
      auto data = LoadImageDataset(spec.fmnist_mlp().data_dir(), spec.fmnist_mlp().image_size());
      if (!data.ok()) return data.status();
      task = std::make_unique<FmnistMlpTask>(spec.fmnist_mlp(), *data, device);
      break;
    }
    case v1::TaskSpec::kFmnistCnn: {
      auto data = LoadImageDataset(spec.fmnist_cnn().data_dir(), spec.fmnist_cnn().image_size());
      if (!data.ok()) return data.status();
      task = std::make_unique<FmnistCnnTask>(spec.fmnist_cnn(), *data, device);
      break;
    }
    case v1::TaskSpec::kFmnistResnet: {
      const auto& r = spec.fmnist_resnet();
      auto data = LoadImageDataset(r.data_dir(), r.image_size());
      if (!data.ok()) return data.status();
      if (r.channels_size() == 0)
        return absl::InvalidArgumentError("task.fmnist_resnet.channels must not be empty");
      task = std::make_unique<FmnistResnetTask>(r, *data, device);
      break;
    }
    case v1::TaskSpec::kNoisyQuadratic:
      task = std::make_unique<NoisyQuadraticTask>(spec.noisy_quadratic(), seed, device);
      break;
    case v1::TaskSpec::kByteLm: {
      auto corpus = LoadByteCorpus(spec.byte_lm().data_path(),
                                   int64_t{spec.byte_lm().context_length()} + 2);
      if (!corpus.ok()) return corpus.status();
      task = MakeByteLmTask(spec.byte_lm(), *std::move(corpus), device);
      break;
    }
    case v1::TaskSpec::kNeumf: {
      auto data = LoadNeumfData(spec.neumf());
      if (!data.ok()) return data.status();
      task = MakeNeumfTask(spec.neumf(), *std::move(data), device);
      break;
    }
    case v1::TaskSpec::kSpeechCtc: {
      auto corpus = LoadSpeechCorpus(spec.speech_ctc());
      if (!corpus.ok()) return corpus.status();
      auto made = MakeSpeechCtcTask(spec.speech_ctc(), *std::move(corpus), device);
      if (!made.ok()) return made.status();
      task = *std::move(made);
      break;
    }
    case v1::TaskSpec::FAMILY_NOT_SET:
      return absl::InvalidArgumentError("task must set one family");
  }
  if (spec.parameterization() == v1::MUP) {
    if (spec.family_case() != v1::TaskSpec::kFmnistMlp)
      return absl::InvalidArgumentError("task.parameterization MUP is for fmnist_mlp only");
    task = std::make_unique<MupMlpTask>(std::move(task), spec.mup_base_width());
  }
  if (spec.has_augmentation() && spec.augmentation().enabled()) {
    const int64_t size = spec.has_fmnist_mlp()   ? spec.fmnist_mlp().image_size()
                         : spec.has_fmnist_cnn() ? spec.fmnist_cnn().image_size()
                         : spec.has_fmnist_resnet() ? spec.fmnist_resnet().image_size()
                                                    : 0;
    if (size == 0)
      return absl::InvalidArgumentError(
          "task.augmentation applies to the image families only (fmnist_mlp, fmnist_cnn, "
          "fmnist_resnet)");
    task = std::make_unique<AugmentedImageTask>(std::move(task), size, spec.augmentation());
  }
  if (spec.has_param_scale() && spec.param_scale().enabled())
    task = std::make_unique<ParamScaledTask>(std::move(task), spec.param_scale());
  return task;
}

}  // namespace lopt
