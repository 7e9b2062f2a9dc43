#include "kinds/lhopt/lhopt_kind.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"
#include "common/util/files.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"

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
      case v1::LHOPT_YARDSTICK: return MakeLhoptYardstickRunner(env);
      default: return nullptr;
    }
  }
  // rewards.png, and yardstick.png where the job has a yardstick.
  bool PlotMetrics(const v1::JobSpec& spec, const std::string& dir) const override {
    const bool plotted = PlotLhoptRewards(dir, spec.name());
    if (spec.lhopt().yardstick().every() > 0 && FileExists(dir + "/yardstick.csv")) {
      std::string gp = absl::StrCat(
          "set terminal pngcairo size 1000,600 noenhanced\nset output '", dir,
          "/yardstick.png'\nset datafile separator ','\nset key top left\n",
          "set title 'LHOPT ", spec.name(), ": fixed yardstick (greedy policy, held-out instances)'\n",
          "set xlabel 'PPO iteration'\nset ylabel 'log speed-up over CIAO constant (reference fit)'\n",
          "plot '", dir, "/yardstick.csv' using 1:2 with linespoints lw 3 title 'mean'");
      for (int t = 0; t < spec.lhopt().tasks_size(); ++t)
        absl::StrAppend(&gp, ", '' using 1:", 3 + t, " with linespoints title columnheader(", 3 + t, ")");
      RunGnuplot(dir + "/yardstick.gp", gp + "\n");
    }
    return plotted;
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

  absl::string_view step_name() const override { return "iteration"; }

  LocalTrainReport ReportLocalRun(const v1::JobSpec&,
                                  const LocalRunSummary& summary) const override {
    LocalTrainReport r;
    r.stopped_early = summary.stopped_early;
    r.trained_file = summary.trained_file;
    r.eval_flag = "controller";
    if (summary.stopped_early) {
      r.message = absl::StrFormat(
          "stopped at iteration %d of %d, checkpointed in %s (this run: %d iterations, %s); %s "
          "holds the policy of that iteration; run the same command to resume\n",
          summary.steps, summary.total, summary.checkpoint_path, summary.steps_this_run,
          FormatDuration(summary.wall_seconds), summary.trained_file);
      return r;
    }
    std::string resumed;
    if (summary.resumed_from > 0)
      resumed = absl::StrFormat(" after resuming at iteration %d; %d of %d in %s in all",
                                summary.resumed_from, summary.steps, summary.total,
                                FormatDuration(summary.total_wall_seconds));
    // reward_start/_end: summary.json's (LhoptCore::SummaryFields).
    r.message = absl::StrFormat(
        "trained %d PPO iterations in %s (%.0f inner particle-steps/s)%s\n"
        "mean reward %.4f -> %.4f\ncontroller: %s\n",
        summary.steps_this_run, FormatDuration(summary.wall_seconds),
        summary.particle_steps_per_second, resumed, summary.Number("reward_start"), summary.Number("reward_end"),
        summary.trained_file);
    return r;
  }
};

}  // namespace

const JobKind& LhoptKind() {
  static const Lhopt* kind = new Lhopt();
  return *kind;
}

}  // namespace lopt
