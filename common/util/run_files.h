// What a run directory holds beside its checkpoint, written the same way by
// `lopt train` (local mode) and by the learner (its job directories): the
// job as text, metrics.csv with one row an outer step, and its plot.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// ELO's metrics.csv: one row an outer step; outer_step is the step applied
// (0-based) and wall_s the seconds of meta-training up to it, summed over
// every run that resumed the job.
inline constexpr char kEloMetricsHeader[] =
    "outer_step,meta_loss,task_loss,bc_loss,alpha,outer_lr,fresh_starts,restores,pushes,"
    "particle_steps_per_s,wall_s\n";

struct EloMetricsRow {
  int64_t outer_step = 0;
  double meta_loss = 0, task_loss = 0, bc_loss = 0, alpha = 0, outer_lr = 0;
  int64_t fresh_starts = 0, restores = 0, pushes = 0;
};
// The row without its last two columns (particle_steps_per_s, wall_s) and
// newline, and those two columns: the learner's job core knows the first,
// the job manager (or local mode's driver) the others.
std::string EloMetricsColumns(const EloMetricsRow& row);
std::string MetricsCsvTail(double particle_steps_per_s, double wall_s);

// LHOPT's metrics.csv: one row a PPO iteration; iteration is the update's
// (0-based: the version it produced, minus one), wall_s as ELO's.
inline constexpr char kLhoptMetricsHeader[] =
    "iteration,mean_reward,mean_episode_length,entropy,approx_kl,value_loss,"
    "policy_loss,clip_fraction,grad_norm,episodes,dropped_stale,mean_final_eval_loss,"
    "baseline_runs,register_saves,register_loads,inner_particle_steps_per_s,wall_s\n";

struct LhoptMetricsRow {
  int64_t iteration = 0;
  double mean_reward = 0, mean_episode_length = 0;
  double entropy = 0, approx_kl = 0, value_loss = 0, policy_loss = 0, clip_fraction = 0,
         grad_norm = 0;
  int64_t episodes = 0, dropped_stale = 0;
  double mean_final_eval_loss = 0;
  int64_t baseline_runs = 0, register_saves = 0, register_loads = 0;
};
// The row without its last two columns (inner_particle_steps_per_s, wall_s)
// and newline: MetricsCsvTail adds them, as for ELO.
std::string LhoptMetricsColumns(const LhoptMetricsRow& row);

// summary.json's start and end figures: the means of the first and of the
// last min(window, n) values (NaN for none).
std::pair<double, double> StartEndMeans(const std::vector<double>& v, size_t window);

// A resumed run recomputes what came after its checkpoint: the rows of the
// CSV at `path` (header kept) whose first column is >= first_stale are
// dropped, and so is a torn last line; else a run killed between a row and
// its next checkpoint would repeat them. A missing file is fine.
absl::Status DropCsvRowsFrom(const std::string& path, int64_t first_stale);

// The last row's value of `column` (named in the header), or `def` when the
// file, the column or a row is missing.
double LastCsvValue(const std::string& path, const std::string& column, double def);

// <dir>/job.textproto: the job as it runs (defaults filled in), readable by
// `lopt validate` and `lopt train --job`.
absl::Status WriteJobText(const std::string& dir, const v1::JobSpec& job);

// Writes `script` to `script_path` and runs gnuplot on it; false if gnuplot
// is missing or fails.
bool RunGnuplot(const std::string& script_path, const std::string& script);

// <dir>/training.png (and training.gp) from <dir>/metrics.csv: meta-loss and
// task loss, alpha, inner throughput and wall-clock seconds over outer steps.
bool PlotEloTraining(const std::string& dir, const std::string& job_name);

// <dir>/rewards.png (and rewards.gp) from an LHOPT run's <dir>/metrics.csv:
// the mean episode reward a PPO iteration and its smoothed trend.
bool PlotLhoptRewards(const std::string& dir, const std::string& job_name);

}  // namespace lopt
