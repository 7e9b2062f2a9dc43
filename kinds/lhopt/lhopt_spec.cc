#include "kinds/lhopt/lhopt_spec.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/spec/spec_checks.h"

namespace lopt {

// The checks a validation is made of (common/spec/spec_checks.h).
using namespace spec;  // NOLINT(build/namespaces)

absl::Status ValidateLhoptSpec(const v1::JobSpec& job, JobUse) {
  if (job.elo().tasks_size() > 0)
    return Invalid("elo.tasks is for ELO jobs; an LHOPT job names lhopt.tasks");
  const v1::LhoptSpec& l = job.lhopt();
  if (l.tasks_size() == 0)
    return Invalid("lhopt.tasks must name at least one task of the mixture");
  double total_weight = 0;
  for (int i = 0; i < l.tasks_size(); ++i) {
    const auto& c = l.tasks(i);
    const std::string at = absl::StrCat("lhopt.tasks[", i, "]");
    if (!c.has_task()) return Invalid(absl::StrCat(at, ".task must be set"));
    LOPT_CHECK(ValidateTask(c.task(), at + ".task"));
    LOPT_CHECK(NonNegative(at + ".weight", c.weight()));
    total_weight += c.weight();
    if (c.random_activation() && !c.task().has_fmnist_mlp() && !c.task().has_fmnist_cnn())
      return Invalid(absl::StrCat(at, ".random_activation applies to fmnist_mlp and fmnist_cnn only"));
  }
  if (!(total_weight > 0)) return Invalid("lhopt.tasks[*].weight must not all be 0");
  LOPT_CHECK(InRange("lhopt.min_inner_steps", l.min_inner_steps(), 2, 1 << 24));
  if (l.max_inner_steps() < l.min_inner_steps())
    return Invalid(absl::StrCat("lhopt.max_inner_steps must be >= lhopt.min_inner_steps (",
                                l.min_inner_steps(), "), got ", l.max_inner_steps()));
  LOPT_CHECK(InRange("lhopt.min_decisions", l.min_decisions(), 1, 1 << 20));
  if (l.max_decisions() < l.min_decisions())
    return Invalid(absl::StrCat("lhopt.max_decisions must be >= lhopt.min_decisions (",
                                l.min_decisions(), "), got ", l.max_decisions()));
  if (l.max_decisions() > l.min_inner_steps())
    return Invalid(absl::StrCat("lhopt.max_decisions must be <= lhopt.min_inner_steps (",
                                l.min_inner_steps(), "): at most one decision an inner step, got ",
                                l.max_decisions()));
  LOPT_CHECK(InRange("lhopt.particles", l.particles(), 1, 4096));
  LOPT_CHECK(InRange("lhopt.episodes_per_iteration", l.episodes_per_iteration(), 1, 1 << 20));
  if (l.episodes_per_iteration() % l.particles() != 0)
    return Invalid(absl::StrCat("lhopt.episodes_per_iteration must be a multiple of lhopt.particles (",
                                l.particles(), "), got ", l.episodes_per_iteration()));
  const auto& p = l.ppo();
  LOPT_CHECK(OpenUnit("lhopt.ppo.clip", p.clip()));
  LOPT_CHECK(NonNegative("lhopt.ppo.value_coef", p.value_coef()));
  LOPT_CHECK(NonNegative("lhopt.ppo.entropy_coef", p.entropy_coef()));
  LOPT_CHECK(Positive("lhopt.ppo.lr", p.lr()));
  LOPT_CHECK(Positive("lhopt.ppo.max_grad_norm", p.max_grad_norm()));
  LOPT_CHECK(InRange("lhopt.ppo.gamma", p.gamma(), 0, 1));
  LOPT_CHECK(InRange("lhopt.ppo.gae_lambda", p.gae_lambda(), 0, 1));
  LOPT_CHECK(InRange("lhopt.ppo.epochs", p.epochs(), 1, 1000));
  LOPT_CHECK(InRange("lhopt.ppo.max_sample_reuse", p.max_sample_reuse(), 1, 1000));
  LOPT_CHECK(InRange("lhopt.ppo.minibatch_episodes", p.minibatch_episodes(), 1, 1 << 20));
  LOPT_CHECK(InRange("lhopt.ppo.max_staleness", p.max_staleness(), 0, 1 << 20));
  LOPT_CHECK(InRange("lhopt.baseline_polyak", l.baseline_polyak(), 0, 1));
  LOPT_CHECK(Positive("lhopt.reward_clip", l.reward_clip()));
  LOPT_CHECK(InRange("lhopt.iterations", l.iterations(), 1, 1 << 30));
  LOPT_CHECK(NonNegative("lhopt.checkpoint_every", l.checkpoint_every()));
  LOPT_CHECK(InRange("lhopt.hidden_size", l.hidden_size(), 1, 4096));
  LOPT_CHECK(InRange("lhopt.curve_points", l.curve_points(), 3, 1 << 16));
  if (l.curve_points() > l.min_inner_steps())
    return Invalid(absl::StrCat("lhopt.curve_points must be <= lhopt.min_inner_steps (",
                                l.min_inner_steps(), "), got ", l.curve_points()));
  LOPT_CHECK(InRange("lhopt.baseline_refresh_iterations", l.baseline_refresh_iterations(), 1, 1 << 30));
  LOPT_CHECK(InRange("lhopt.instances_per_task", l.instances_per_task(), 1, 1 << 20));
  LOPT_CHECK(InRange("lhopt.schedule_decisions", l.schedule_decisions(), 1, 1 << 20));
  const auto& y = l.yardstick();
  LOPT_CHECK(InRange("lhopt.yardstick.every", y.every(), 0, 100000));
  LOPT_CHECK(InRange("lhopt.yardstick.instances_per_task", y.instances_per_task(), 1, 1 << 10));
  LOPT_CHECK(InRange("lhopt.yardstick.particles", y.particles(), 1, 4096));
  return absl::OkStatus();
}

}  // namespace lopt
