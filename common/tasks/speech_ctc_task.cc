#include "common/tasks/speech_ctc_task.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tasks/activation.h"
#include "common/tasks/loss_and_grad.h"

namespace lopt {
namespace {

// The dynamic FP16 loss scale's start and the most halvings a step.
constexpr double kInitialLossScale = 32768.0;
constexpr int kMaxScaleHalvings = 24;
constexpr int64_t kConv1dKernel = 5;

class SpeechCtcTask : public Task {
 public:
  SpeechCtcTask(const v1::SpeechCtcSpec& spec, std::shared_ptr<const SpeechCorpus> corpus,
                torch::Device device)
      : spec_(spec), corpus_(std::move(corpus)), device_(device) {
    channels_.assign(spec.conv_channels().begin(), spec.conv_channels().end());
    if (channels_.empty()) channels_ = {16, 16};
    classes_ = int64_t(spec.alphabet().size()) + 1;
    int64_t in_c = 1, freq = corpus_->num_mel_bins;
    for (int64_t c : channels_) {
      shapes_.push_back({c, in_c, 3, 3});
      shapes_.push_back({c});
      in_c = c;
      freq = (freq - 1) / 2 + 1;
    }
    bands_ = freq;
    int64_t in = in_c * freq;
    const int64_t h = spec.hidden_size();
    for (int l = 0; l < spec.num_sequence_layers(); ++l) {
      if (gru()) {
        shapes_.push_back({in, 3 * h});
        shapes_.push_back({h, 3 * h});
        shapes_.push_back({3 * h});
        shapes_.push_back({3 * h});
      } else {
        shapes_.push_back({h, in, kConv1dKernel});
        shapes_.push_back({h});
      }
      in = h;
    }
    shapes_.push_back({in, classes_});
    shapes_.push_back({classes_});
    switch (spec.precision()) {
      case v1::BF16: dtype_ = torch::kBFloat16; break;
      case v1::FP16: dtype_ = torch::kFloat16; break;
      default: dtype_ = torch::kFloat32;
    }
    // The meta-loss ceiling: 1.5 x a uniform prediction's loss bound,
    // (output frames / target length) x ln(classes), averaged over the
    // training split.
    torch::Tensor out = (corpus_->train.frames - 1).div(2, "floor") + 1;
    ratio_ = (out.to(torch::kFloat64) / corpus_->train.label_lengths.to(torch::kFloat64))
                 .mean()
                 .item<double>();
  }

  torch::Device device() const override { return device_; }

  std::string name() const override {
    std::string p = spec_.precision() == v1::BF16   ? "_bf16"
                    : spec_.precision() == v1::FP16 ? "_fp16"
                                                    : "";
    return absl::StrCat("speech_ctc_c", absl::StrJoin(channels_, "x"), "_",
                        gru() ? "gru" : "conv1d", spec_.hidden_size(), "x",
                        spec_.num_sequence_layers(), p);
  }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  // PyTorch's initialisations: convolutions and linear layers uniform in
  // +-1/sqrt(fan_in) (weights and biases), the GRU's every tensor in
  // +-1/sqrt(hidden_size).
  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s;
    auto uniform = [&](std::vector<int64_t> shape, double fan_in) {
      shape.insert(shape.begin(), groups);
      const double bound = 1.0 / std::sqrt(fan_in);
      return RepeatGroups(torch::rand(shape, gen).mul_(2 * bound).sub_(bound), replicas).to(device_);
    };
    size_t k = 0;
    for (size_t l = 0; l < channels_.size(); ++l, k += 2) {
      const double fan_in = double(shapes_[k][1]) * 9;
      s.params.push_back(uniform(shapes_[k], fan_in));
      s.params.push_back(uniform(shapes_[k + 1], fan_in));
    }
    for (int l = 0; l < spec_.num_sequence_layers(); ++l) {
      if (gru()) {
        for (int j = 0; j < 4; ++j, ++k) s.params.push_back(uniform(shapes_[k], spec_.hidden_size()));
      } else {
        const double fan_in = double(shapes_[k][1]) * kConv1dKernel;
        s.params.push_back(uniform(shapes_[k], fan_in));
        s.params.push_back(uniform(shapes_[k + 1], fan_in));
        k += 2;
      }
    }
    s.params.push_back(uniform(shapes_[k], double(shapes_[k][0])));
    s.params.push_back(uniform(shapes_[k + 1], double(shapes_[k][0])));
    return s;
  }

  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    const SpeechSplit& tr = corpus_->train;
    const int64_t b = spec_.batch_size();
    torch::Tensor idx = torch::randint(tr.features.size(0), {groups * b}, gen, torch::kInt64);
    torch::Tensor x = tr.features.index_select(0, idx);
    torch::Tensor y = torch::cat({tr.frames.index_select(0, idx).unsqueeze(1),
                                  tr.label_lengths.index_select(0, idx).unsqueeze(1),
                                  tr.labels.index_select(0, idx)},
                                 1);
    return Batch{x.view({groups, b, x.size(1), x.size(2)}).to(device_),
                 y.view({groups, b, y.size(1)}).to(device_)};
  }

  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    const int64_t P = s.num_particles(), reps = P / batch.x.size(0);
    torch::Tensor x = RepeatGroups(batch.x, reps);  // [P, B, T, F]
    torch::Tensor y = RepeatGroups(batch.y, reps);  // [P, B, 2 + L]
    torch::Tensor in_len = OutputFrames(y.select(2, 0));
    torch::Tensor tgt_len = y.select(2, 1);
    torch::Tensor targets = y.narrow(2, 2, y.size(2) - 2);
    auto loss_of = [&](const std::vector<torch::Tensor>& p) {
      torch::Tensor logp = torch::log_softmax(Logits(p, x, in_len).to(torch::kFloat32), -1);
      return CtcLossPerParticle(logp, targets, in_len, tgt_len);
    };
    if (spec_.precision() != v1::FP16) return LossAndGradOf(s.params, loss_of, grads);
    // FP16: scale each particle's loss so that small gradients survive float16.
    const bool dynamic = spec_.loss_scale() == 0;
    return LossAndGradOf(s.params, loss_of, grads,
                         [&](const torch::Tensor& loss, const std::vector<torch::Tensor>& leaves,
                             std::vector<torch::Tensor>* g) {
                           LossScaledGradients(loss, leaves,
                                               dynamic ? kInitialLossScale : double(spec_.loss_scale()),
                                               dynamic, kMaxScaleHalvings, g);
                         });
  }

  // The test split (its first eval_utterances) in chunks of utterances:
  // the mean per-character CTC loss, and the CER of greedy decoding.
  EvalResult Evaluate(const TaskState& s) const override {
    torch::NoGradGuard no_grad;
    const SpeechSplit& te = corpus_->test;
    const int64_t P = s.num_particles();
    const int64_t n = spec_.eval_utterances() > 0
                          ? std::min<int64_t>(spec_.eval_utterances(), te.features.size(0))
                          : te.features.size(0);
    const int64_t T = te.features.size(1);
    // ~16 M activations a chunk over all particles.
    int64_t width = std::max<int64_t>(spec_.hidden_size() * 4, classes_);
    int64_t freq = corpus_->num_mel_bins;
    for (int64_t c : channels_) {
      freq = (freq - 1) / 2 + 1;
      width = std::max(width, c * freq);
    }
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / (P * T * width));
    torch::Tensor loss_sum = torch::zeros({P}, torch::kFloat64);
    std::vector<int64_t> errors(P, 0);
    int64_t ref_chars = 0;
    for (int64_t lo = 0; lo < n; lo += chunk) {
      const int64_t m = std::min(chunk, n - lo);
      torch::Tensor x = te.features.slice(0, lo, lo + m).to(device_).unsqueeze(0).expand({P, m, T, -1});
      torch::Tensor frames = te.frames.slice(0, lo, lo + m);
      torch::Tensor lens = te.label_lengths.slice(0, lo, lo + m);
      torch::Tensor labels = te.labels.slice(0, lo, lo + m);
      torch::Tensor in_len = OutputFrames(frames).to(device_).unsqueeze(0).expand({P, m});
      torch::Tensor logp = torch::log_softmax(Logits(s.params, x, in_len).to(torch::kFloat32), -1);
      torch::Tensor per = torch::ctc_loss(
          logp.reshape({P * m, logp.size(2), classes_}).transpose(0, 1),
          labels.to(device_).unsqueeze(0).expand({P, m, -1}).reshape({P * m, -1}),
          in_len.reshape({P * m}), lens.to(device_).unsqueeze(0).expand({P, m}).reshape({P * m}),
          /*blank=*/0, at::Reduction::None, /*zero_infinity=*/false);
      loss_sum += (per.view({P, m}) / lens.to(device_).to(per.dtype())).sum(1).to(torch::kFloat64).cpu();
      // Greedy decoding: the best class of each frame, collapsed.
      torch::Tensor best = logp.argmax(-1).cpu().contiguous();  // [P, m, T']
      torch::Tensor in_cpu = OutputFrames(frames);
      const int64_t tp = best.size(2);
      for (int64_t u = 0; u < m; ++u) {
        const int64_t l = lens[u].item<int64_t>();
        std::vector<int64_t> ref(labels[u].data_ptr<int64_t>(), labels[u].data_ptr<int64_t>() + l);
        ref_chars += l;
        const int64_t f = in_cpu[u].item<int64_t>();
        for (int64_t p = 0; p < P; ++p)
          errors[p] += EditDistance(
              CtcGreedyCollapse(best.data_ptr<int64_t>() + (p * m + u) * tp, f), ref);
      }
    }
    EvalResult r;
    r.loss = (loss_sum / double(n)).to(torch::kFloat32);
    r.accuracy = torch::full({P}, std::nan(""));
    r.char_error_rate = torch::empty({P});
    for (int64_t p = 0; p < P; ++p) r.char_error_rate[p] = double(errors[p]) / double(ref_chars);
    return r;
  }

  double MaxMetaLoss() const override { return 1.5 * ratio_ * std::log(double(classes_)); }

  // ctc_loss copies the input and target lengths to the host, and FP16's
  // dynamic loss scale decides on the host whether to halve it: neither
  // survives stream capture.
  bool CudaGraphCapturable() const override { return false; }

 private:
  bool gru() const { return spec_.sequence_layer() != v1::CONV1D; }

  static torch::Tensor OutputFrames(const torch::Tensor& frames) {
    return (frames - 1).div(2, "floor") + 1;
  }

  // Logits [P, B, T', classes] (in the compute dtype) of features x [P, B,
  // T, F] whose utterances have in_len [P, B] valid output frames: frames
  // past them are zeroed after every layer that mixes time, so that an
  // utterance's outputs do not depend on the padding.
  torch::Tensor Logits(const std::vector<torch::Tensor>& p, const torch::Tensor& x,
                       const torch::Tensor& in_len) const {
    const int64_t P = x.size(0), B = x.size(1), T = x.size(2), F = x.size(3);
    const int64_t Tp = (T - 1) / 2 + 1;
    auto cast = [&](const torch::Tensor& t) { return t.to(dtype_); };
    torch::Tensor mask = (torch::arange(Tp, in_len.options()).view({1, 1, Tp}) <
                          in_len.unsqueeze(-1)).to(dtype_);  // [P, B, T']
    // [P, B, T, F] -> [B, P, T, F]: the particles are the first conv's groups.
    torch::Tensor h = cast(x).transpose(0, 1).reshape({B, P, T, F});
    torch::Tensor conv_mask = mask.transpose(0, 1).unsqueeze(2).unsqueeze(-1);  // [B, P, 1, T', 1]
    size_t k = 0;
    for (size_t l = 0; l < channels_.size(); ++l, k += 2) {
      const torch::Tensor& w = p[k];  // [P, c, c_in, 3, 3]
      const int64_t c = w.size(1);
      h = torch::conv2d(h, cast(w).reshape({P * c, w.size(2), 3, 3}), cast(p[k + 1]).reshape({P * c}),
                        /*stride=*/{l == 0 ? 2 : 1, 2}, /*padding=*/1, /*dilation=*/1, /*groups=*/P);
      h = Activate(h, spec_.activation());
      const int64_t fq = h.size(3);
      h = (h.view({B, P, c, Tp, fq}) * conv_mask).view({B, P * c, Tp, fq});
    }
    // [B, P * c, T', F'] -> [P, B, T', c * F']
    const int64_t c = h.size(1) / P;
    torch::Tensor seq = h.view({B, P, c, Tp, bands_}).permute({1, 0, 3, 2, 4}).reshape({P, B, Tp, c * bands_});
    const int64_t H = spec_.hidden_size();
    for (int l = 0; l < spec_.num_sequence_layers(); ++l) {
      const int64_t in = seq.size(3);
      if (gru()) {
        torch::Tensor gi = torch::baddbmm(cast(p[k + 2]).unsqueeze(1), seq.reshape({P, B * Tp, in}),
                                          cast(p[k])).view({P, B, Tp, 3 * H});
        torch::Tensor w_hh = cast(p[k + 1]), b_hh = cast(p[k + 3]).unsqueeze(1);
        torch::Tensor state = torch::zeros({P, B, H}, gi.options());
        std::vector<torch::Tensor> outs;
        outs.reserve(Tp);
        for (int64_t t = 0; t < Tp; ++t) {
          torch::Tensor gh = torch::baddbmm(b_hh, state, w_hh);  // [P, B, 3H]
          torch::Tensor g = gi.select(2, t);
          torch::Tensor r = torch::sigmoid(g.narrow(2, 0, H) + gh.narrow(2, 0, H));
          torch::Tensor z = torch::sigmoid(g.narrow(2, H, H) + gh.narrow(2, H, H));
          torch::Tensor nn = torch::tanh(g.narrow(2, 2 * H, H) + r * gh.narrow(2, 2 * H, H));
          state = nn + z * (state - nn);
          outs.push_back(state);
        }
        seq = torch::stack(outs, 2);  // [P, B, T', H]
        k += 4;
      } else {
        torch::Tensor in_t = seq.permute({1, 0, 3, 2}).reshape({B, P * in, Tp});
        torch::Tensor out = torch::conv1d(in_t, cast(p[k]).reshape({P * H, in, kConv1dKernel}),
                                          cast(p[k + 1]).reshape({P * H}), /*stride=*/1,
                                          /*padding=*/kConv1dKernel / 2, /*dilation=*/1, /*groups=*/P);
        seq = Activate(out, spec_.activation()).view({B, P, H, Tp}).permute({1, 0, 3, 2});
        seq = seq * mask.unsqueeze(-1);
        k += 2;
      }
    }
    const int64_t in = seq.size(3);
    return torch::baddbmm(cast(p[k + 1]).unsqueeze(1), seq.reshape({P, B * Tp, in}), cast(p[k]))
        .view({P, B, Tp, classes_});
  }

  v1::SpeechCtcSpec spec_;
  std::shared_ptr<const SpeechCorpus> corpus_;
  torch::Device device_;
  std::vector<int64_t> channels_;
  int64_t classes_ = 0, bands_ = 0;
  std::vector<std::vector<int64_t>> shapes_;
  torch::ScalarType dtype_ = torch::kFloat32;
  double ratio_ = 1;
};

}  // namespace

torch::Tensor LossScaledGradients(const torch::Tensor& loss, const std::vector<torch::Tensor>& leaves,
                                  double initial_scale, bool dynamic, int max_halvings,
                                  std::vector<torch::Tensor>* grads) {
  const int64_t P = loss.size(0);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(loss.device());
  torch::Tensor scale = torch::full({P}, initial_scale, f32);
  const torch::Tensor finite_loss = torch::isfinite(loss.detach());
  std::vector<torch::Tensor> g;
  for (int attempt = 0;; ++attempt) {
    const bool last = !dynamic || attempt == max_halvings;
    g = torch::autograd::grad({(loss * scale).sum()}, leaves, {}, /*retain_graph=*/!last);
    if (last) break;
    torch::Tensor ok = torch::ones({P}, f32.dtype(torch::kBool));
    for (const auto& t : g) ok &= torch::isfinite(t).reshape({P, -1}).all(1);
    // A particle whose loss is not finite has diverged: no scale helps it.
    torch::Tensor retry = ok.logical_not() & finite_loss;
    if (!retry.any().item<bool>()) break;
    scale = torch::where(retry, scale * 0.5, scale);
  }
  for (auto& t : g) {
    std::vector<int64_t> shape(t.dim(), 1);
    shape[0] = P;
    t = t / scale.view(shape);
  }
  *grads = std::move(g);
  return scale;
}

torch::Tensor CtcLossPerParticle(const torch::Tensor& log_probs, const torch::Tensor& targets,
                                 const torch::Tensor& input_lengths,
                                 const torch::Tensor& target_lengths) {
  const int64_t P = log_probs.size(0), B = log_probs.size(1);
  torch::Tensor per = torch::ctc_loss(
      log_probs.reshape({P * B, log_probs.size(2), log_probs.size(3)}).transpose(0, 1),
      targets.reshape({P * B, targets.size(2)}), input_lengths.reshape({P * B}),
      target_lengths.reshape({P * B}), /*blank=*/0, at::Reduction::None, /*zero_infinity=*/false);
  return (per / target_lengths.reshape({P * B}).to(per.dtype())).view({P, B}).mean(1);
}

absl::StatusOr<std::unique_ptr<Task>> MakeSpeechCtcTask(const v1::SpeechCtcSpec& spec,
                                                        std::shared_ptr<const SpeechCorpus> corpus,
                                                        torch::Device device) {
  if (spec.precision() == v1::BF16 || spec.precision() == v1::FP16) {
    // Probe the reduced-precision kernels the model needs on this device.
    const auto dtype = spec.precision() == v1::BF16 ? torch::kBFloat16 : torch::kFloat16;
    try {
      torch::NoGradGuard no_grad;
      auto o = torch::TensorOptions().dtype(dtype).device(device);
      (void)torch::conv2d(torch::ones({1, 2, 4, 4}, o), torch::ones({2, 1, 3, 3}, o), torch::ones({2}, o),
                          {2, 2}, 1, 1, 2);
      (void)torch::conv1d(torch::ones({1, 2, 4}, o), torch::ones({2, 1, 5}, o), torch::ones({2}, o), 1, 2,
                          1, 2);
      (void)torch::baddbmm(torch::ones({2, 1, 3}, o), torch::ones({2, 2, 2}, o), torch::ones({2, 2, 3}, o));
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          "task.speech_ctc.precision ", v1::Precision_Name(spec.precision()),
          " cannot run on ", device.str(), " with this LibTorch (",
          std::string(e.what_without_backtrace()).substr(0, 200), "); use ",
          spec.precision() == v1::FP16 ? "BF16 or a CUDA device" : "FP32"));
    }
  }
  return std::unique_ptr<Task>(std::make_unique<SpeechCtcTask>(spec, std::move(corpus), device));
}

}  // namespace lopt
