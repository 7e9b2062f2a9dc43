#include "worker/meta_test.h"

#include <cmath>

#include <torch/torch.h>

#include "common/adam.h"

namespace lopt {
namespace {

constexpr uint64_t kStreamEvalInit = 10;
constexpr uint64_t kStreamEvalData = 11;

using UpdateFn = std::function<std::vector<torch::Tensor>(
    const TaskState&, const std::vector<torch::Tensor>&, const torch::Tensor& step)>;

// Trains P = replicas * seeds particles for config.steps steps; returns the
// per-particle loss curve [windows, P], the final-window loss [P] and the
// final state.
struct Trained {
  torch::Tensor curve, final_loss;
  TaskState state;
};

Trained Train(const Task& task, const MetaTestConfig& c, int64_t replicas, const UpdateFn& update,
              const std::function<void(int64_t)>& tick) {
  torch::NoGradGuard no_grad;
  torch::Generator init_gen = MakeGenerator(c.seed, kStreamEvalInit, 0);
  torch::Generator data_gen = MakeGenerator(c.seed, kStreamEvalData, 0);
  Trained t;
  t.state = task.Init(c.seeds, replicas, init_gen);
  int64_t P = t.state.num_particles();
  int64_t window = std::max<int64_t>(1, std::min<int64_t>(50, c.steps / 10));
  torch::Tensor acc = torch::zeros({P}, torch::kFloat64);
  torch::Tensor final_acc = torch::zeros({P}, torch::kFloat64);
  std::vector<torch::Tensor> curve;
  std::vector<torch::Tensor> grads;
  for (int64_t s = 0; s < c.steps; ++s) {
    Batch b = task.SampleBatch(c.seeds, data_gen);
    torch::Tensor loss = task.LossAndGrad(t.state, b, &grads).to(torch::kFloat64);
    acc += loss;
    if (s >= c.steps - window) final_acc += loss;
    std::vector<torch::Tensor> u = update(t.state, grads, torch::full({P}, s, torch::kInt64));
    for (size_t j = 0; j < u.size(); ++j) t.state.params[j].sub_(u[j]);
    if ((s + 1) % c.record_every == 0) {
      curve.push_back(acc / double(c.record_every));
      acc.zero_();
      if (tick) tick(c.record_every);
    }
  }
  t.curve = curve.empty() ? torch::zeros({0, P}) : torch::stack(curve);
  t.final_loss = final_acc / double(window);
  return t;
}

void Collect(const Task& task, const Trained& t, const std::string& name,
             const std::vector<double>& lrs, int64_t seeds, MetaTestReport* report) {
  EvalResult ev = task.Evaluate(t.state);
  int64_t P = t.state.num_particles();
  for (int64_t p = 0; p < P; ++p) {
    MetaTestRun r;
    r.optimizer = name;
    r.lr = lrs[p / seeds];
    r.seed = p % seeds;
    r.final_train_loss = t.final_loss[p].item<double>();
    r.test_loss = ev.loss[p].item<double>();
    r.test_accuracy = ev.accuracy[p].item<double>();
    r.diverged = !std::isfinite(r.final_train_loss) || !std::isfinite(r.test_loss);
    if (r.diverged) r.final_train_loss = INFINITY;
    torch::Tensor col = t.curve.select(1, p).to(torch::kFloat32).contiguous();
    r.curve.assign(col.data_ptr<float>(), col.data_ptr<float>() + col.numel());
    report->runs.push_back(std::move(r));
  }
}

}  // namespace

MetaTestReport RunMetaTest(const Task& task, const MetaTestConfig& c,
                           const std::vector<NamedLopt>& lopts,
                           const std::function<void(int64_t, int64_t)>& progress) {
  MetaTestReport report;
  report.task = task.name();
  report.steps = c.steps;
  report.record_every = c.record_every;
  report.final_window = std::max<int64_t>(1, std::min<int64_t>(50, c.steps / 10));
  int64_t total = c.steps * int64_t(lopts.size() + 1), done = 0;
  auto tick = [&](int64_t n) {
    done += n;
    if (progress) progress(done, total);
  };

  for (const NamedLopt& nl : lopts) {
    SmallFcLopt lopt(nl.spec);
    LoptState state;
    UpdateFn update = [&](const TaskState& s, const std::vector<torch::Tensor>& g,
                          const torch::Tensor& step) {
      if (state.empty()) state = lopt.InitState(s.params);
      return lopt.Step(s.params, g, &state, step, nl.theta);
    };
    Trained t = Train(task, c, 1, update, tick);
    Collect(task, t, nl.name, {0.0}, c.seeds, &report);
  }

  // Every learning rate of the grid is a replica: particle r * seeds + s.
  int64_t R = c.adamw_lrs.size();
  std::vector<double> lrs(c.adamw_lrs.begin(), c.adamw_lrs.end());
  torch::Tensor lr = torch::tensor(lrs, torch::kFloat64).repeat_interleave(c.seeds);
  AdamState adam;
  AdamOptions opt;
  opt.weight_decay = c.adamw_weight_decay;
  UpdateFn update = [&](const TaskState& s, const std::vector<torch::Tensor>& g,
                        const torch::Tensor& step) {
    if (adam.m.empty()) adam = InitAdamState(s.params);
    return AdamUpdates(s.params, g, &adam, lr, step, opt);
  };
  Trained t = Train(task, c, R, update, tick);
  Collect(task, t, "adamw", lrs, c.seeds, &report);
  return report;
}

}  // namespace lopt
