#include "kinds/lhopt/lhopt_kind.h"

#include "absl/strings/str_format.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "kinds/lhopt/lhopt_local.h"

namespace lopt {
namespace {

class Lhopt : public JobKind {
 public:
  absl::string_view name() const override { return "lhopt"; }
  absl::string_view section() const override { return "lhopt"; }
  std::vector<v1::Algorithm> unit_kinds() const override {
    return {v1::LHOPT_PPO, v1::LHOPT_YARDSTICK};
  }
  std::unique_ptr<JobCore> MakeCore(const v1::JobSpec& spec,
                                    const JobCoreOptions&) const override {
    return MakeLhoptCore(spec);
  }
  std::unique_ptr<UnitRunner> MakeRunner(v1::Algorithm unit_kind,
                                         const UnitRunnerEnv& env) const override {
    switch (unit_kind) {
      case v1::LHOPT_PPO: return MakeLhoptPpoRunner(env);
      case v1::LHOPT_YARDSTICK: return MakeLhoptYardstickRunner();
      default: return nullptr;
    }
  }
  bool PlotMetrics(const v1::JobSpec& spec, const std::string& dir) const override {
    return PlotLhoptRewards(dir, spec.name());  // rewards.png
  }

  std::string DescribeLocalRun(const v1::JobSpec& spec, const std::string& out_dir) const override {
    const auto& l = spec.lhopt();
    return absl::StrFormat(
        "lopt train: LHOPT job '%s', %d PPO iterations x %d episodes (%d tasks in the mixture, "
        "%d-%d inner steps, %d-%d decisions), out %s\n",
        spec.name(), l.iterations(), l.episodes_per_iteration(), l.tasks_size(),
        l.min_inner_steps(), l.max_inner_steps(), l.min_decisions(), l.max_decisions(), out_dir);
  }
  absl::string_view update_name() const override { return "PPO iteration"; }
  absl::string_view updates_name() const override { return "iterations"; }

  absl::StatusOr<LocalTrainReport> TrainLocal(const v1::JobSpec& spec,
                                              const LocalTrainOptions& options) const override {
    auto summary = RunLocalLhoptTraining(spec, options);
    if (!summary.ok()) return summary.status();
    LocalTrainReport r;
    r.stopped_early = summary->stopped_early;
    r.trained_file = summary->controller_path;
    r.eval_flag = "controller";
    if (summary->stopped_early) {
      r.message = absl::StrFormat(
          "stopped at iteration %d of %d, checkpointed in %s (this run: %d iterations, %s); %s "
          "holds the policy of that iteration; run the same command to resume\n",
          summary->iterations, summary->total_iterations, summary->checkpoint_path,
          summary->iterations_this_run, FormatDuration(summary->wall_seconds),
          summary->controller_path);
      return r;
    }
    std::string resumed;
    if (summary->resumed_from > 0)
      resumed = absl::StrFormat(" after resuming at iteration %d; %d of %d in %s in all",
                                summary->resumed_from, summary->iterations,
                                summary->total_iterations,
                                FormatDuration(summary->total_wall_seconds));
    r.message = absl::StrFormat(
        "trained %d PPO iterations in %s (%.0f inner particle-steps/s)%s\n"
        "mean reward %.4f -> %.4f\ncontroller: %s\n",
        summary->iterations_this_run, FormatDuration(summary->wall_seconds),
        summary->inner_particle_steps_per_second, resumed, summary->reward_start,
        summary->reward_end, summary->controller_path);
    return r;
  }
};

}  // namespace

const JobKind& LhoptKind() {
  static const Lhopt* kind = new Lhopt();
  return *kind;
}

}  // namespace lopt
