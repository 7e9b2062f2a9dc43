#include "kinds/elo/elo_spec.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/spec/spec_checks.h"

namespace lopt {

// The checks a validation is made of (common/spec/spec_checks.h).
using namespace spec;  // NOLINT(build/namespaces)

absl::Status ValidateEloSpec(const v1::JobSpec& job, JobUse) {
  const auto& lo = job.lopt();
  // A muLO learns updates that the task's muP scaling will divide; meta-
  // training it on STANDARD tasks (or the reverse) trains something else.
  auto check_param = [&](const v1::TaskSpec& t, const std::string& at) -> absl::Status {
    if (t.parameterization() != lo.parameterization())
      return Invalid(absl::StrCat(at, ".parameterization (",
                                  v1::Parameterization_Name(t.parameterization()),
                                  ") must match lopt.parameterization (",
                                  v1::Parameterization_Name(lo.parameterization()), ")"));
    return absl::OkStatus();
  };
  LOPT_CHECK(check_param(job.task(), "task"));
  for (int i = 0; i < job.elo().tasks_size(); ++i)
    LOPT_CHECK(check_param(job.elo().tasks(i).task(), absl::StrCat("elo.tasks[", i, "].task")));

  const auto& pes = job.pes();
  LOPT_CHECK(InRange("pes.num_tasks", pes.num_tasks(), 1, 1 << 16));
  if (pes.truncation_length() <= 0)
    return Invalid(absl::StrCat("pes.truncation_length must be > 0, got ",
                                pes.truncation_length()));
  LOPT_CHECK(Positive("pes.sigma", pes.sigma()));
  if (pes.min_unroll_length() < pes.truncation_length())
    return Invalid(absl::StrCat(
        "pes.min_unroll_length must be >= pes.truncation_length (",
        pes.truncation_length(), "), got ", pes.min_unroll_length()));
  if (pes.max_unroll_length() < pes.min_unroll_length())
    return Invalid(absl::StrCat(
        "pes.max_unroll_length must be >= pes.min_unroll_length (",
        pes.min_unroll_length(), "), got ", pes.max_unroll_length()));
  if (pes.unroll_length_distribution() ==
      v1::UNROLL_LENGTH_DISTRIBUTION_UNSPECIFIED)
    return Invalid("pes.unroll_length_distribution must be LOG_UNIFORM or UNIFORM");
  if (pes.curriculum_final_max_unroll_length() != 0 &&
      (pes.curriculum_final_max_unroll_length() < pes.max_unroll_length() ||
       pes.curriculum_final_max_unroll_length() > (1 << 24)))
    return Invalid(absl::StrCat(
        "pes.curriculum_final_max_unroll_length must be 0 (no curriculum) or in [",
        "pes.max_unroll_length (", pes.max_unroll_length(), "), ", 1 << 24, "], got ",
        pes.curriculum_final_max_unroll_length()));

  const auto& mix = job.elo().tasks();
  if (!mix.empty()) {
    if (mix.size() > pes.num_tasks())
      return Invalid(absl::StrCat("elo.tasks has ", mix.size(),
                                  " entries but pes.num_tasks is ", pes.num_tasks(),
                                  ": every entry needs at least one PES task"));
    double total = 0;
    for (int i = 0; i < mix.size(); ++i) {
      const std::string at = absl::StrCat("elo.tasks[", i, "]");
      if (!mix[i].has_task()) return Invalid(absl::StrCat(at, ".task must be set"));
      LOPT_CHECK(ValidateTask(mix[i].task(), at + ".task"));
      LOPT_CHECK(Positive(at + ".weight", mix[i].weight()));
      total += mix[i].weight();
    }
    if (!std::isfinite(total)) return Invalid("elo.tasks weights must sum to a finite number");
  }

  const auto& buf = job.elo().buffer();
  if (buf.enabled()) {
    LOPT_CHECK(InRange("elo.buffer.capacity", buf.capacity(), 1, 1 << 20));
    LOPT_CHECK(InRange("elo.buffer.fresh_start_probability",
                       buf.fresh_start_probability(), 0, 1));
  }
  const auto& bc = job.elo().behavior_cloning();
  if (bc.enabled()) {
    LOPT_CHECK(Positive("elo.behavior_cloning.teacher_lr", bc.teacher_lr()));
    LOPT_CHECK(OpenUnit("elo.behavior_cloning.teacher_beta1", bc.teacher_beta1()));
    LOPT_CHECK(OpenUnit("elo.behavior_cloning.teacher_beta2", bc.teacher_beta2()));
    LOPT_CHECK(Positive("elo.behavior_cloning.teacher_eps", bc.teacher_eps()));
    LOPT_CHECK(Positive("elo.behavior_cloning.alpha_ramp_fraction", bc.alpha_ramp_fraction()));
    LOPT_CHECK(InRange("elo.behavior_cloning.alpha_ramp_fraction", bc.alpha_ramp_fraction(), 0, 1));
  }

  const auto& o = job.outer();
  LOPT_CHECK(Positive("outer.lr", o.lr()));
  LOPT_CHECK(InRange("outer.beta1", o.beta1(), 0, 0.999999));
  LOPT_CHECK(InRange("outer.beta2", o.beta2(), 0, 0.999999));
  LOPT_CHECK(Positive("outer.eps", o.eps()));
  LOPT_CHECK(NonNegative("outer.weight_decay", o.weight_decay()));
  LOPT_CHECK(NonNegative("outer.warmup_steps", o.warmup_steps()));
  if (o.schedule() == v1::LR_SCHEDULE_UNSPECIFIED)
    return Invalid("outer.schedule must be CONSTANT or COSINE");
  LOPT_CHECK(InRange("outer.min_lr_ratio", o.min_lr_ratio(), 0, 1));
  LOPT_CHECK(Positive("outer.grad_clip_value", o.grad_clip_value()));
  return absl::OkStatus();
}

}  // namespace lopt
