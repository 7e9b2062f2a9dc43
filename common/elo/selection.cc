#include "common/elo/selection.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <google/protobuf/util/message_differencer.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/optimizer_file.h"
#include "common/spec/job_spec.h"
#include "common/tasks/task.h"
#include "common/util/files.h"
#include "common/util/json.h"

namespace lopt {

std::vector<SnapshotScore> ScoreSweep(const MetaTestReport& report,
                                      const std::vector<std::string>& names) {
  std::vector<SnapshotScore> scores;
  for (const std::string& name : names) {
    std::vector<const MetaTestRun*> runs;
    for (const MetaTestRun& r : report.runs)
      if (r.optimizer == name) runs.push_back(&r);
    SnapshotScore s;
    s.name = name;
    double sum = 0;
    for (const MetaTestRun* r : runs) {
      s.diverged += r->diverged;
      sum += r->final_train_loss;
      s.worst_loss = std::max(s.worst_loss, r->final_train_loss);
    }
    s.mean_loss = runs.empty() ? INFINITY : sum / double(runs.size());
    if (s.diverged > 0) s.mean_loss = s.worst_loss = INFINITY;
    s.climbed = ClimbedBack(runs, report.record_every).climbed;
    scores.push_back(std::move(s));
  }
  return scores;
}

size_t BestSnapshot(const std::vector<SnapshotScore>& scores) {
  size_t best = 0;
  auto key = [](const SnapshotScore& s) { return std::make_tuple(s.diverged, s.climbed, s.mean_loss); };
  for (size_t i = 1; i < scores.size(); ++i)
    if (key(scores[i]) < key(scores[best])) best = i;
  return best;
}

namespace {

struct Candidate {
  std::string name, path;
  TrainedOptimizer file;
};

std::string Loss(double v) { return std::isfinite(v) ? absl::StrFormat("%.4f", v) : "diverged"; }

}  // namespace

absl::StatusOr<SelectOutcome> SelectFromRun(const std::string& run_dir, const SelectOptions& o) {
  namespace fs = std::filesystem;
  // The snapshots by outer step, then the run's own file (often the last
  // snapshot's theta too: it is then left out as a duplicate).
  std::vector<std::string> paths = o.files;
  std::error_code ec;
  const fs::path snaps = fs::path(run_dir) / "snapshots";
  const std::string final_path = o.files.empty() ? run_dir + "/optimizer.lopt" : "";
  if (o.files.empty()) {
    if (fs::is_directory(snaps, ec))
      for (const auto& e : fs::directory_iterator(snaps, ec))
        if (e.path().extension() == ".lopt") paths.push_back(e.path().string());
    std::sort(paths.begin(), paths.end());
    if (FileExists(final_path)) paths.push_back(final_path);
  }
  if (paths.empty())
    return absl::NotFoundError(absl::StrCat(
        run_dir, " has neither snapshots/*.lopt nor optimizer.lopt: train with "
                 "budget { snapshot_every: N } to keep candidates"));

  std::vector<Candidate> cands;
  for (const std::string& p : paths) {
    auto t = LoadOptimizerFile(p);
    if (!t.ok()) return t.status();
    const bool is_final = p == final_path;
    std::string name = is_final ? "optimizer" : fs::path(p).stem().string();
    if (!o.files.empty() && absl::StartsWith(name, "optimizer"))
      name = fs::path(p).parent_path().filename().string();
    for (const Candidate& c : cands)
      if (c.name == name) name = absl::StrCat(name, "#", cands.size());
    if (is_final && !cands.empty() &&
        cands.back().file.file.outer_step() == t->file.outer_step() &&
        torch::equal(cands.back().file.theta, t->theta))
      continue;  // the last snapshot's theta
    if (!cands.empty() && t->theta.numel() != cands.front().file.theta.numel())
      return absl::InvalidArgumentError(absl::StrCat(
          p, " holds a theta of ", t->theta.numel(), " values where ", cands.front().path, " has ",
          cands.front().file.theta.numel(), ": the candidates of one run share an architecture"));
    if (!cands.empty() && !google::protobuf::util::MessageDifferencer::Equals(
                              t->file.options(), cands.front().file.file.options()))
      return absl::InvalidArgumentError(absl::StrCat(
          p, " has other options than ", cands.front().path,
          " (lopt inspect shows them): validate optimizers of different options separately"));
    cands.push_back({std::move(name), p, std::move(*t)});
  }
  if (cands.size() > 64)
    return absl::InvalidArgumentError(absl::StrCat(
        run_dir, " has ", cands.size(), " candidates; at most 64 are validated at once (keep "
                 "fewer snapshots: a larger budget.snapshot_every)"));

  const v1::JobSpec job = o.job ? *o.job : cands.back().file.file.job();
  if (o.seeds <= 0) return absl::InvalidArgumentError("--seeds must be > 0");
  auto setup = MakeMetaTestSetup(job, o.steps, o.seeds, o.device, kValidationSeedOffset);
  if (!setup.ok()) return setup.status();
  MetaTestConfig& c = setup->config;
  c.test_every = 0;  // training losses decide; the test split is lopt eval's
  const int64_t steps = c.steps;
  v1::LearnedOptimizerSpec spec = cands.back().file.file.options();
  if (!o.lopt_options.empty()) {
    auto merged = MergeLoptOptions(spec, o.lopt_options);
    if (!merged.ok()) return merged.status();
    spec = *merged;
  }
  std::vector<std::pair<std::string, torch::Tensor>> thetas;
  std::vector<std::string> names;
  for (const Candidate& cand : cands) {
    thetas.emplace_back(cand.name, cand.file.theta);
    names.push_back(cand.name);
  }
  auto report = RunThetaSweep(*setup->task, c, spec, thetas, o.progress);
  if (!report.ok()) return report.status();

  SelectOutcome out;
  out.scores = ScoreSweep(*report, names);
  for (size_t i = 0; i < cands.size(); ++i) {
    out.scores[i].path = cands[i].path;
    out.scores[i].outer_step = cands[i].file.file.outer_step();
  }
  out.best = BestSnapshot(out.scores);
  const SnapshotScore& best = out.scores[out.best];

  const std::string dir = run_dir + "/select";
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  std::string csv = "candidate,outer_step,mean_final_train_loss,worst_final_train_loss,diverged,climbed_back\n";
  std::string json = absl::StrCat(
      "{\n  \"task\": ", JsonString(report->task), ",\n  \"steps\": ", steps,
      ",\n  \"seeds\": ", o.seeds, ",\n  \"seed\": ", c.seed,
      ",\n  \"lopt_options\": ", JsonString(o.lopt_options), ",\n  \"selected\": ",
      JsonString(best.name), ",\n  \"selected_outer_step\": ", best.outer_step,
      ",\n  \"candidates\": [");
  std::string table = absl::StrFormat(
      "meta-validation: %s, %d steps x %d seeds (seed %d), %zu candidates%s\n"
      "  %-12s %10s %12s %12s %9s %8s\n",
      report->task, steps, o.seeds, c.seed, cands.size(),
      o.lopt_options.empty() ? "" : absl::StrCat(", options '", o.lopt_options, "'"), "candidate",
      "outer step", "mean loss", "worst seed", "diverged", "climbed");
  for (size_t i = 0; i < out.scores.size(); ++i) {
    const SnapshotScore& s = out.scores[i];
    absl::StrAppend(&csv, s.name, ",", s.outer_step, ",", JsonNumber(s.mean_loss), ",",
                    JsonNumber(s.worst_loss), ",", s.diverged, ",", s.climbed, "\n");
    absl::StrAppend(&json, i ? "," : "", "\n    {\"candidate\": ", JsonString(s.name),
                    ", \"file\": ", JsonString(s.path), ", \"outer_step\": ", s.outer_step,
                    ", \"mean_final_train_loss\": ", JsonNumber(s.mean_loss),
                    ", \"worst_final_train_loss\": ", JsonNumber(s.worst_loss),
                    ", \"diverged\": ", s.diverged, ", \"climbed_back\": ", s.climbed, "}");
    absl::StrAppend(&table, absl::StrFormat("%s %-12s %10d %12s %12s %9d %8d\n",
                                            i == out.best ? "*" : " ", s.name, s.outer_step,
                                            Loss(s.mean_loss), Loss(s.worst_loss), s.diverged,
                                            s.climbed));
  }
  absl::StrAppend(&json, "\n  ]\n}\n");
  out.selected_path = run_dir + "/optimizer.selected.lopt";
  auto bytes = ReadFile(best.path);
  if (!bytes.ok()) return bytes.status();
  for (auto [file, content] : {std::pair<std::string, const std::string*>{dir + "/selection.csv", &csv},
                               {dir + "/selection.json", &json},
                               {out.selected_path, &*bytes}})
    if (absl::Status s = WriteFileAtomically(file, *content); !s.ok()) return s;
  absl::StrAppend(&table, "selected ", best.name, " (outer step ", best.outer_step, "): ",
                  out.selected_path, "\n");
  out.table = std::move(table);
  return out;
}

}  // namespace lopt
