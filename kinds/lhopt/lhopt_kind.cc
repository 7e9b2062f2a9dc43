#include "kinds/lhopt/lhopt_kind.h"

#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"
#include "common/util/files.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "kinds/lhopt/lhopt_spec.h"

namespace lopt {
namespace {

class Lhopt : public JobKind {
 public:
  absl::string_view name() const override { return "lhopt"; }
  absl::string_view section() const override { return "lhopt"; }
  absl::Status ValidateSpec(const v1::JobSpec& spec, JobUse use) const override {
    return ValidateLhoptSpec(spec, use);
  }
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

  // reward_start/_end: summary.json's (LhoptCore::SummaryFields).
  LocalTrainReport ReportLocalRun(const v1::JobSpec&,
                                  const LocalRunSummary& summary) const override {
    return FormatLocalReport(
        summary, {"iterations", "PPO iterations", "the policy of that iteration",
                  absl::StrFormat("mean reward %.4f -> %.4f\n", summary.Number("reward_start"),
                                  summary.Number("reward_end")),
                  "controller"});
  }
};

}  // namespace

const JobKind& LhoptKind() {
  static const Lhopt* kind = new Lhopt();
  return *kind;
}

}  // namespace lopt
