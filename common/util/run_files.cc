#include "common/util/run_files.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/util/checkpoint.h"
#include "google/protobuf/text_format.h"

namespace lopt {

std::string EloMetricsColumns(const EloMetricsRow& r) {
  return absl::StrFormat("%d,%.6g,%.6g,%.6g,%.4f,%.6g,%d,%d,%d", r.outer_step, r.meta_loss,
                         r.task_loss, r.bc_loss, r.alpha, r.outer_lr, r.fresh_starts, r.restores,
                         r.pushes);
}

std::string MetricsCsvTail(double particle_steps_per_s, double wall_s) {
  return absl::StrFormat(",%.1f,%.3f\n", particle_steps_per_s, wall_s);
}

std::string LhoptMetricsColumns(const LhoptMetricsRow& r) {
  return absl::StrFormat("%d,%.6g,%.4g,%.6g,%.6g,%.6g,%.6g,%.4g,%.4g,%d,%d,%.6g,%d,%d,%d",
                         r.iteration, r.mean_reward, r.mean_episode_length, r.entropy,
                         r.approx_kl, r.value_loss, r.policy_loss, r.clip_fraction, r.grad_norm,
                         r.episodes, r.dropped_stale, r.mean_final_eval_loss, r.baseline_runs,
                         r.register_saves, r.register_loads);
}

std::pair<double, double> StartEndMeans(const std::vector<double>& v, size_t window) {
  const size_t n = v.size(), w = std::min(window, n);
  if (w == 0) return {NAN, NAN};
  auto mean = [&](size_t begin, size_t end) {
    double s = 0;
    for (size_t i = begin; i < end; ++i) s += v[i];
    return s / double(end - begin);
  };
  return {mean(0, w), mean(n - w, n)};
}

absl::Status DropCsvRowsFrom(const std::string& path, int64_t first_stale) {
  if (!FileExists(path)) return absl::OkStatus();
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  std::string kept;
  size_t at = 0;
  bool header = true;
  while (at < text->size()) {
    size_t end = text->find('\n', at);
    if (end == std::string::npos) end = text->size();  // a torn last line: dropped
    else ++end;
    const std::string line = text->substr(at, end - at);
    at = end;
    if (line.empty() || line.back() != '\n') continue;
    if (header || std::atoll(line.c_str()) < first_stale) kept += line;
    header = false;
  }
  if (kept == *text) return absl::OkStatus();
  return WriteFileAtomically(path, kept);
}

double LastCsvValue(const std::string& path, const std::string& column, double def) {
  if (!FileExists(path)) return def;
  auto text = ReadFile(path);
  if (!text.ok()) return def;
  std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  if (lines.size() < 2) return def;
  std::vector<std::string> head = absl::StrSplit(lines.front(), ',');
  std::vector<std::string> last = absl::StrSplit(lines.back(), ',');
  for (size_t i = 0; i < head.size() && i < last.size(); ++i)
    if (head[i] == column) {
      char* end = nullptr;
      double v = std::strtod(last[i].c_str(), &end);
      return end != last[i].c_str() && std::isfinite(v) ? v : def;
    }
  return def;
}

absl::Status WriteJobText(const std::string& dir, const v1::JobSpec& job) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(job, &text);
  return WriteFileAtomically(dir + "/job.textproto", text);
}

bool RunGnuplot(const std::string& script_path, const std::string& script) {
  if (!WriteFileAtomically(script_path, script).ok()) return false;
  return std::system(absl::StrCat("gnuplot '", script_path, "' 2>/dev/null").c_str()) == 0;
}

bool PlotEloTraining(const std::string& dir, const std::string& job_name) {
  const std::string csv = dir + "/metrics.csv";
  if (LastCsvValue(csv, "outer_step", -1) < 0) return false;  // no rows yet
  // Columns by name: gnuplot then reads the first line as the header. Each
  // raw series thin and light, its smoothed trend over it.
  auto series = [&](const char* col, const char* color, const char* title) {
    return absl::StrCat("'", csv, "' using 'outer_step':'", col, "' with lines lw 1 lc rgb '",
                        color, "' notitle, '' using 'outer_step':'", col,
                        "' smooth bezier lw 3 lc rgb '", color, "' title '", title, "'");
  };
  std::string gp = absl::StrCat(
      "set terminal pngcairo size 1300,850 noenhanced\nset output '", dir, "/training.png'\n",
      "set datafile separator ','\nset key top right\nset grid\n",
      "set multiplot layout 2,2 title 'ELO meta-training of ", job_name,
      " (", dir, "/metrics.csv)'\n",
      "set xlabel 'outer step'\n",
      "set title 'meta-loss (PES, the alpha mix of task and BC losses)'\nplot ",
      series("meta_loss", "#1f77b4", "meta-loss"), "\n",
      "set title 'task loss (inner training loss) and behaviour-cloning loss'\nplot ",
      series("task_loss", "#d62728", "task loss"), ", ", series("bc_loss", "#2ca02c", "BC loss"),
      "\n",
      "set title 'alpha (0: behaviour cloning only, 1: task loss only) and outer lr'\n",
      "set ytics nomirror\nset y2tics\nset ylabel 'alpha'\nset y2label 'outer lr'\n",
      "plot '", csv, "' using 'outer_step':'alpha' with lines lw 3 lc rgb '#9467bd' title 'alpha', ",
      "'' using 'outer_step':'outer_lr' axes x1y2 with lines lw 2 dt 2 lc rgb '#ff7f0e' title 'outer lr'\n",
      "unset y2tics\nunset y2label\nset ytics mirror\nset ylabel 'inner particle-steps/s'\n",
      "set title 'throughput'\nplot ",
      series("particle_steps_per_s", "#8c564b", "inner particle-steps/s"), "\n",
      "unset multiplot\n");
  return RunGnuplot(dir + "/training.gp", gp);
}

bool PlotLhoptRewards(const std::string& dir, const std::string& job_name) {
  const std::string csv = dir + "/metrics.csv";
  if (LastCsvValue(csv, "iteration", -1) < 0) return false;  // no rows yet
  return RunGnuplot(
      dir + "/rewards.gp",
      absl::StrCat("set terminal pngcairo size 1000,600 noenhanced\nset output '", dir,
                   "/rewards.png'\nset datafile separator ','\nset key top left\n",
                   "set title 'LHOPT ", job_name, ": mean episode reward a PPO iteration'\n",
                   "set xlabel 'PPO iteration'\n",
                   "set ylabel 'mean reward (log speed-up over the EMA baseline)'\n", "plot '", csv,
                   "' using 1:2 with linespoints title 'mean reward', ",
                   "'' using 1:2 smooth bezier lw 3 title 'smoothed'\n"));
}

}  // namespace lopt
