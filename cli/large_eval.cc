#include "cli/large_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/elo/learned_optimizer.h"
#include "common/elo/optimizer_file.h"
#include "common/spec/job_spec.h"
#include "common/tasks/idx_dataset.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/json.h"
#include "lopt/v1/job.pb.h"

namespace lopt {
namespace {

// mup_base_width > 0: muP as the `mup` package has it (MuReadout divides
// the readout's input by its width multiplier m and starts its weight and
// bias sqrt(m) times larger); the other layers as PyTorch's.
torch::nn::Sequential MakeMlp(const std::vector<int64_t>& hidden, int64_t in, int64_t classes,
                              uint64_t seed, torch::Device device, int64_t mup_base_width = 0) {
  // torch.nn.Linear's init (uniform +-1/sqrt(fan_in)) drawn on the CPU from
  // the seed's own generator: every rank and every arm starts from the same
  // weights whatever the device, and no global RNG is touched.
  torch::Generator gen = MakeGenerator(seed, 70, 0);
  torch::nn::Sequential m;
  std::vector<int64_t> sizes = hidden;
  sizes.push_back(classes);
  for (size_t i = 0; i < sizes.size(); ++i) {
    torch::nn::Linear layer(in, sizes[i]);
    const bool readout = mup_base_width > 0 && i + 1 == sizes.size() && i > 0;
    const double width_mult = readout ? double(in) / double(mup_base_width) : 1.0;
    {
      torch::NoGradGuard no_grad;
      const double bound = 1.0 / std::sqrt(double(in));
      layer->weight.uniform_(-bound, bound, gen);
      layer->bias.uniform_(-bound, bound, gen);
      if (readout) layer->weight.mul_(std::sqrt(width_mult));
    }
    if (readout)
      m->push_back(torch::nn::Functional([width_mult](const torch::Tensor& x) { return x / width_mult; }));
    m->push_back(layer);
    if (i + 1 < sizes.size()) m->push_back(torch::nn::ReLU());
    in = sizes[i];
  }
  m->to(device);
  return m;
}

struct Data {
  torch::Tensor train_x, train_y, test_x, test_y;
  int64_t classes = 0;
};

absl::Status Average(const Collectives& c, const std::vector<torch::Tensor>& t) {
  if (c.world <= 1 || !c.average) return absl::OkStatus();
  return c.average(t);
}

absl::StatusOr<LargeEvalArm> TrainArm(const std::string& name, const LargeEvalConfig& cfg,
                                      const Data& data, torch::Device device,
                                      const Collectives& col,
                                      const std::function<std::unique_ptr<torch::optim::Optimizer>(
                                          std::vector<torch::Tensor>)>& make_opt,
                                      const std::function<void()>& on_step,
                                      int64_t mup_base_width = 0) {
  LargeEvalArm arm;
  arm.name = name;
  torch::nn::Sequential model =
      MakeMlp(cfg.hidden, data.train_x.size(1), data.classes, cfg.seed, device, mup_base_width);
  std::unique_ptr<torch::optim::Optimizer> opt = make_opt(model->parameters());
  std::vector<torch::Tensor> params = model->parameters();
  const int64_t local = cfg.batch / col.world;
  torch::Generator gen = MakeGenerator(cfg.seed, 71, 0);  // the same batches on every rank
  std::vector<double> losses;
  torch::Tensor window = torch::zeros({1}, torch::TensorOptions().device(device));
  int64_t in_window = 0;
  if (device.is_cuda()) torch::cuda::synchronize();
  auto t0 = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (int64_t step = 0; step < cfg.steps; ++step) {
    torch::Tensor idx = torch::randint(data.train_x.size(0), {cfg.batch}, gen, torch::kInt64)
                            .narrow(0, col.rank * local, local)
                            .to(device);
    torch::Tensor x = data.train_x.index_select(0, idx);
    torch::Tensor y = data.train_y.index_select(0, idx);
    opt->zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (auto& p : params) grads.push_back(p.grad());
    if (auto s = Average(col, grads); !s.ok()) return s;
    opt->step();
    window += loss.detach();
    ++in_window;
    ++done;
    if (on_step) on_step();
    if ((step + 1) % cfg.record_every == 0 || step + 1 == cfg.steps) {
      torch::Tensor mean = window / double(in_window);
      if (auto s = Average(col, {mean}); !s.ok()) return s;
      const double v = mean.item<double>();  // the same on every rank
      arm.curve_steps.push_back(step + 1);
      arm.curve_loss.push_back(v);
      window.zero_();
      in_window = 0;
      if (!std::isfinite(v)) {
        arm.diverged = true;
        break;
      }
    }
  }
  if (device.is_cuda()) torch::cuda::synchronize();
  arm.ms_per_step =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      double(std::max<int64_t>(1, done));
  // Final train loss: mean of the records over the last 10% of the steps.
  const int64_t from = cfg.steps - std::max<int64_t>(cfg.steps / 10, 1);
  double sum = 0;
  int n = 0;
  for (size_t i = 0; i < arm.curve_steps.size(); ++i)
    if (arm.curve_steps[i] > from) sum += arm.curve_loss[i], ++n;
  arm.final_train_loss = arm.diverged || n == 0 ? NAN : sum / n;
  // Test split (every rank holds it whole; the replicas agree).
  torch::NoGradGuard no_grad;
  double loss_sum = 0, correct = 0;
  const int64_t N = data.test_x.size(0);
  for (int64_t s = 0; s < N; s += 2048) {
    const int64_t e = std::min(N, s + 2048);
    torch::Tensor logits = model->forward(data.test_x.slice(0, s, e));
    torch::Tensor y = data.test_y.slice(0, s, e);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(-1).eq(y).sum().item<double>();
  }
  arm.test_loss = loss_sum / double(N);
  arm.test_accuracy = correct / double(N);
  return arm;
}

}  // namespace

absl::StatusOr<LargeEvalReport> RunLargeEval(const LargeEvalConfig& cfg, torch::Device device,
                                             const Collectives& col,
                                             const std::function<void(int64_t, int64_t)>& progress) {
  if (cfg.hidden.empty() || *std::min_element(cfg.hidden.begin(), cfg.hidden.end()) <= 0)
    return absl::InvalidArgumentError("hidden sizes must be > 0");
  if (cfg.steps <= 0 || cfg.record_every <= 0)
    return absl::InvalidArgumentError("steps and record_every must be > 0");
  if (col.world < 1 || col.rank < 0 || col.rank >= col.world)
    return absl::InvalidArgumentError("bad rank/world");
  if (cfg.batch <= 0 || cfg.batch % col.world != 0)
    return absl::InvalidArgumentError(absl::StrCat("the global batch (", cfg.batch,
                                                   ") must be a positive multiple of the ",
                                                   col.world, " ranks"));
  auto trained = LoadOptimizerFile(cfg.optimizer_path);
  if (!trained.ok()) return trained.status();
  std::vector<double> lrs = cfg.adamw_lrs;
  if (lrs.empty())
    lrs.assign(trained->file.job().eval().adamw_lrs().begin(),
               trained->file.job().eval().adamw_lrs().end());
  if (lrs.empty()) lrs = {1e-3};
  const double wd = trained->file.job().eval().has_adamw_weight_decay()
                        ? trained->file.job().eval().adamw_weight_decay()
                        : 1e-4;
  auto ds = LoadImageDataset(cfg.data_dir, 28);
  if (!ds.ok()) return ds.status();
  Data data{(*ds)->train_x.to(device), (*ds)->train_y.to(device), (*ds)->test_x.to(device),
            (*ds)->test_y.to(device), (*ds)->num_classes};

  LargeEvalReport report;
  report.config = cfg;
  report.config.adamw_lrs = lrs;
  report.world = col.world;
  report.device = device.str();
  for (const auto& p : MakeMlp(cfg.hidden, data.train_x.size(1), data.classes, cfg.seed,
                               torch::kCPU)->parameters())
    report.parameters += p.numel();
  const int64_t total = cfg.steps * int64_t(1 + lrs.size());
  int64_t done = 0;
  auto on_step = [&] {
    ++done;
    if (progress && col.rank == 0) progress(done, total);
  };
  const auto& file = *trained;
  v1::LearnedOptimizerSpec spec = file.file.options();
  if (!cfg.lopt_options.empty()) {
    auto merged = MergeLoptOptions(spec, cfg.lopt_options);
    if (!merged.ok()) return merged.status();
    spec = *merged;
  }
  // A muLO trains the muP MLP; the base width is its meta-training tasks'.
  int64_t base = 0;
  if (spec.parameterization() == v1::MUP) {
    const v1::JobSpec& job = file.file.job();
    base = job.elo().tasks_size() > 0 ? job.elo().tasks(0).task().mup_base_width()
                                      : job.task().mup_base_width();
    if (base <= 0) base = 128;
  }
  // The task family's muP rule for the MLP's [w0, b0, w1, b1, ...].
  std::vector<double> scales;
  if (base > 0) {
    std::vector<int64_t> fan_ins = {data.train_x.size(1)};
    fan_ins.insert(fan_ins.end(), cfg.hidden.begin(), cfg.hidden.end());
    scales = MupMlpUpdateScales(fan_ins, base);
  }
  auto lopt_arm = TrainArm(
      base > 0 ? "lopt (muP MLP)" : "lopt", cfg, data, device, col,
      [&](std::vector<torch::Tensor> params) -> std::unique_ptr<torch::optim::Optimizer> {
        auto opt = std::make_unique<LearnedOptimizer>(std::move(params), spec, file.theta);
        opt->set_total_steps(cfg.steps);
        opt->set_update_scales(scales);
        return opt;
      },
      on_step, base);
  if (!lopt_arm.ok()) return lopt_arm.status();
  report.arms.push_back(std::move(*lopt_arm));
  for (double lr : lrs) {
    auto arm = TrainArm(
        absl::StrFormat("adamw lr=%g", lr), cfg, data, device, col,
        [&](std::vector<torch::Tensor> params) -> std::unique_ptr<torch::optim::Optimizer> {
          return std::make_unique<torch::optim::AdamW>(
              std::move(params), torch::optim::AdamWOptions(lr).weight_decay(wd));
        },
        on_step);
    if (!arm.ok()) return arm.status();
    report.arms.push_back(std::move(*arm));
  }
  return report;
}

std::string FormatLargeEvalTable(const LargeEvalReport& r) {
  int best = -1;
  for (size_t i = 1; i < r.arms.size(); ++i)
    if (!r.arms[i].diverged &&
        (best < 0 || r.arms[i].final_train_loss < r.arms[size_t(best)].final_train_loss))
      best = int(i);
  std::string out = absl::StrFormat(
      "eval-large: MLP 784-%s-10 (%lld parameters), global batch %lld over %d rank(s) on %s, "
      "%lld steps\n%-20s %12s %10s %10s %10s\n",
      absl::StrJoin(r.config.hidden, "-"), (long long)r.parameters, (long long)r.config.batch,
      r.world, r.device, (long long)r.config.steps, "optimizer", "train loss", "test loss",
      "test acc", "ms/step");
  for (size_t i = 0; i < r.arms.size(); ++i) {
    const auto& a = r.arms[i];
    absl::StrAppendFormat(&out, "%-20s %12s %10.4f %9.2f%% %10.2f%s\n", a.name,
                          a.diverged ? "diverged" : absl::StrFormat("%.4f", a.final_train_loss),
                          a.test_loss, 100 * a.test_accuracy, a.ms_per_step,
                          int(i) == best ? "  (best AdamW)" : "");
  }
  return out;
}

absl::Status WriteLargeEvalReport(const LargeEvalReport& r, const std::string& out_dir) {
  if (auto s = MakeDirs(out_dir); !s.ok()) return s;
  std::string csv = "optimizer,step,train_loss\n";
  std::string arms;
  for (const auto& a : r.arms) {
    for (size_t i = 0; i < a.curve_steps.size(); ++i)
      absl::StrAppendFormat(&csv, "%s,%lld,%.6g\n", a.name, (long long)a.curve_steps[i],
                            a.curve_loss[i]);
    absl::StrAppend(&arms, arms.empty() ? "" : ",\n",
                    absl::StrFormat("    {\"name\": %s, \"final_train_loss\": %s, "
                                    "\"test_loss\": %s, \"test_accuracy\": %s, "
                                    "\"ms_per_step\": %s, \"diverged\": %s}",
                                    JsonString(a.name), JsonNumber(a.final_train_loss),
                                    JsonNumber(a.test_loss), JsonNumber(a.test_accuracy),
                                    JsonNumber(a.ms_per_step), a.diverged ? "true" : "false"));
  }
  std::string json = absl::StrFormat(
      "{\n  \"parameters\": %lld,\n  \"hidden\": [%s],\n  \"batch\": %lld,\n  \"steps\": %lld,\n"
      "  \"world\": %d,\n  \"device\": %s,\n  \"optimizer\": %s,\n  \"arms\": [\n%s\n  ]\n}\n",
      (long long)r.parameters, absl::StrJoin(r.config.hidden, ", "), (long long)r.config.batch,
      (long long)r.config.steps, r.world, JsonString(r.device), JsonString(r.config.optimizer_path),
      arms);
  if (auto s = WriteFileAtomically(out_dir + "/curves.csv", csv); !s.ok()) return s;
  if (auto s = WriteFileAtomically(out_dir + "/report.json", json); !s.ok()) return s;
  return WriteFileAtomically(out_dir + "/table.txt", FormatLargeEvalTable(r));
}

}  // namespace lopt
