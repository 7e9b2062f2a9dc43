#include "common/elo/evaluation.h"

#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/tasks/adam.h"

namespace lopt {
namespace {

constexpr uint64_t kStreamEvalInit = 10;
constexpr uint64_t kStreamEvalData = 11;

// (state, grads, step [P] on the task's device, the same step as a number).
using UpdateFn = std::function<std::vector<torch::Tensor>(
    const TaskState&, const std::vector<torch::Tensor>&, const torch::Tensor& step, int64_t s)>;

// Trains P = replicas * seeds particles for config.steps steps; returns the
// per-particle loss curve [windows, P], the final-window loss [P] and the
// final state.
struct Trained {
  torch::Tensor curve, final_loss;
  torch::Tensor test_curve, test_acc_curve;  // [points, P]
  torch::Tensor test_hr_curve, test_ndcg_curve;  // [points, P]; ranking families
  torch::Tensor test_cer_curve;  // [points, P]; transcription families
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
  // Everything per step stays on the task's device: one host sync a window.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(task.device());
  torch::Tensor acc = torch::zeros({P}, f64);
  torch::Tensor final_acc = torch::zeros({P}, f64);
  torch::Tensor step = torch::zeros({P}, torch::TensorOptions().dtype(torch::kInt64).device(task.device()));
  std::vector<torch::Tensor> curve, test_curve, test_acc, test_hr, test_ndcg, test_cer;
  std::vector<torch::Tensor> grads;
  for (int64_t s = 0; s < c.steps; ++s) {
    Batch b = task.SampleBatch(c.seeds, data_gen);
    torch::Tensor loss = task.LossAndGrad(t.state, b, &grads).to(torch::kFloat64);
    acc += loss;
    if (s >= c.steps - window) final_acc += loss;
    std::vector<torch::Tensor> u = update(t.state, grads, step, s);
    for (size_t j = 0; j < u.size(); ++j) t.state.params[j].sub_(u[j]);
    step.add_(1);
    if ((s + 1) % c.record_every == 0) {
      curve.push_back(acc / double(c.record_every));
      acc.zero_();
      if (tick) tick(c.record_every);
    }
    if (c.test_every > 0 && (s + 1) % c.test_every == 0) {
      EvalResult ev = task.Evaluate(t.state);
      test_curve.push_back(ev.loss.cpu());
      test_acc.push_back(ev.accuracy.cpu());
      if (ev.hit_rate.defined()) {
        test_hr.push_back(ev.hit_rate.cpu());
        test_ndcg.push_back(ev.ndcg.cpu());
      }
      if (ev.char_error_rate.defined()) test_cer.push_back(ev.char_error_rate.cpu());
    }
  }
  t.test_curve = test_curve.empty() ? torch::zeros({0, P}) : torch::stack(test_curve);
  t.test_acc_curve = test_acc.empty() ? torch::zeros({0, P}) : torch::stack(test_acc);
  t.test_hr_curve = test_hr.empty() ? torch::zeros({0, P}) : torch::stack(test_hr);
  t.test_ndcg_curve = test_ndcg.empty() ? torch::zeros({0, P}) : torch::stack(test_ndcg);
  t.test_cer_curve = test_cer.empty() ? torch::zeros({0, P}) : torch::stack(test_cer);
  t.curve = curve.empty() ? torch::zeros({0, P}) : torch::stack(curve).cpu();
  t.final_loss = (final_acc / double(window)).cpu();
  return t;
}

// Replica r's particles are named names[r] (or names[0] for all) with lr lrs[r].
void Collect(const Task& task, const Trained& t, const std::vector<std::string>& names,
             const std::vector<double>& lrs, int64_t seeds, MetaTestReport* report) {
  EvalResult ev = task.Evaluate(t.state);
  int64_t P = t.state.num_particles();
  for (int64_t p = 0; p < P; ++p) {
    MetaTestRun r;
    r.optimizer = names.size() == 1 ? names[0] : names[p / seeds];
    r.lr = lrs.size() == 1 ? lrs[0] : lrs[p / seeds];
    r.seed = p % seeds;
    r.final_train_loss = t.final_loss[p].item<double>();
    r.test_loss = ev.loss[p].item<double>();
    r.test_accuracy = ev.accuracy[p].item<double>();
    if (ev.hit_rate.defined()) {
      r.test_hit_rate = ev.hit_rate[p].item<double>();
      r.test_ndcg = ev.ndcg[p].item<double>();
    }
    if (ev.char_error_rate.defined()) r.test_cer = ev.char_error_rate[p].item<double>();
    r.diverged = !std::isfinite(r.final_train_loss) || !std::isfinite(r.test_loss);
    if (r.diverged) r.final_train_loss = INFINITY;
    torch::Tensor col = t.curve.select(1, p).to(torch::kFloat32).contiguous();
    r.curve.assign(col.data_ptr<float>(), col.data_ptr<float>() + col.numel());
    torch::Tensor tc = t.test_curve.select(1, p).to(torch::kFloat32).contiguous();
    r.test_curve.assign(tc.data_ptr<float>(), tc.data_ptr<float>() + tc.numel());
    torch::Tensor ta = t.test_acc_curve.select(1, p).to(torch::kFloat32).contiguous();
    r.test_acc_curve.assign(ta.data_ptr<float>(), ta.data_ptr<float>() + ta.numel());
    torch::Tensor th = t.test_hr_curve.select(1, p).to(torch::kFloat32).contiguous();
    r.test_hr_curve.assign(th.data_ptr<float>(), th.data_ptr<float>() + th.numel());
    torch::Tensor tn = t.test_ndcg_curve.select(1, p).to(torch::kFloat32).contiguous();
    r.test_ndcg_curve.assign(tn.data_ptr<float>(), tn.data_ptr<float>() + tn.numel());
    torch::Tensor tcer = t.test_cer_curve.select(1, p).to(torch::kFloat32).contiguous();
    r.test_cer_curve.assign(tcer.data_ptr<float>(), tcer.data_ptr<float>() + tcer.numel());
    report->runs.push_back(std::move(r));
  }
}

MetaTestReport EmptyReport(const Task& task, const MetaTestConfig& c) {
  MetaTestReport report;
  report.task = task.name();
  report.steps = c.steps;
  report.record_every = c.record_every;
  report.test_every = c.test_every;
  report.final_window = std::max<int64_t>(1, std::min<int64_t>(50, c.steps / 10));
  return report;
}

// The update of a learned optimizer with its options: the step-multiplier
// schedule where it has one, muP's per-layer scales where it is MUP.
// theta: [D] for every particle, or [P, D] one per particle.
UpdateFn LoptUpdate(const MetaTestConfig& c, const SmallFcLopt& lopt,
                    const v1::LearnedOptimizerSpec& spec, const torch::Tensor& theta,
                    LoptState* state, const std::vector<double>& scales) {
  const bool scaled = spec.parameterization() == v1::MUP;
  const bool scheduled = HasStepMultSchedule(spec);
  return [&c, &lopt, spec, theta, state, scales, scaled, scheduled](
             const TaskState& s, const std::vector<torch::Tensor>& g, const torch::Tensor& step,
             int64_t t) {
    if (state->empty()) *state = lopt.InitState(s.params);
    std::vector<torch::Tensor> u = lopt.Step(s.params, g, state, step, theta);
    if (scheduled)  // every particle is at step t
      ApplyStepMultSchedule(spec, StepMultFactor(spec, t, c.steps), s.params, &u);
    if (scaled) ScaleUpdates(scales, &u);
    return u;
  };
}

}  // namespace

MetaTestReport RunMetaTest(const Task& task, const MetaTestConfig& c,
                           const std::vector<NamedLopt>& lopts,
                           const std::function<void(int64_t, int64_t)>& progress) {
  MetaTestReport report = EmptyReport(task, c);
  int64_t total = c.steps * int64_t(lopts.size() + (c.adamw_cosine ? 2 : 1)), done = 0;
  auto tick = [&](int64_t n) {
    done += n;
    if (progress) progress(done, total);
  };

  // A MUP task's update scales apply to a muLO and, as MuAdam's, to AdamW.
  const std::vector<double> scales = task.UpdateScales();
  for (const NamedLopt& nl : lopts) {
    SmallFcLopt lopt(nl.spec);
    LoptState state;
    UpdateFn update = LoptUpdate(c, lopt, nl.spec, nl.theta.to(task.device()), &state, scales);
    Trained t = Train(task, c, 1, update, tick);
    Collect(task, t, {nl.name}, {0.0}, c.seeds, &report);
  }

  // Every learning rate of the grid is a replica: particle r * seeds + s.
  int64_t R = c.adamw_lrs.size();
  std::vector<double> lrs(c.adamw_lrs.begin(), c.adamw_lrs.end());
  torch::Tensor lr = torch::tensor(lrs, torch::kFloat64).repeat_interleave(c.seeds).to(task.device());
  AdamOptions opt;
  opt.weight_decay = c.adamw_weight_decay;
  for (bool cosine : {false, true}) {
    if (cosine && !c.adamw_cosine) break;
    AdamState adam;
    UpdateFn update = [&](const TaskState& s, const std::vector<torch::Tensor>& g,
                          const torch::Tensor& step, int64_t t) {
      if (adam.m.empty()) adam = InitAdamState(s.params);
      // Decoupled weight decay follows the schedule too (lr * wd, as torch's AdamW).
      std::vector<torch::Tensor> u = AdamUpdates(
          s.params, g, &adam, cosine ? lr * AdamWCosineFactor(t, c.steps) : lr, step, opt);
      ScaleUpdates(scales, &u);
      return u;
    };
    Trained t = Train(task, c, R, update, tick);
    Collect(task, t, {cosine ? "adamw_cosine" : "adamw"}, lrs, c.seeds, &report);
  }
  return report;
}

absl::StatusOr<MetaTestReport> RunThetaSweep(
    const Task& task, const MetaTestConfig& c, const v1::LearnedOptimizerSpec& spec,
    const std::vector<std::pair<std::string, torch::Tensor>>& thetas,
    const std::function<void(int64_t, int64_t)>& progress) {
  if (thetas.empty()) return absl::InvalidArgumentError("no theta to meta-validate");
  std::vector<std::string> names;
  std::vector<torch::Tensor> rows;
  for (const auto& [name, theta] : thetas) {
    if (!theta.defined() || theta.dim() != 1 || theta.numel() != thetas.front().second.numel())
      return absl::InvalidArgumentError(absl::StrCat(
          "theta '", name, "' is not a vector of the first one's size (",
          thetas.front().second.numel(), "): the thetas of a sweep share one architecture"));
    names.push_back(name);
    rows.push_back(theta.to(torch::kFloat32));
  }
  MetaTestReport report = EmptyReport(task, c);
  const int64_t R = thetas.size();
  // Particle r * seeds + s trains seed s with theta r: the seeds' initial
  // states and batches are the replicas' (Task::Init, SampleBatch).
  torch::Tensor theta = torch::stack(rows).repeat_interleave(c.seeds, 0).to(task.device());
  SmallFcLopt lopt(spec);
  LoptState state;
  UpdateFn update = LoptUpdate(c, lopt, spec, theta, &state, task.UpdateScales());
  int64_t done = 0;
  auto tick = [&](int64_t n) {
    done += n;
    if (progress) progress(done, c.steps);
  };
  Trained t = Train(task, c, R, update, tick);
  Collect(task, t, names, {0.0}, c.seeds, &report);
  return report;
}

double AdamWCosineFactor(int64_t t, int64_t total_steps) {
  v1::LearnedOptimizerSpec s;
  s.set_step_mult(1);
  s.set_min_step_mult(0.1f);
  s.set_warmup_fraction(0.05f);
  s.set_step_mult_schedule(v1::COSINE);
  return StepMultFactor(s, t, total_steps);
}

}  // namespace lopt
