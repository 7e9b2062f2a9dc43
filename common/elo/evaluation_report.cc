#include "common/elo/evaluation_report.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "common/spec/job_spec.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/files.h"
#include "common/util/json.h"
#include "common/util/run_files.h"
#include "common/util/runtime.h"

namespace lopt {

absl::StatusOr<std::string> WriteMetaTestReport(const MetaTestReport& report,
                                                const std::string& dir, int64_t horizon) {
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  // A ranking family (neumf) reports HR@10 and NDCG@10 where the others
  // report test accuracy.
  bool ranking = false;
  for (const auto& r : report.runs) ranking |= !std::isnan(r.test_hit_rate);
  // A transcription family (speech_ctc) reports the character error rate.
  bool transcription = false;
  for (const auto& r : report.runs) transcription |= !std::isnan(r.test_cer);
  // report.json
  std::string json = absl::StrCat("{\n  \"task\": ", JsonString(report.task),
                                  ",\n  \"steps\": ", report.steps,
                                  ",\n  \"final_window\": ", report.final_window,
                                  ",\n  \"runs\": [");
  for (size_t i = 0; i < report.runs.size(); ++i) {
    const auto& r = report.runs[i];
    absl::StrAppend(&json, i ? ",\n" : "\n", "    {\"optimizer\": ", JsonString(r.optimizer),
                    ", \"lr\": ", IsAdamWArm(r.optimizer) ? JsonNumber(r.lr) : "null",
                    ", \"seed\": ", r.seed,
                    ", \"final_train_loss\": ", JsonNumber(r.final_train_loss),
                    ", \"test_loss\": ", JsonNumber(r.test_loss),
                    ", \"test_accuracy\": ", JsonNumber(r.test_accuracy),
                    ranking ? absl::StrCat(", \"test_hit_rate\": ", JsonNumber(r.test_hit_rate),
                                           ", \"test_ndcg\": ", JsonNumber(r.test_ndcg))
                            : std::string(),
                    transcription ? absl::StrCat(", \"test_cer\": ", JsonNumber(r.test_cer)) : std::string(),
                    ", \"diverged\": ", r.diverged ? "true" : "false", "}");
  }
  json += "\n  ]\n}\n";
  if (auto s = WriteFileAtomically(dir + "/report.json", json); !s.ok()) return s;

  // Group runs by configuration (optimizer, lr) for the table and the plot.
  struct Group {
    std::string label;
    std::vector<const MetaTestRun*> runs;
  };
  std::vector<Group> groups;
  std::map<std::string, size_t> index;
  for (const auto& r : report.runs) {
    std::string label = IsAdamWArm(r.optimizer) ? absl::StrFormat("%s lr=%g", r.optimizer, r.lr) : r.optimizer;
    auto [it, inserted] = index.emplace(label, groups.size());
    if (inserted) groups.push_back({label, {}});
    groups[it->second].runs.push_back(&r);
  }

  // curves.csv (long form) and curves.dat (mean over seeds, for gnuplot).
  std::string csv = "optimizer,lr,seed,step,train_loss\n";
  for (const auto& r : report.runs)
    for (size_t k = 0; k < r.curve.size(); ++k)
      absl::StrAppend(&csv, r.optimizer, ",", IsAdamWArm(r.optimizer) ? absl::StrCat(r.lr) : "",
                      ",", r.seed, ",", (k + 1) * report.record_every, ",",
                      absl::StrFormat("%.6g", r.curve[k]), "\n");
  if (auto s = WriteFileAtomically(dir + "/curves.csv", csv); !s.ok()) return s;
  if (report.test_every > 0) {  // test_curves.csv: the test split along the run
    std::string tcsv = absl::StrCat("optimizer,lr,seed,step,test_loss,test_accuracy",
                                    ranking ? ",test_hit_rate,test_ndcg" : "",
                                    transcription ? ",test_cer" : "", "\n");
    for (const auto& r : report.runs)
      for (size_t k = 0; k < r.test_curve.size(); ++k) {
        absl::StrAppend(&tcsv, r.optimizer, ",", IsAdamWArm(r.optimizer) ? absl::StrCat(r.lr) : "",
                        ",", r.seed, ",", (k + 1) * report.test_every, ",",
                        absl::StrFormat("%.6g,%.6g", r.test_curve[k], r.test_acc_curve[k]));
        if (ranking)
          absl::StrAppend(&tcsv, absl::StrFormat(",%.6g,%.6g",
                                                 k < r.test_hr_curve.size() ? r.test_hr_curve[k] : NAN,
                                                 k < r.test_ndcg_curve.size() ? r.test_ndcg_curve[k] : NAN));
        if (transcription)
          absl::StrAppend(&tcsv, absl::StrFormat(",%.6g", k < r.test_cer_curve.size() ? r.test_cer_curve[k] : NAN));
        tcsv += "\n";
      }
    if (auto s = WriteFileAtomically(dir + "/test_curves.csv", tcsv); !s.ok()) return s;
  }
  // curves.dat (and test_curves.dat): a row a recorded step; for each group
  // the mean over seeds and the lowest and highest seed (the band).
  // FILE: one row an evaluation (every `every` steps, `len` of them), a
  // group's mean, min and max of the runs' `curve` member.
  auto write_band = [&](const std::string& file, std::vector<float> MetaTestRun::*curve,
                        int64_t every, size_t len) {
    std::string dat = "# step";
    for (const auto& g : groups)
      absl::StrAppend(&dat, "\t\"", g.label, "\"\t\"", g.label, " min\"\t\"", g.label, " max\"");
    dat += "\n";
    for (size_t k = 0; k < len; ++k) {
      absl::StrAppend(&dat, (k + 1) * every);
      for (const auto& g : groups) {
        double m = 0, lo = INFINITY, hi = -INFINITY;
        size_t n = 0;
        for (const auto* r : g.runs) {
          const std::vector<float>& c = (*r).*curve;
          double v = k < c.size() ? c[k] : NAN;
          m += v;
          if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v), ++n;
        }
        m /= g.runs.size();
        auto cell = [](double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : std::string("NaN"); };
        absl::StrAppend(&dat, "\t", cell(m), "\t", cell(n ? lo : NAN), "\t", cell(n ? hi : NAN));
      }
      dat += "\n";
    }
    return WriteFileAtomically(dir + "/" + file, dat);
  };
  const size_t len = report.runs.empty() ? 0 : report.runs[0].curve.size();
  if (auto s = write_band("curves.dat", &MetaTestRun::curve, report.record_every, len); !s.ok())
    return s;
  const size_t test_len = report.runs.empty() ? 0 : report.runs[0].test_curve.size();
  const bool with_test = report.test_every > 0 && test_len > 0;
  bool with_acc = false;  // NaN for tasks without labels
  for (const auto& r : report.runs)
    for (float v : r.test_acc_curve) with_acc |= std::isfinite(v);
  with_acc &= with_test;
  const bool with_hr = with_test && ranking && !with_acc;
  const bool with_cer = with_test && transcription && !with_acc;
  if (with_test) {
    if (auto s = write_band("test_loss.dat", &MetaTestRun::test_curve, report.test_every, test_len);
        !s.ok())
      return s;
    if (with_acc) {
      if (auto s = write_band("test_accuracy.dat", &MetaTestRun::test_acc_curve, report.test_every,
                              test_len);
          !s.ok())
        return s;
    }
    if (with_hr) {
      if (auto s = write_band("test_hit_rate.dat", &MetaTestRun::test_hr_curve, report.test_every,
                              test_len);
          !s.ok())
        return s;
    }
    if (with_cer) {
      if (auto s = write_band("test_cer.dat", &MetaTestRun::test_cer_curve, report.test_every, test_len);
          !s.ok())
        return s;
    }
  }
  // Learned optimizers dark and thick (trained black, untrained grey and
  // dashed, others purple), AdamW's grid in hues that stay apart
  // (Okabe-Ito, yellow replaced), ordered as the grid.
  static const char* kGridColors[8] = {"#e69f00", "#56b4e9", "#009e73", "#0072b2",
                                       "#d55e00", "#cc79a7", "#8c564b", "#999933"};
  std::vector<std::string> style(groups.size());
  int grid = 0, cosine_grid = 0;
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string& o = groups[i].runs[0]->optimizer;
    if (o == "lopt") style[i] = "lw 4 dt 1 lc rgb '#000000'";
    else if (o == "lopt_untrained") style[i] = "lw 3 dt 2 lc rgb '#777777'";
    else if (!IsAdamWArm(o)) style[i] = "lw 4 dt 4 lc rgb '#6a3d9a'";
    else  // the cosine arm dashed, in the same hue as its constant lr
      style[i] = absl::StrCat("lw 2 dt ", o == "adamw" ? 1 : 3, " lc rgb '",
                              kGridColors[(o == "adamw" ? grid++ : cosine_grid++) % 8], "'");
  }
  auto color_of = [&](size_t i) {
    size_t at = style[i].find("rgb '");
    return style[i].substr(at + 5, 7);
  };
  auto panel = [&](const std::string& file, bool key) {
    std::string p = "plot ";
    for (size_t i = 0; i < groups.size(); ++i)  // the bands first, under every line
      absl::StrAppend(&p, i ? ", " : "", "'", file, "' using 1:", 3 + 3 * i, ":", 4 + 3 * i,
                      " with filledcurves fc rgb '", color_of(i),
                      "' fs transparent solid 0.15 noborder notitle");
    for (size_t i = 0; i < groups.size(); ++i)
      absl::StrAppend(&p, ", '", file, "' using 1:", 2 + 3 * i, " with lines ", style[i],
                      key ? absl::StrCat(" title '", groups[i].label, "'") : " notitle");
    return p + "\n";
  };
  const size_t seeds = groups.empty() ? 0 : groups[0].runs.size();
  std::string gp = absl::StrCat(
      "set terminal pngcairo size ", with_acc || with_hr || with_cer ? "1800,650" : with_test ? "1400,650" : "1100,700",
      " noenhanced\n",
      "set output '", dir, "/curves.png'\nset datafile missing 'NaN'\nset grid\n",
      "set xlabel 'inner step'\nset xrange [0:", report.steps, "]\n");
  if (horizon > 0 && horizon < report.steps)
    absl::StrAppend(&gp, "set arrow 1 from ", horizon, ", graph 0 to ", horizon,
                    ", graph 1 nohead lw 2 dt 3 lc rgb '#444444'\n", "set label 1 'meta-training horizon (",
                    horizon, " steps)' at ", horizon, ", graph 0.03 right offset -0.5,0 font ',9'\n");
  const std::string what = absl::StrFormat("mean over %d seeds, band: lowest to highest seed", seeds);
  if (with_test) {
    absl::StrAppend(&gp, "set multiplot layout 1,", with_acc || with_hr || with_cer ? 3 : 2, " title 'meta-test on ",
                    report.task, " (", what, ")'\nset key top right font ',9'\n",
                    "set title 'training loss'\nset logscale y\n", panel(dir + "/curves.dat", true),
                    "set title 'test loss'\n", panel(dir + "/test_loss.dat", false));
    if (with_acc)
      absl::StrAppend(&gp, "set title 'test accuracy'\nunset logscale y\n",
                      panel(dir + "/test_accuracy.dat", false));
    if (with_hr)
      absl::StrAppend(&gp, "set title 'test HR@10'\nunset logscale y\n",
                      panel(dir + "/test_hit_rate.dat", false));
    if (with_cer)
      absl::StrAppend(&gp, "set title 'test character error rate'\nunset logscale y\n",
                      panel(dir + "/test_cer.dat", false));
    gp += "unset multiplot\n";
  } else {
    absl::StrAppend(&gp, "set title 'meta-test on ", report.task, ": training loss (", what,
                    ")'\nset ylabel 'training loss'\nset logscale y\nset key outside right\n",
                    panel(dir + "/curves.dat", true));
  }
  bool plotted = RunGnuplot(dir + "/curves.gp", gp);

  // The table: mean (std) over seeds.
  auto stats = [](const std::vector<const MetaTestRun*>& runs, auto field) {
    double m = 0, sq = 0;
    for (const auto* r : runs) m += field(*r);
    m /= runs.size();
    for (const auto* r : runs) sq += (field(*r) - m) * (field(*r) - m);
    return std::make_pair(m, runs.size() > 1 ? std::sqrt(sq / (runs.size() - 1)) : 0.0);
  };
  std::string table = absl::StrFormat("meta-test: %s, %d steps, %d seeds (final train loss = mean over the last %d steps)\n",
                                      report.task, report.steps, groups.empty() ? 0 : groups[0].runs.size(),
                                      report.final_window);
  if (ranking)
    absl::StrAppend(&table, absl::StrFormat("%-18s %-22s %-22s %-18s %-18s\n", "optimizer",
                                            "final train loss", "test loss", "HR@10", "NDCG@10"));
  else if (transcription)
    absl::StrAppend(&table, absl::StrFormat("%-18s %-22s %-22s %-16s\n", "optimizer",
                                            "final train loss", "test CTC loss", "test CER"));
  else
    absl::StrAppend(&table, absl::StrFormat("%-18s %-22s %-22s %-16s\n", "optimizer",
                                            "final train loss", "test loss", "test accuracy"));
  std::map<std::string, std::pair<double, const Group*>> best;  // per AdamW arm
  for (const auto& g : groups) {
    auto [fl, fls] = stats(g.runs, [](const MetaTestRun& r) { return r.final_train_loss; });
    auto [tl, tls] = stats(g.runs, [](const MetaTestRun& r) { return r.test_loss; });
    auto [ta, tas] = stats(g.runs, [](const MetaTestRun& r) { return r.test_accuracy; });
    if (ranking) {
      auto [hr, hrs] = stats(g.runs, [](const MetaTestRun& r) { return r.test_hit_rate; });
      auto [nd, nds] = stats(g.runs, [](const MetaTestRun& r) { return r.test_ndcg; });
      absl::StrAppend(&table,
                      absl::StrFormat("%-18s %8.4f +- %-9.4f %8.4f +- %-9.4f %6.4f +- %-7.4f %6.4f +- %.4f\n",
                                      g.label, fl, fls, tl, tls, hr, hrs, nd, nds));
    } else if (transcription) {
      auto [ce, ces] = stats(g.runs, [](const MetaTestRun& r) { return r.test_cer; });
      absl::StrAppend(&table, absl::StrFormat("%-18s %8.4f +- %-9.4f %8.4f +- %-9.4f %6.2f%% +- %.2f\n",
                                              g.label, fl, fls, tl, tls, 100 * ce, 100 * ces));
    } else {
      absl::StrAppend(&table, absl::StrFormat("%-18s %8.4f +- %-9.4f %8.4f +- %-9.4f %6.2f%% +- %.2f\n",
                                              g.label, fl, fls, tl, tls, 100 * ta, 100 * tas));
    }
    if (IsAdamWArm(g.runs[0]->optimizer)) {
      auto [it, fresh] = best.try_emplace(g.runs[0]->optimizer, fl, &g);
      if (!fresh && fl < it->second.first) it->second = {fl, &g};
    }
  }
  for (const auto& [arm, b] : best)
    absl::StrAppend(&table, arm == "adamw" ? "best AdamW of the grid" : "best AdamW, cosine, of the grid",
                    " (final train loss): ", b.second->label, "\n");
  for (const auto& g : groups) {
    const ClimbBack c = ClimbedBack(g.runs, report.record_every);
    if (c.climbed > 0)
      absl::StrAppend(&table, absl::StrFormat(
          "%s: the training loss climbed back on %d of %zu seeds (final above 1.5x the run's "
          "lowest, reached near step %d): not stable over %d steps\n",
          g.label, c.climbed, g.runs.size(), c.lowest_step, report.steps));
  }
  absl::StrAppend(&table, "wrote ", dir, "/report.json, curves.csv",
                  plotted ? ", curves.png" : " (gnuplot not found: no curves.png)", "\n");
  if (auto s = WriteFileAtomically(dir + "/table.txt", table); !s.ok()) return s;
  return table;
}

ClimbBack ClimbedBack(const std::vector<const MetaTestRun*>& runs, int64_t record_every,
                      double factor) {
  ClimbBack out;
  std::vector<int64_t> lowest;
  for (const MetaTestRun* r : runs) {
    if (r->diverged || r->curve.size() < 4 || !std::isfinite(r->final_train_loss)) continue;
    size_t at = 0;
    for (size_t i = 1; i < r->curve.size(); ++i)
      if (r->curve[i] < r->curve[at]) at = i;
    // It must have trained first (fallen by `factor` from its first window),
    // then climbed by `factor`: an optimizer that never trains (the untrained
    // one) drifts, it does not climb back.
    if (!(r->curve[at] > 0) || r->curve[0] <= factor * r->curve[at] ||
        r->final_train_loss <= factor * r->curve[at])
      continue;
    ++out.climbed;
    lowest.push_back(int64_t(at + 1) * std::max<int64_t>(record_every, 1));
  }
  if (!lowest.empty()) {
    std::sort(lowest.begin(), lowest.end());
    out.lowest_step = lowest[lowest.size() / 2];
  }
  return out;
}

absl::StatusOr<std::string> RunAndWriteMetaTest(const v1::JobSpec& job,
                                                const std::string& optimizer_path,
                                                const std::string& out_dir,
                                                const MetaTestOptions& o) {
  auto trained = LoadOptimizerFile(optimizer_path);
  if (!trained.ok()) return trained.status();
  auto outcome = RunAndWriteMetaTest(job, *trained, out_dir, o);
  if (!outcome.ok()) return outcome.status();
  return std::move(outcome->table);
}

absl::StatusOr<MetaTestSetup> MakeMetaTestSetup(const v1::JobSpec& job, int64_t steps, int64_t seeds,
                                                const std::string& device, uint64_t seed_offset) {
  MetaTestSetup s;
  MetaTestConfig& c = s.config;
  c.steps = steps > 0 ? steps : EvalSteps(job);
  c.seeds = seeds > 0 ? seeds : job.eval().seeds();
  if (c.steps <= 0 || c.seeds <= 0) return absl::InvalidArgumentError("--steps and --seeds must be > 0");
  auto dev = ParseDevice(device);
  if (!dev.ok()) return dev.status();
  auto task = MakeTask(job.task(), job.seed(), *dev);
  if (!task.ok()) return task.status();
  s.task = std::move(*task);
  c.adamw_lrs.assign(job.eval().adamw_lrs().begin(), job.eval().adamw_lrs().end());
  c.adamw_weight_decay = job.eval().adamw_weight_decay();
  c.adamw_cosine = job.eval().adamw_cosine();
  c.record_every = std::min<int64_t>(job.eval().record_every(), c.steps);
  c.test_every = job.eval().test_every();
  c.seed = job.seed() + seed_offset;
  return s;
}

absl::StatusOr<MetaTestOutcome> RunAndWriteMetaTest(const v1::JobSpec& job,
                                                    const TrainedOptimizer& trained,
                                                    const std::string& out_dir,
                                                    const MetaTestOptions& o) {
  auto setup = MakeMetaTestSetup(job, o.steps, o.seeds, o.device, kMetaTestSeedOffset);
  if (!setup.ok()) return setup.status();
  std::unique_ptr<Task>& task = setup->task;
  const MetaTestConfig& c = setup->config;

  // The untrained optimizer is the theta meta-training started from.
  std::vector<NamedLopt> lopts = {
      {"lopt", trained.file.options(), trained.theta},
      {"lopt_untrained", trained.file.options(), InitialTheta(trained.file.job())}};
  if (!o.lopt_options.empty()) {
    auto spec = MergeLoptOptions(trained.file.options(), o.lopt_options);
    if (!spec.ok()) return spec.status();
    lopts.push_back({"lopt_scheduled", *spec, trained.theta});
  }
  MetaTestReport report = RunMetaTest(*task, c, lopts, o.progress);
  MetaTestOutcome out;
  out.runs = int64_t(report.runs.size());
  for (const auto& r : report.runs) out.diverged += r.diverged;
  // The horizon the optimizer was meta-trained at, marked on the plot.
  auto table = WriteMetaTestReport(report, out_dir, MetaTrainingHorizon(trained.file.job()));
  if (!table.ok()) return table.status();
  out.table = std::move(*table);
  return out;
}

std::string MetaTestFileTensorName(const std::string& name) { return "file/" + name; }

absl::Status EncodeMetaTestFiles(const std::string& dir, v1::MetaTestResultInfo* info,
                                 NamedTensors* tensors) {
  info->clear_files();
  tensors->clear();
  for (const char* name : kMetaTestFiles) {
    const std::string path = dir + "/" + name;
    if (!FileExists(path)) continue;  // curves.png without gnuplot, test_curves.csv
    auto bytes = ReadFile(path);
    if (!bytes.ok()) return bytes.status();
    if (std::string(name) == "table.txt")
      *bytes = absl::StrReplaceAll(*bytes, {{dir + "/", std::string("eval/")}});
    info->add_files(name);
    tensors->emplace_back(MetaTestFileTensorName(name), StringTensor(*bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> DecodeMetaTestFiles(
    const v1::MetaTestResultInfo& info, const NamedTensors& tensors, const v1::JobSpec& job) {
  const std::set<std::string> known(std::begin(kMetaTestFiles), std::end(kMetaTestFiles));
  std::map<std::string, const torch::Tensor*> by_name;
  for (const auto& [name, value] : tensors)
    if (!by_name.emplace(name, &value).second)
      return absl::InvalidArgumentError(
          absl::StrCat("the meta-test result's payload has tensor '", name, "' twice"));
  std::vector<std::pair<std::string, std::string>> files;
  std::set<std::string> seen;
  for (const std::string& name : info.files()) {
    if (!known.count(name))
      return absl::InvalidArgumentError(absl::StrCat(
          "the meta-test result names file '", name.substr(0, 64),
          "', which is not one of the report's (report.json, table.txt, curves.csv, "
          "test_curves.csv, curves.png)"));
    if (!seen.insert(name).second)
      return absl::InvalidArgumentError(
          absl::StrCat("the meta-test result names file '", name, "' twice"));
    auto it = by_name.find(MetaTestFileTensorName(name));
    if (it == by_name.end())
      return absl::InvalidArgumentError(absl::StrCat(
          "the meta-test result names file '", name, "' but its payload has no tensor '",
          MetaTestFileTensorName(name), "'"));
    const torch::Tensor& t = *it->second;
    if (!t.defined() || t.dim() != 1 || t.scalar_type() != torch::kUInt8)
      return absl::InvalidArgumentError(absl::StrCat(
          "the meta-test result's tensor '", it->first, "' must be a uint8 vector (the file's bytes)"));
    files.emplace_back(name, TensorString(t));
    by_name.erase(it);
  }
  if (!by_name.empty())
    return absl::InvalidArgumentError(absl::StrCat("the meta-test result's payload has tensor '",
                                                   by_name.begin()->first.substr(0, 64),
                                                   "', which no file of it names"));
  std::vector<std::string> required = {"report.json", "table.txt", "curves.csv"};
  if (job.eval().test_every() > 0) required.push_back("test_curves.csv");
  for (const auto& name : required)
    if (!seen.count(name))
      return absl::InvalidArgumentError(absl::StrCat(
          "the meta-test result lacks ", name, " (it must carry ", absl::StrJoin(required, ", "), ")"));
  const std::string& report = std::find_if(files.begin(), files.end(), [](const auto& f) {
                                return f.first == "report.json";
                              })->second;
  google::protobuf::Struct json;
  if (auto s = google::protobuf::util::JsonStringToMessage(report, &json); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("the meta-test result's report.json is not JSON: ",
                                                   s.ToString().substr(0, 200)));
  const auto& fields = json.fields();
  auto field = [&](const char* key, google::protobuf::Value::KindCase kind) {
    auto it = fields.find(key);
    return it != fields.end() && it->second.kind_case() == kind ? &it->second : nullptr;
  };
  const auto* task = field("task", google::protobuf::Value::kStringValue);
  const auto* steps = field("steps", google::protobuf::Value::kNumberValue);
  const auto* runs = field("runs", google::protobuf::Value::kListValue);
  if (!task || !steps || !runs)
    return absl::InvalidArgumentError(
        "the meta-test result's report.json is not a meta-test report (it needs task, steps and runs)");
  if (int64_t(steps->number_value()) != EvalSteps(job))
    return absl::InvalidArgumentError(absl::StrCat(
        "the meta-test result's report.json is of ", int64_t(steps->number_value()),
        " inner steps but the job's meta-test runs ", EvalSteps(job)));
  if (runs->list_value().values_size() == 0 || runs->list_value().values_size() != info.runs())
    return absl::InvalidArgumentError(absl::StrCat(
        "the meta-test result's report.json has ", runs->list_value().values_size(),
        " runs but the result says ", info.runs()));
  if (info.diverged() < 0 || info.diverged() > info.runs())
    return absl::InvalidArgumentError(absl::StrCat("a meta-test result with ", info.diverged(),
                                                   " diverged runs of ", info.runs()));
  return files;
}

}  // namespace lopt
