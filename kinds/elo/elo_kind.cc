#include "kinds/elo/elo_kind.h"

#include "absl/strings/str_format.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "kinds/elo/elo_local.h"

namespace lopt {
namespace {

class Elo : public JobKind {
 public:
  absl::string_view name() const override { return "elo"; }
  absl::string_view section() const override { return ""; }
  std::vector<v1::Algorithm> unit_kinds() const override {
    return {v1::ELO_PES, v1::ELO_META_TEST};
  }
  std::unique_ptr<JobCore> MakeCore(const v1::JobSpec& spec,
                                    const JobCoreOptions& options) const override {
    return MakeEloCore(spec, options);
  }
  std::unique_ptr<UnitRunner> MakeRunner(v1::Algorithm unit_kind,
                                         const UnitRunnerEnv& env) const override {
    switch (unit_kind) {
      case v1::ELO_PES: return MakeEloPesRunner(env);
      case v1::ELO_META_TEST: return MakeEloMetaTestRunner(env);
      default: return nullptr;
    }
  }
  bool PlotMetrics(const v1::JobSpec& spec, const std::string& dir) const override {
    return PlotEloTraining(dir, spec.name());  // training.png
  }

  std::string DescribeLocalRun(const v1::JobSpec& spec, const std::string& out_dir) const override {
    return absl::StrFormat(
        "lopt train: job '%s', %d outer steps, %d tasks x 2 particles, truncation %d, out %s\n",
        spec.name(), spec.budget().outer_steps(), spec.pes().num_tasks(),
        spec.pes().truncation_length(), out_dir);
  }
  absl::string_view update_name() const override { return "outer step"; }
  absl::string_view updates_name() const override { return "steps"; }

  absl::StatusOr<LocalTrainReport> TrainLocal(const v1::JobSpec& spec,
                                              const LocalTrainOptions& options) const override {
    auto summary = RunEloLocalTraining(spec, options);
    if (!summary.ok()) return summary.status();
    LocalTrainReport r;
    r.stopped_early = summary->stopped_early;
    r.trained_file = summary->optimizer_path;
    r.eval_flag = "optimizer";
    if (summary->stopped_early) {
      r.message = absl::StrFormat(
          "stopped at outer step %d of %d, checkpointed in %s (this run: %d outer steps, %s); %s "
          "holds theta of that step; run the same command to resume\n",
          summary->outer_steps, summary->total_steps, summary->checkpoint_path,
          summary->outer_steps_this_run, FormatDuration(summary->wall_seconds),
          summary->optimizer_path);
      // Measured: ELO stopped at alpha 0.26 (621 of 2,400 steps) leaves a
      // network at ln 10 when meta-tested alone; its trajectories were
      // three-quarters Adam's (bench/elo/results/2026-12-07-cpu/mulo_probe/).
      if (summary->alpha < 0.99)
        r.note = absl::StrFormat(
            "note: behaviour cloning's alpha is %.2f at this step: the optimizer was "
            "meta-trained on updates %.0f%% Adam's and is not expected to train alone "
            "until alpha nears 1. Resume to finish, or give a job that must stop early "
            "fewer outer steps or elo.behavior_cloning.alpha_ramp_fraction < 1.\n",
            summary->alpha, 100 * (1 - summary->alpha));
      return r;
    }
    std::string resumed;
    if (summary->resumed_from > 0)
      resumed = absl::StrFormat(" after resuming at outer step %d; %d of %d in %s in all",
                                summary->resumed_from, summary->outer_steps, summary->total_steps,
                                FormatDuration(summary->total_wall_seconds));
    r.message = absl::StrFormat(
        "trained %d outer steps in %s (%.0f inner particle-steps/s)%s\n"
        "meta-loss %.4f -> %.4f, task loss %.4f -> %.4f\noptimizer: %s\n",
        summary->outer_steps_this_run, FormatDuration(summary->wall_seconds),
        summary->particle_steps_per_second, resumed, summary->meta_loss_start,
        summary->meta_loss_end, summary->task_loss_start, summary->task_loss_end,
        summary->optimizer_path);
    return r;
  }
};

}  // namespace

const JobKind& EloKind() {
  static const Elo* kind = new Elo();
  return *kind;
}

}  // namespace lopt
