#include "common/lhopt/lhopt_yardstick.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_unit.h"

namespace lopt {
namespace {

// LhoptJob draws training instances on streams 0x1b01/0x1b02 of job.seed;
// this one is the yardstick's alone.
constexpr uint64_t kStreamYardstick = 0x1b03;

double MeanOrNan(double sum, int64_t n) { return n > 0 ? sum / double(n) : NAN; }

// The run of instance `y` that its reference and the policy share.
ControlledRunConfig RunConfig(const YardstickInstance& y, int64_t particles,
                              int64_t curve_points, bool perturbed) {
  ControlledRunConfig c;
  c.groups = particles;
  c.inner_steps = y.inner_steps;
  c.decisions = y.decisions;
  c.curve_points = curve_points;
  c.task_seed = y.task_seed;
  c.random_initial_hparams = perturbed;
  return c;
}

}  // namespace

std::vector<YardstickInstance> YardstickInstances(const v1::JobSpec& job) {
  const auto& l = job.lhopt();
  const int64_t per = l.yardstick().instances_per_task();
  const uint64_t seed = l.yardstick().seed() != 0 ? l.yardstick().seed() : job.seed();
  std::vector<YardstickInstance> out;
  for (int32_t t = 0; t < l.tasks_size(); ++t) {
    for (int64_t i = 0; i < per; ++i) {
      torch::Generator g = MakeGenerator(seed, kStreamYardstick, uint64_t(t * per + i));
      out.push_back(DrawLhoptInstance(l, t, g));
    }
  }
  return out;
}

std::vector<std::string> YardstickTaskNames(const v1::JobSpec& job) {
  std::vector<std::string> names;
  const auto* oneof = v1::TaskSpec::descriptor()->oneof_decl(0);
  for (int t = 0; t < job.lhopt().tasks_size(); ++t) {
    const auto& spec = job.lhopt().tasks(t).task();
    const auto* field = spec.GetReflection()->GetOneofFieldDescriptor(spec, oneof);
    names.push_back(absl::StrCat("t", t, "_", field ? field->name() : "task"));
  }
  return names;
}

LhoptYardstick::LhoptYardstick(const v1::JobSpec& job, torch::Device device)
    : job_(job),
      device_(device),
      every_(job.lhopt().yardstick().every()),
      particles_(job.lhopt().yardstick().particles()),
      perturbed_(job.lhopt().yardstick().perturbed_start()) {
  if (every_ > 0) instances_ = YardstickInstances(job);
}

bool YardstickDue(const v1::LhoptSpec& l, int64_t version) {
  const int64_t every = l.yardstick().every();
  if (every <= 0) return false;
  return version % every == 0 || version == l.iterations();
}

bool LhoptYardstick::Due(int64_t version) const { return YardstickDue(job_.lhopt(), version); }

absl::StatusOr<const Task*> LhoptYardstick::GetTask(size_t i) {
  auto it = tasks_.find(i);
  if (it != tasks_.end()) return it->second.get();
  auto task = MakeTask(instances_[i].task, instances_[i].task_seed, device_);
  if (!task.ok()) return task.status();
  return (tasks_[i] = std::move(*task)).get();
}

absl::StatusOr<const LhoptYardstick::Reference*> LhoptYardstick::GetReference(size_t i) {
  auto it = references_.find(i);
  if (it != references_.end()) return &it->second;
  auto task = GetTask(i);
  if (!task.ok()) return task.status();
  ControlledRunConfig c =
      RunConfig(instances_[i], particles_, job_.lhopt().curve_points(), perturbed_);
  c.decisions = 0;  // no controller: the initial hyperparameters throughout
  auto run = RunControlled(**task, c, nullptr, nullptr, nullptr, nullptr);
  if (!run.ok()) return run.status();
  ++reference_runs_;
  reference_particle_steps_ += instances_[i].inner_steps * particles_;
  Reference r;
  r.curve = run->curve;
  r.fits = FitCurves(run->curve_steps, run->curve, (*task)->MaxMetaLoss());
  return &(references_[i] = std::move(r));
}

absl::StatusOr<YardstickResult> LhoptYardstick::Evaluate(LhoptPolicyImpl& policy,
                                                         const EwmaNormalizer& normalizer,
                                                         int64_t iteration) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t T = job_.lhopt().tasks_size();
  const double clip = job_.lhopt().reward_clip();
  YardstickResult out;
  out.iteration = iteration;
  const int64_t reference_steps_before = reference_particle_steps_;
  std::vector<double> score_sum(T, 0), loss_sum(T, 0), ref_sum(T, 0);
  std::vector<int64_t> score_n(T, 0), loss_n(T, 0), ref_n(T, 0);
  double total = 0;
  for (size_t i = 0; i < instances_.size(); ++i) {
    const YardstickInstance& y = instances_[i];
    auto ref = GetReference(i);
    if (!ref.ok()) return ref.status();
    auto task = GetTask(i);
    if (!task.ok()) return task.status();
    ControlledRunConfig c = RunConfig(y, particles_, job_.lhopt().curve_points(), perturbed_);
    c.mode = ActMode::kGreedy;
    c.reward_clip = clip;
    auto run = RunControlled(**task, c, &policy, &normalizer, nullptr, nullptr);
    if (!run.ok()) return run.status();
    out.inner_particle_steps += y.inner_steps * particles_;
    YardstickRun yr;
    yr.curve_steps = run->curve_steps;
    yr.curve = run->curve;
    yr.reference_curve = (*ref)->curve;
    yr.reference_fits = (*ref)->fits;
    yr.scores = torch::zeros({particles_}, torch::kFloat64);
    std::vector<double> t(run->curve_steps.begin(), run->curve_steps.end());
    torch::Tensor lc = run->curve.to(torch::kFloat64).contiguous();
    torch::Tensor rc = yr.reference_curve.to(torch::kFloat64).contiguous();
    const int64_t C = lc.size(0);
    for (int64_t p = 0; p < particles_; ++p) {
      std::vector<double> loss(C);
      for (int64_t k = 0; k < C; ++k) loss[k] = lc[k][p].item<double>();
      const double s = RunReward(yr.reference_fits[p], t, loss, clip);
      yr.scores[p] = s;
      total += s;
      score_sum[y.task_index] += s;
      ++score_n[y.task_index];
      ++out.runs;
      const double last = loss[C - 1], ref_last = rc[C - 1][p].item<double>();
      if (std::isfinite(last)) {
        loss_sum[y.task_index] += last;
        ++loss_n[y.task_index];
      } else {
        ++out.diverged;
      }
      if (std::isfinite(ref_last)) {
        ref_sum[y.task_index] += ref_last;
        ++ref_n[y.task_index];
      }
    }
    out.instances.push_back(std::move(yr));
  }
  out.score = MeanOrNan(total, out.runs);
  for (int64_t k = 0; k < T; ++k) {
    out.task_score.push_back(MeanOrNan(score_sum[k], score_n[k]));
    out.task_final_loss.push_back(MeanOrNan(loss_sum[k], loss_n[k]));
    out.task_reference_final_loss.push_back(MeanOrNan(ref_sum[k], ref_n[k]));
  }
  out.inner_particle_steps += reference_particle_steps_ - reference_steps_before;
  out.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

void EncodeYardstickResult(const YardstickResult& r, v1::YardstickResultInfo* info) {
  info->Clear();
  info->set_iteration(r.iteration);
  info->set_score(r.score);
  for (double v : r.task_score) info->add_task_score(v);
  for (double v : r.task_final_loss) info->add_task_final_loss(v);
  for (double v : r.task_reference_final_loss) info->add_task_reference_final_loss(v);
  info->set_runs(r.runs);
  info->set_diverged(r.diverged);
  info->set_wall_seconds(r.wall_seconds);
}

absl::StatusOr<YardstickResult> DecodeYardstickResult(const v1::YardstickResultInfo& info,
                                                      const v1::JobSpec& job) {
  const int n = job.lhopt().tasks_size();
  if (info.task_score_size() != n || info.task_final_loss_size() != n ||
      info.task_reference_final_loss_size() != n)
    return absl::InvalidArgumentError(absl::StrCat(
        "a yardstick result needs one score and two final losses for each of the job's ", n,
        " lhopt.tasks entries; it has ", info.task_score_size(), ", ",
        info.task_final_loss_size(), " and ", info.task_reference_final_loss_size()));
  if (info.runs() < 0 || info.diverged() < 0 || info.diverged() > info.runs())
    return absl::InvalidArgumentError(absl::StrCat("a yardstick result with ", info.diverged(),
                                                   " diverged runs of ", info.runs()));
  YardstickResult r;
  r.iteration = info.iteration();
  r.score = info.score();
  r.task_score.assign(info.task_score().begin(), info.task_score().end());
  r.task_final_loss.assign(info.task_final_loss().begin(), info.task_final_loss().end());
  r.task_reference_final_loss.assign(info.task_reference_final_loss().begin(),
                                     info.task_reference_final_loss().end());
  r.runs = info.runs();
  r.diverged = info.diverged();
  r.wall_seconds = info.wall_seconds();
  return r;
}

absl::StatusOr<YardstickResult> LhoptYardstick::EvaluateShipped(const NamedTensors& shipped,
                                                                int64_t iteration) {
  LhoptPolicy policy(LhoptPolicyOptionsFor(job_));
  if (absl::Status s = SetPolicyWeights(*policy, shipped, "policy/"); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("yardstick: ", s.message()));
  EwmaNormalizer norm(kNumLhoptFeatures);
  if (absl::Status s = SetNormalizer(norm, shipped, "normalizer/"); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("yardstick: ", s.message()));
  return Evaluate(*policy, norm, iteration);
}

std::string YardstickCsvHeader(const v1::JobSpec& job) {
  std::string h = "iteration,score";
  const auto names = YardstickTaskNames(job);
  for (const auto& n : names) absl::StrAppend(&h, ",score_", n);
  for (const auto& n : names) absl::StrAppend(&h, ",final_loss_", n);
  for (const auto& n : names) absl::StrAppend(&h, ",reference_final_loss_", n);
  return h + ",runs,diverged,wall_s\n";
}

std::string YardstickCsvRow(const YardstickResult& r) {
  std::string row = absl::StrFormat("%d,%.6g", r.iteration, r.score);
  for (double v : r.task_score) absl::StrAppend(&row, absl::StrFormat(",%.6g", v));
  for (double v : r.task_final_loss) absl::StrAppend(&row, absl::StrFormat(",%.6g", v));
  for (double v : r.task_reference_final_loss) absl::StrAppend(&row, absl::StrFormat(",%.6g", v));
  return row + absl::StrFormat(",%d,%d,%.1f\n", r.runs, r.diverged, r.wall_seconds);
}

}  // namespace lopt
