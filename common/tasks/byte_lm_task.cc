#include "common/tasks/byte_lm_task.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/spec/job_limits.h"
#include "common/tasks/loss_and_grad.h"

namespace lopt {

namespace {

namespace fs = std::filesystem;

bool ReadTextFile(const fs::path& p, std::string* out) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return false;
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (data.find('\0') != std::string::npos) return false;  // binary, e.g. fortune's .dat
  out->append(data);
  return true;
}

// [P, 1, d] view of a per-particle vector [P, d] for broadcasting over rows.
torch::Tensor Rows(const torch::Tensor& v) { return v.unsqueeze(1); }

torch::Tensor LayerNorm(const torch::Tensor& x, const torch::Tensor& gain,
                        const torch::Tensor& bias) {
  // x [P, N, d]; gain, bias [P, d]
  return torch::layer_norm(x, {x.size(-1)}) * Rows(gain) + Rows(bias);
}

class ByteLmTask : public Task {
 public:
  ByteLmTask(const v1::ByteLmSpec& spec, ByteCorpus corpus, torch::Device device)
      : spec_(spec),
        corpus_(std::move(corpus)),
        device_(device),
        d_(spec.model_dim()),
        ctx_(spec.context_length()),
        heads_(spec.num_heads()),
        layers_(spec.num_layers()) {
    shapes_ = {{256, d_}, {ctx_, d_}};
    for (int64_t l = 0; l < layers_; ++l) {
      std::vector<std::vector<int64_t>> layer = {
          {d_}, {d_}, {d_, 3 * d_}, {d_, d_},          // ln1 gain, bias; qkv; out
          {d_}, {d_}, {d_, 4 * d_}, {4 * d_}, {4 * d_, d_}, {d_}};  // ln2; mlp
      shapes_.insert(shapes_.end(), layer.begin(), layer.end());
    }
    shapes_.push_back({d_});  // final ln gain
    shapes_.push_back({d_});  // final ln bias
    shapes_.push_back({d_, 256});
    // Fixed evaluation windows, evenly spaced over the test split.
    const int64_t max_start = corpus_.test.size(0) - ctx_ - 1;
    eval_starts_ = torch::linspace(0, static_cast<double>(max_start), std::min<int64_t>(64, max_start + 1))
                       .to(torch::kInt64).to(device_);
    // The text lives where the model does: windows are gathered there.
    corpus_.train = corpus_.train.to(device_);
    corpus_.test = corpus_.test.to(device_);
  }

  torch::Device device() const override { return device_; }

  std::string name() const override {
    return absl::StrCat("byte_lm_d", d_, "_l", layers_, "_ctx", ctx_);
  }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s;
    auto normal = [&](std::vector<int64_t> shape, double sd) {
      shape.insert(shape.begin(), groups);
      return RepeatGroups(torch::randn(shape, gen) * sd, replicas).to(device_);
    };
    auto constant = [&](std::vector<int64_t> shape, double v) {
      shape.insert(shape.begin(), groups * replicas);
      return torch::full(shape, v, torch::TensorOptions().device(device_));
    };
    const double w = 1.0 / std::sqrt(static_cast<double>(d_));
    // Residual branches' outputs scaled down by depth (GPT-2's init).
    const double out_w = w / std::sqrt(2.0 * static_cast<double>(layers_));
    s.params.push_back(normal({256, d_}, 0.02));
    s.params.push_back(normal({ctx_, d_}, 0.01));
    for (int64_t l = 0; l < layers_; ++l) {
      s.params.push_back(constant({d_}, 1));
      s.params.push_back(constant({d_}, 0));
      s.params.push_back(normal({d_, 3 * d_}, w));
      s.params.push_back(normal({d_, d_}, out_w));
      s.params.push_back(constant({d_}, 1));
      s.params.push_back(constant({d_}, 0));
      s.params.push_back(normal({d_, 4 * d_}, w));
      s.params.push_back(constant({4 * d_}, 0));
      s.params.push_back(normal({4 * d_, d_}, out_w / 2));
      s.params.push_back(constant({d_}, 0));
    }
    s.params.push_back(constant({d_}, 1));
    s.params.push_back(constant({d_}, 0));
    // Small logits at the start: the untrained model predicts ~uniform bytes.
    s.params.push_back(normal({d_, 256}, 0.1 * w));
    return s;
  }

  // x: [groups, batch, ctx + 1] int64 windows of the train split.
  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    const int64_t n = groups * spec_.batch_size();
    // Drawn on the CPU generator, as every family: a CUDA task draws the same windows.
    torch::Tensor starts = torch::randint(corpus_.train.size(0) - ctx_ - 1, {n}, gen).to(device_);
    return Batch{Windows(corpus_.train, starts).view({groups, spec_.batch_size(), ctx_ + 1}), {}};
  }

  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    const int64_t reps = s.num_particles() / batch.x.size(0);
    torch::Tensor windows = RepeatGroups(batch.x, reps);  // [P, B, ctx + 1]
    return LossAndGradOf(
        s.params, [&](const std::vector<torch::Tensor>& p) { return Loss(p, windows, nullptr); },
        grads);
  }

  EvalResult Evaluate(const TaskState& s) const override {
    torch::NoGradGuard no_grad;
    const int64_t p = s.num_particles();
    torch::Tensor w = Windows(corpus_.test, eval_starts_);  // [E, ctx + 1]
    torch::Tensor windows = w.unsqueeze(0).expand({p, w.size(0), w.size(1)});
    torch::Tensor accuracy;
    torch::Tensor loss = Loss(s.params, windows, &accuracy);
    return EvalResult{loss, accuracy};
  }

  double MaxMetaLoss() const override { return 1.5 * std::log(256.0); }

 private:
  static torch::Tensor Windows(const torch::Tensor& text, const torch::Tensor& starts,
                               int64_t len) {
    torch::Tensor idx =
        starts.unsqueeze(1) + torch::arange(len, starts.options().dtype(torch::kInt64)).unsqueeze(0);
    return text.index_select(0, idx.reshape({-1})).view({starts.size(0), len}).to(torch::kInt64);
  }
  torch::Tensor Windows(const torch::Tensor& text, const torch::Tensor& starts) const {
    return Windows(text, starts, ctx_ + 1);
  }

  // Per-particle mean next-byte cross-entropy [P] of windows [P, B, ctx + 1];
  // *accuracy (if non-null) the per-particle next-byte accuracy.
  torch::Tensor Loss(const std::vector<torch::Tensor>& p, const torch::Tensor& windows,
                     torch::Tensor* accuracy) const {
    const int64_t np = windows.size(0), b = windows.size(1), n = b * ctx_;
    const int64_t dh = d_ / heads_;
    torch::Tensor inputs = windows.slice(2, 0, ctx_).reshape({np, n});        // [P, N]
    torch::Tensor targets = windows.slice(2, 1, ctx_ + 1).reshape({np, n});   // [P, N]
    size_t k = 0;
    const torch::Tensor& tok = p[k++];
    const torch::Tensor& pos = p[k++];
    torch::Tensor h = tok.gather(1, inputs.unsqueeze(-1).expand({np, n, d_}));  // [P, N, d]
    h = (h.view({np, b, ctx_, d_}) + pos.unsqueeze(1)).view({np, n, d_});
    // Made on the device (true: masked): a host tensor copied here would break
    // the CUDA graph that ELO's unroller captures the inner step in.
    torch::Tensor causal =
        torch::ones({ctx_, ctx_}, torch::TensorOptions().dtype(torch::kBool).device(h.device())).triu(1);
    for (int64_t l = 0; l < layers_; ++l) {
      const torch::Tensor &g1 = p[k], &b1 = p[k + 1], &wqkv = p[k + 2], &wo = p[k + 3];
      const torch::Tensor &g2 = p[k + 4], &b2 = p[k + 5], &w1 = p[k + 6], &c1 = p[k + 7];
      const torch::Tensor &w2 = p[k + 8], &c2 = p[k + 9];
      k += 10;
      torch::Tensor qkv = torch::bmm(LayerNorm(h, g1, b1), wqkv)  // [P, N, 3d]
                              .view({np, b, ctx_, 3, heads_, dh})
                              .permute({3, 0, 1, 4, 2, 5})  // [3, P, B, H, ctx, dh]
                              .reshape({3, np * b * heads_, ctx_, dh});
      torch::Tensor scores = torch::bmm(qkv[0], qkv[1].transpose(1, 2)) / std::sqrt(double(dh));
      scores = scores.masked_fill(causal, -std::numeric_limits<float>::infinity());
      torch::Tensor att = torch::bmm(torch::softmax(scores, -1), qkv[2])  // [PBH, ctx, dh]
                              .view({np, b, heads_, ctx_, dh})
                              .permute({0, 1, 3, 2, 4})
                              .reshape({np, n, d_});
      h = h + torch::bmm(att, wo);
      torch::Tensor mlp = torch::gelu(torch::baddbmm(Rows(c1), LayerNorm(h, g2, b2), w1));
      h = h + torch::baddbmm(Rows(c2), mlp, w2);
    }
    const torch::Tensor &gf = p[k], &bf = p[k + 1], &unembed = p[k + 2];
    torch::Tensor logits = torch::bmm(LayerNorm(h, gf, bf), unembed);  // [P, N, 256]
    torch::Tensor logp = torch::log_softmax(logits, -1);
    torch::Tensor nll = -logp.gather(2, targets.unsqueeze(-1)).squeeze(-1);  // [P, N]
    if (accuracy != nullptr)
      *accuracy = (logits.argmax(-1) == targets).to(torch::kFloat32).mean(1);
    return nll.mean(1);
  }

  v1::ByteLmSpec spec_;
  ByteCorpus corpus_;
  torch::Device device_;
  int64_t d_, ctx_, heads_, layers_;
  std::vector<std::vector<int64_t>> shapes_;
  torch::Tensor eval_starts_;
};

}  // namespace

absl::StatusOr<ByteCorpus> LoadByteCorpus(const std::string& path, int64_t min_bytes_per_split,
                                          double test_fraction) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    return absl::NotFoundError(absl::StrCat("byte_lm: no such file or directory: ", path));
  std::string text;
  if (fs::is_directory(path, ec)) {
    std::vector<fs::path> files;
    int64_t bytes = 0;
    for (auto it = fs::recursive_directory_iterator(path, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_symlink() || !it->is_regular_file()) continue;
      files.push_back(it->path());
      bytes += static_cast<int64_t>(it->file_size(ec));
      if (bytes > kMaxDataBytes)
        return absl::InvalidArgumentError(absl::StrCat(
            "byte_lm: ", path, " holds more than the ", kMaxDataBytes, " bytes a task may read"));
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) ReadTextFile(f, &text);
  } else if (auto s = CheckDataFile(path); !s.ok()) {
    // Not /dev/zero, a FIFO or a file larger than a worker should hold.
    return absl::InvalidArgumentError(absl::StrCat("byte_lm: ", s.message()));
  } else if (!ReadTextFile(path, &text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("byte_lm: ", path, " is not a readable text file"));
  }
  const int64_t total = static_cast<int64_t>(text.size());
  const int64_t test = static_cast<int64_t>(std::floor(total * test_fraction));
  if (total - test < min_bytes_per_split || test < min_bytes_per_split)
    return absl::InvalidArgumentError(absl::StrCat(
        "byte_lm: ", path, " has ", total, " bytes of text; each split needs at least ",
        min_bytes_per_split));
  torch::Tensor all = torch::empty({total}, torch::kUInt8);
  std::memcpy(all.data_ptr<uint8_t>(), text.data(), text.size());
  return ByteCorpus{all.slice(0, 0, total - test).clone(), all.slice(0, total - test).clone()};
}

std::unique_ptr<Task> MakeByteLmTask(const v1::ByteLmSpec& spec, ByteCorpus corpus,
                                     torch::Device device) {
  return std::make_unique<ByteLmTask>(spec, std::move(corpus), device);
}

}  // namespace lopt
