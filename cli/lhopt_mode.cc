#include "cli/lhopt_mode.h"

#include <cmath>
#include <map>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/lhopt/lhopt_schedule.h"
#include "common/util/files.h"
#include "common/util/json.h"
#include "common/util/run_files.h"

namespace lopt {

absl::Status WriteScheduleOutputs(const v1::LhoptSchedule& s, const std::string& dir) {
  if (absl::Status st = MakeDirs(dir); !st.ok()) return st;
  if (auto st = SaveScheduleJson(dir + "/schedule.json", s); !st.ok()) return st;
  if (auto st = WriteFileAtomically(dir + "/schedule.csv", ScheduleCsv(s)); !st.ok()) return st;
  // Steps: each value holds until the next point; a last point at progress 1 closes the plot.
  std::string dat = ScheduleCsv(s);
  const auto& last = s.points(s.points_size() - 1);
  absl::StrAppend(&dat, absl::StrFormat("1,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", last.lr(),
                                        last.one_minus_beta1(), last.one_minus_beta2(), last.eps(),
                                        last.weight_decay(), last.clip_fraction()));
  if (auto st = WriteFileAtomically(dir + "/schedule.dat", dat); !st.ok()) return st;
  std::string gp = absl::StrCat(
      "set terminal pngcairo size 1000,650 noenhanced\nset output '", dir, "/schedule.png'\n",
      "set datafile separator ','\nset logscale y\nset key outside right\n",
      "set title 'LHOPT schedule (", s.task(), ", ", s.inner_steps(), " steps)'\n",
      "set xlabel 'normalised progress'\nset ylabel 'value'\nset xrange [0:1]\nplot ");
  const char* names[] = {"lr", "1-beta1", "1-beta2", "eps", "weight_decay", "clip_fraction"};
  for (int i = 0; i < 6; ++i)
    absl::StrAppend(&gp, i ? ", " : "", "'", dir, "/schedule.dat' every ::1 using 1:", i + 2,
                    " with steps lw 2 title '", names[i], "'");
  gp += "\n";
  RunGnuplot(dir + "/schedule.gp", gp);
  return absl::OkStatus();
}

absl::StatusOr<std::string> WriteHparamEvalReport(const HparamEvalReport& report,
                                                  const std::string& dir) {
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  auto mean_std = [](const torch::Tensor& t) {
    torch::Tensor x = t.to(torch::kFloat64);
    double m = x.mean().item<double>();
    double sd = x.numel() > 1 ? x.std().item<double>() : 0.0;
    return std::make_pair(m, sd);
  };
  auto label = [](const HparamEvalArm& a) {
    return a.lr > 0 ? absl::StrFormat("%s lr=%g", a.name, a.lr) : a.name;
  };
  // A ranking family (neumf) reports HR@10 and NDCG@10 for test accuracy.
  const bool ranking = !report.arms.empty() && report.arms[0].test_hit_rate.defined();
  // A transcription family (speech_ctc) reports the character error rate.
  const bool transcription = !report.arms.empty() && report.arms[0].test_cer.defined();
  std::string json = absl::StrCat("{\n  \"task\": ", JsonString(report.task),
                                  ",\n  \"steps\": ", report.steps, ",\n  \"arms\": [");
  std::string csv = "arm,lr,seed,step,train_loss\n";
  for (size_t i = 0; i < report.arms.size(); ++i) {
    const auto& a = report.arms[i];
    auto [fl, fls] = mean_std(a.final_train_loss);
    auto [tl, tls] = mean_std(a.test_loss);
    auto [ta, tas] = mean_std(a.test_accuracy);
    absl::StrAppend(&json, i ? ",\n" : "\n", "    {\"arm\": ", JsonString(a.name),
                    ", \"lr\": ", a.lr > 0 ? JsonNumber(a.lr) : "null",
                    ", \"final_train_loss\": ", JsonNumber(fl), ", \"final_train_loss_std\": ", JsonNumber(fls),
                    ", \"test_loss\": ", JsonNumber(tl), ", \"test_loss_std\": ", JsonNumber(tls),
                    ", \"test_accuracy\": ", JsonNumber(ta),
                    ranking ? absl::StrCat(", \"test_hit_rate\": ", JsonNumber(mean_std(a.test_hit_rate).first),
                                           ", \"test_ndcg\": ", JsonNumber(mean_std(a.test_ndcg).first))
                            : std::string(),
                    transcription ? absl::StrCat(", \"test_cer\": ", JsonNumber(mean_std(a.test_cer).first))
                                  : std::string(),
                    "}");
    torch::Tensor c = a.train_curve.contiguous();
    for (int64_t s = 0; s < c.size(1); ++s)
      for (int64_t k = 0; k < c.size(0); ++k)
        absl::StrAppend(&csv, a.name, ",", a.lr > 0 ? absl::StrCat(a.lr) : "", ",", s, ",",
                        (k + 1) * report.record_every, ",",
                        absl::StrFormat("%.6g", c[k][s].item<double>()), "\n");
  }
  json += "\n  ]\n}\n";
  if (auto s = WriteFileAtomically(dir + "/report.json", json); !s.ok()) return s;
  if (auto s = WriteFileAtomically(dir + "/curves.csv", csv); !s.ok()) return s;

  std::string table = absl::StrFormat(
      "%s, %d steps, %d seeds (final train loss = mean over the last 10%% of the steps)\n",
      report.task, report.steps, report.arms.empty() ? 0 : report.arms[0].test_loss.numel());
  absl::StrAppend(&table, absl::StrFormat("%-26s %-22s %-22s %-16s\n", "arm", "final train loss",
                                          "test loss", ranking ? "HR@10   NDCG@10" : transcription ? "test CER" : "test accuracy"));
  std::map<std::string, std::pair<double, std::string>> best;  // per grid family
  for (const auto& a : report.arms) {
    auto [fl, fls] = mean_std(a.final_train_loss);
    auto [tl, tls] = mean_std(a.test_loss);
    auto [ta, tas] = mean_std(a.test_accuracy);
    if (ranking && a.test_hit_rate.defined())
      absl::StrAppend(&table, absl::StrFormat("%-26s %8.4f +- %-9.4f %8.4f +- %-9.4f %.4f  %.4f\n",
                                              label(a), fl, fls, tl, tls,
                                              mean_std(a.test_hit_rate).first,
                                              mean_std(a.test_ndcg).first));
    else if (transcription && a.test_cer.defined())
      absl::StrAppend(&table, absl::StrFormat("%-26s %8.4f +- %-9.4f %8.4f +- %-9.4f %6.2f%%\n",
                                              label(a), fl, fls, tl, tls, 100 * mean_std(a.test_cer).first));
    else
      absl::StrAppend(&table, absl::StrFormat("%-26s %8.4f +- %-9.4f %8.4f +- %-9.4f %6.2f%%\n",
                                              label(a), fl, fls, tl, tls, 100 * ta));
    if (a.lr > 0) {
      double key = std::isfinite(fl) ? fl : INFINITY;
      auto it = best.find(a.name);
      if (it == best.end() || key < it->second.first) best[a.name] = {key, label(a)};
    }
  }
  for (const auto& [family, b] : best)
    absl::StrAppend(&table, "best of the ", family, " grid (final train loss): ", b.second, "\n");
  // The curves, mean over seeds: the grids' best only, to stay readable.
  std::string dat = "step";
  std::vector<const HparamEvalArm*> shown;
  for (const auto& a : report.arms)
    if (a.lr <= 0 || best[a.name].second == label(a)) shown.push_back(&a);
  for (const auto* a : shown) absl::StrAppend(&dat, "\t\"", label(*a), "\"");
  dat += "\n";
  int64_t W = shown.empty() ? 0 : shown[0]->train_curve.size(0);
  for (int64_t k = 0; k < W; ++k) {
    absl::StrAppend(&dat, (k + 1) * report.record_every);
    for (const auto* a : shown) {
      double m = a->train_curve[k].mean().item<double>();
      absl::StrAppend(&dat, "\t", std::isfinite(m) ? absl::StrFormat("%.6g", m) : "NaN");
    }
    dat += "\n";
  }
  if (auto s = WriteFileAtomically(dir + "/curves.dat", dat); !s.ok()) return s;
  std::string gp = absl::StrCat(
      "set terminal pngcairo size 1100,700 noenhanced\nset output '", dir, "/curves.png'\n",
      "set title '", report.task, ": training loss (mean over seeds)'\nset xlabel 'inner step'\n",
      "set ylabel 'training loss'\nset logscale y\nset key outside right\nset datafile missing 'NaN'\nplot ");
  for (size_t i = 0; i < shown.size(); ++i)
    absl::StrAppend(&gp, i ? ", " : "", "'", dir, "/curves.dat' using 1:", i + 2,
                    " with lines lw 2 title columnheader(", i + 2, ")");
  gp += "\n";
  bool plotted = !shown.empty() && RunGnuplot(dir + "/curves.gp", gp);
  absl::StrAppend(&table, "wrote ", dir, "/report.json, curves.csv",
                  plotted ? ", curves.png" : " (gnuplot not found: no curves.png)", "\n");
  if (auto s = WriteFileAtomically(dir + "/table.txt", table); !s.ok()) return s;
  return table;
}

}  // namespace lopt
