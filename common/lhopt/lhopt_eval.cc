#include "common/lhopt/lhopt_eval.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "common/lhopt/lhopt_schedule.h"

namespace lopt {

CiaoHyperparameters AdamwAsCiao(double lr, double weight_decay) {
  CiaoHyperparameters h;
  h.lr = lr;
  h.one_minus_beta1 = 0.1;
  h.one_minus_beta2 = 0.001;
  h.eps = 1e-8;
  h.weight_decay = weight_decay;
  h.clip_fraction = 1e30;  // |g| never exceeds its rolling max: no clipping
  return h;
}

namespace {

HparamEvalArm ArmOf(const std::string& name, double lr, const ControlledRunResult& r,
                    int64_t replica, int64_t seeds) {
  HparamEvalArm a;
  a.name = name;
  a.lr = lr;
  auto cols = [&](const torch::Tensor& t) { return t.narrow(-1, replica * seeds, seeds).clone(); };
  a.final_train_loss = cols(r.final_train_loss);
  a.test_loss = cols(r.test_loss);
  a.test_accuracy = cols(r.test_accuracy);
  if (r.test_hit_rate.defined()) {
    a.test_hit_rate = cols(r.test_hit_rate);
    a.test_ndcg = cols(r.test_ndcg);
  }
  if (r.test_cer.defined()) a.test_cer = cols(r.test_cer);
  a.train_curve = cols(r.train_curve);
  return a;
}

}  // namespace

absl::StatusOr<HparamEvalReport> RunHparamEval(const Task& task, const HparamEvalConfig& c,
                                               const std::vector<NamedController>& controllers,
                                               const v1::LhoptSchedule* schedule) {
  HparamEvalReport report;
  report.task = task.name();
  report.steps = c.steps;
  report.record_every = c.record_every;
  const int64_t S = c.seeds;

  for (const auto& nc : controllers) {
    ControlledRunConfig rc;
    rc.groups = S;
    rc.inner_steps = c.steps;
    rc.decisions = std::min<int64_t>(c.controller_decisions, c.steps - 1);
    rc.record_every = c.record_every;
    rc.task_seed = c.seed;
    rc.mode = ActMode::kGreedy;
    rc.random_initial_hparams = false;
    auto run = RunControlled(task, rc, nc.policy, nc.normalizer, nullptr, nullptr);
    if (!run.ok()) return run.status();
    report.arms.push_back(ArmOf(nc.name, 0, *run, 0, S));
  }

  // Fixed arms, replica r of one batched run: [schedule, schedule_peak x
  // grid], ciao_default, adamw x grid, adamw_cosine x grid.
  std::vector<std::pair<std::string, double>> arms;
  if (schedule) {
    arms.push_back({"schedule", 0});
    for (float lr : c.adamw_lrs) arms.push_back({"schedule_peak", lr});
  }
  arms.push_back({"ciao_default", 0});
  for (float lr : c.adamw_lrs) arms.push_back({"adamw", lr});
  for (float lr : c.adamw_lrs) arms.push_back({"adamw_cosine", lr});
  // schedule_peak replays the schedule's lr relative to its peak, times the
  // arm's grid lr (as adamw_cosine's grid lr is its peak).
  double schedule_peak_lr = 0;
  if (schedule)
    for (const auto& p : schedule->points()) schedule_peak_lr = std::max(schedule_peak_lr, p.lr());
  const int64_t R = int64_t(arms.size()), P = R * S;
  // Constant parts, and the cosine factor's mask.
  std::vector<CiaoHyperparameters> per_replica;
  std::vector<double> cosine(R, 0.0);
  for (int64_t r = 0; r < R; ++r) {
    const auto& [name, lr] = arms[r];
    if (name == "adamw" || name == "adamw_cosine") {
      per_replica.push_back(AdamwAsCiao(lr, c.adamw_weight_decay));
      cosine[r] = name == "adamw_cosine";
    } else {
      per_replica.push_back(CiaoHyperparameters());
    }
  }
  auto column = [&](auto field) {
    torch::Tensor t = torch::empty({P}, torch::kFloat64);
    for (int64_t r = 0; r < R; ++r) t.narrow(0, r * S, S).fill_(field(per_replica[r]));
    return t;
  };
  CiaoHparamTensors base{column([](const CiaoHyperparameters& h) { return h.lr; }),
                         column([](const CiaoHyperparameters& h) { return h.one_minus_beta1; }),
                         column([](const CiaoHyperparameters& h) { return h.one_minus_beta2; }),
                         column([](const CiaoHyperparameters& h) { return h.eps; }),
                         column([](const CiaoHyperparameters& h) { return h.weight_decay; }),
                         column([](const CiaoHyperparameters& h) { return h.clip_fraction; })};
  torch::Tensor cos_mask = torch::zeros({P}, torch::kFloat64);
  for (int64_t r = 0; r < R; ++r) cos_mask.narrow(0, r * S, S).fill_(cosine[r]);
  const int64_t steps = c.steps;
  ControlledRunConfig rc;
  rc.groups = S;
  rc.replicas = R;
  rc.inner_steps = steps;
  rc.record_every = c.record_every;
  rc.task_seed = c.seed;
  rc.random_initial_hparams = false;
  rc.schedule = [&](int64_t step) {
    CiaoHparamTensors h = base;
    const double progress = double(step) / double(steps);
    if (schedule) {
      const CiaoHyperparameters s = ScheduleAt(*schedule, progress);
      for (auto* t : {&h.lr, &h.one_minus_beta1, &h.one_minus_beta2, &h.eps, &h.weight_decay,
                      &h.clip_fraction})
        *t = t->clone();
      for (int64_t r = 0; r < R; ++r) {
        const bool absolute = arms[r].first == "schedule";
        if (!absolute && arms[r].first != "schedule_peak") continue;
        auto set = [&](torch::Tensor& t, double v) { t.narrow(0, r * S, S).fill_(v); };
        set(h.lr, absolute ? s.lr : arms[r].second * s.lr / schedule_peak_lr);
        set(h.one_minus_beta1, s.one_minus_beta1);
        set(h.one_minus_beta2, s.one_minus_beta2);
        set(h.eps, s.eps);
        set(h.weight_decay, s.weight_decay);
        set(h.clip_fraction, s.clip_fraction);
      }
    }
    const double f = 0.5 * (1 + std::cos(M_PI * progress));
    h.lr = h.lr * (1 - cos_mask + cos_mask * f);
    return h;
  };
  auto run = RunControlled(task, rc, nullptr, nullptr, nullptr, nullptr);
  if (!run.ok()) return run.status();
  for (int64_t r = 0; r < R; ++r) report.arms.push_back(ArmOf(arms[r].first, arms[r].second, *run, r, S));
  return report;
}

absl::StatusOr<v1::LhoptSchedule> RecordSchedule(const Task& task, LhoptPolicyImpl& policy,
                                                 const EwmaNormalizer& normalizer, int64_t steps,
                                                 int64_t decisions, uint64_t seed,
                                                 ControlledRunResult* run_out) {
  ControlledRunConfig rc;
  rc.groups = 1;
  rc.inner_steps = steps;
  rc.decisions = std::min<int64_t>(decisions, steps - 1);
  rc.task_seed = seed;
  rc.mode = ActMode::kGreedy;
  rc.random_initial_hparams = false;
  auto run = RunControlled(task, rc, &policy, &normalizer, nullptr, nullptr);
  if (!run.ok()) return run.status();
  v1::LhoptSchedule s;
  s.set_format_version(kScheduleFormatVersion);
  s.set_task(task.name());
  s.set_inner_steps(steps);
  *s.add_points() = SchedulePoint(0.0, rc.initial_hparams);
  torch::Tensor hp = run->hparams.select(1, 0).contiguous();  // [D, 6]
  for (size_t d = 0; d < run->decision_steps.size(); ++d) {
    CiaoHyperparameters h;
    h.lr = hp[d][0].item<double>();
    h.one_minus_beta1 = hp[d][1].item<double>();
    h.one_minus_beta2 = hp[d][2].item<double>();
    h.eps = hp[d][3].item<double>();
    h.weight_decay = hp[d][4].item<double>();
    h.clip_fraction = hp[d][5].item<double>();
    *s.add_points() = SchedulePoint(double(run->decision_steps[d]) / double(steps), h);
  }
  if (run_out) *run_out = std::move(*run);
  return s;
}

}  // namespace lopt
