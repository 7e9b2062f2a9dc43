// Meta-validation of a run's snapshots (`lopt select`): the theta of the last
// outer step is not always the one that trains best past the meta-training
// horizon (the ELO study's seeds whose loss climbs back after ~6,000 steps,
// bench/elo), nor is the meta-training loss a guide to it. A run that keeps
// snapshots (budget.snapshot_every) trains fresh optimizees with each, on
// validation seeds of their own, and keeps the best.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/elo/evaluation.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// One candidate's validation: its runs' final train losses over the seeds.
struct SnapshotScore {
  std::string name;      // "step_000250", or "optimizer" (the run's optimizer.lopt)
  std::string path;      // the file it came from
  int64_t outer_step = 0;
  double mean_loss = 0;  // mean final train loss over the seeds (inf if any diverged)
  double worst_loss = 0; // the highest seed's
  int diverged = 0;      // seeds that diverged
  int climbed = 0;       // seeds whose loss climbed back (ClimbedBack)
};

// The sweep's runs scored by candidate, in the order of `names`.
std::vector<SnapshotScore> ScoreSweep(const MetaTestReport& report,
                                      const std::vector<std::string>& names);

// The best candidate: the fewest diverged seeds, then the fewest that
// climbed back (an optimizer unstable past its horizon on one seed in four
// is one a user meets), then the lowest mean loss; a tie goes to the earlier.
size_t BestSnapshot(const std::vector<SnapshotScore>& scores);

struct SelectOptions {
  int64_t steps = 0;   // <= 0: the job's eval steps (10x the horizon by default)
  int64_t seeds = 4;
  std::string device = "cpu";
  // Text LearnedOptimizerSpec merged into every candidate's options (the
  // inference schedule the optimizer will be used with), as lopt eval's.
  std::string lopt_options;
  // The job whose task to validate on (lopt select --job, checked at the
  // door); unset: the job the run's optimizer.lopt was trained with.
  std::optional<v1::JobSpec> job;
  // Candidates named by file (several runs' optimizers, e.g. one a
  // meta-training seed) instead of DIR's snapshots; a candidate is named by
  // its file's stem, or its folder's name where the stem is "optimizer".
  std::vector<std::string> files;
  std::function<void(int64_t, int64_t)> progress;
};

struct SelectOutcome {
  std::vector<SnapshotScore> scores;  // by outer step, the final file last
  size_t best = 0;
  std::string table;
  std::string selected_path;  // RUN/optimizer.selected.lopt
};

// Validates RUN/snapshots/*.lopt and RUN/optimizer.lopt, or o.files (of one
// architecture and the same options) on `seeds` fresh optimizees each, at once (RunThetaSweep),
// with the job's seed + kValidationSeedOffset (neither meta-training's nor
// lopt eval's seeds); writes RUN/select/selection.csv and selection.json and
// copies the best file to RUN/optimizer.selected.lopt.
absl::StatusOr<SelectOutcome> SelectFromRun(const std::string& run_dir, const SelectOptions& o);

}  // namespace lopt
