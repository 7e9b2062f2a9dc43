#include "kinds/elo/elo_kind.h"

#include <algorithm>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/elo_shard.h"
#include "common/spec/job_spec.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "kinds/elo/elo_spec.h"
#include "kinds/local_driver.h"

namespace lopt {
namespace {

class Elo : public JobKind {
 public:
  absl::string_view name() const override { return "elo"; }
  absl::string_view section() const override { return ""; }
  absl::Status ValidateSpec(const v1::JobSpec& spec, JobUse use) const override {
    return ValidateEloSpec(spec, use);
  }
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

  // summary.json's fields: the core's (EloCore::SummaryFields).
  LocalTrainReport ReportLocalRun(const v1::JobSpec&,
                                  const LocalRunSummary& summary) const override {
    LocalTrainReport r = FormatLocalReport(
        summary, {"outer steps", "outer steps", "theta of that step",
                  absl::StrFormat("meta-loss %.4f -> %.4f, task loss %.4f -> %.4f\n",
                                  summary.Number("meta_loss_start"), summary.Number("meta_loss_end"),
                                  summary.Number("task_loss_start"), summary.Number("task_loss_end")),
                  "optimizer"});
    // Measured: ELO stopped at alpha 0.26 (621 of 2,400 steps) leaves a
    // network at ln 10 when meta-tested alone; its trajectories were
    // three-quarters Adam's (bench/elo/results/2026-12-07-cpu/mulo_probe/).
    const double alpha = summary.Number("alpha");
    if (summary.stopped_early && alpha < 0.99)
      r.note = absl::StrFormat(
          "note: behaviour cloning's alpha is %.2f at this step: the optimizer was "
          "meta-trained on updates %.0f%% Adam's and is not expected to train alone "
          "until alpha nears 1. Resume to finish, or give a job that must stop early "
          "fewer outer steps or elo.behavior_cloning.alpha_ramp_fraction < 1.\n",
          alpha, 100 * (1 - alpha));
    return r;
  }

  // A checkpoint of ELO's own local driver (before the one driver ran ELO):
  // "worker/<shard>/" each shard's inner states, the buffer's table k in
  // "buffer/" (k = 0) or "buffer/g<k>/" ("size", then "<i>/" an item, the
  // table named by the shard's group k and of the job's capacity).
  absl::Status UpgradeLocalCheckpoint(const v1::JobSpec& spec,
                                      NamedTensors* checkpoint) const override {
    const bool old = std::any_of(checkpoint->begin(), checkpoint->end(), [](const auto& kv) {
      return kv.first.rfind("worker/", 0) == 0;
    });
    if (!old) return absl::OkStatus();
    // The tables' names are the shard's groups' (its tasks' names): a shard
    // made without a buffer names them.
    TaskCache tasks;
    auto shard = EloShard::Create(spec, CachingTaskFactory(&tasks, torch::kCPU), nullptr,
                                  spec.name() + "/", ShardSeed(spec, 0));
    if (!shard.ok()) return shard.status();
    std::vector<LocalBufferTable> tables;
    for (const std::string& name : (*shard)->buffer_tables()) {
      const size_t k = tables.size();
      const std::string prefix = k == 0 ? "buffer/" : absl::StrCat("buffer/g", k, "/");
      LocalBufferTable& table = tables.emplace_back();
      table.name = name;
      table.capacity = spec.elo().buffer().capacity();
      auto size = Find(*checkpoint, prefix + "size");
      if (!size.ok()) continue;  // a table the checkpoint did not know
      for (int64_t i = 0; i < size->item<int64_t>(); ++i)
        table.items.push_back(WithPrefix(*checkpoint, absl::StrCat(prefix, i, "/")));
    }
    NamedTensors upgraded;
    for (auto& [name, value] : *checkpoint) {
      if (name.rfind("buffer/", 0) == 0) continue;
      if (name.rfind("worker/", 0) == 0)
        upgraded.emplace_back(LocalRunnerPrefix(v1::ELO_PES) + name.substr(7), std::move(value));
      else
        upgraded.emplace_back(std::move(name), std::move(value));
    }
    AddLocalBufferTables(tables, &upgraded);
    *checkpoint = std::move(upgraded);
    return absl::OkStatus();
  }
};

}  // namespace

const JobKind& EloKind() {
  static const Elo* kind = new Elo();
  return *kind;
}

}  // namespace lopt
