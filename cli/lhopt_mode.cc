#include "cli/lhopt_mode.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <tuple>
#include <set>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/run_clock.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_schedule.h"
#include "common/lhopt/lhopt_yardstick.h"
#include "common/util/checkpoint.h"
#include "common/util/json.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

NamedTensors WithPrefix(const NamedTensors& all, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), v);
  return out;
}

// The job's state and the baseline curves the runner keeps in the buffer
// (the restart registers' tables live only within a unit).
// Baseline tables of generations before the current one can never be read
// again (units use the current generation's key): they are deleted, and
// the rest go into the checkpoint. `tables` gathers the restored tables and
// every table the runner has touched.
void PruneBaselineTables(const LhoptJob& job, const LhoptEpisodeRunner& runner,
                         ReplayBuffer& buffer, std::set<std::string>* tables) {
  tables->insert(runner.baseline_tables().begin(), runner.baseline_tables().end());
  for (auto it = tables->begin(); it != tables->end();) {
    size_t at = it->rfind("/baseline/g");
    int64_t gen = at == std::string::npos ? -1 : std::atoll(it->c_str() + at + 11);
    if (gen >= 0 && gen < job.baseline_generation()) {
      (void)buffer.DeleteTable(*it);
      it = tables->erase(it);
    } else {
      ++it;
    }
  }
}

absl::Status SaveCheckpoint(const std::string& path, const v1::JobSpec& spec, const LhoptJob& job,
                            const std::set<std::string>& tables, ReplayBuffer& buffer,
                            double wall_seconds) {
  NamedTensors all;
  all.emplace_back("job", StringTensor(spec.SerializeAsString()));
  // Training time so far, the yardstick's evaluations in.
  AddRunWallSeconds(wall_seconds, &all);
  for (auto& [k, v] : job.SaveState()) all.emplace_back("learner/" + k, v);
  int64_t n = 0;
  for (const std::string& table : tables) {
    auto items = buffer.Items(table);
    if (!items.ok()) return items.status();
    for (const auto& item : *items) {
      all.emplace_back(absl::StrCat("buffer/", n, "/@table"), StringTensor(table));
      for (const auto& [k, v] : item) all.emplace_back(absl::StrCat("buffer/", n, "/", k), v);
      ++n;
    }
  }
  all.emplace_back("buffer/size", torch::tensor(n, torch::kInt64));
  auto bytes = SerializeTensors(all);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

}  // namespace

absl::StatusOr<LhoptTrainSummary> RunLocalLhoptTraining(const v1::JobSpec& spec,
                                                        const LocalTrainOptions& opt) {
  if (absl::Status s = MakeDirs(opt.out_dir); !s.ok()) return s;
  // --device: where the episodes', baselines' and yardstick's inner runs go
  // (the PPO update and the policy's acting stay on the CPU).
  auto device = ParseDevice(opt.device);
  if (!device.ok()) return device.status();
  InMemoryReplayBuffer buffer;
  LhoptJob job(spec);
  LhoptEpisodeRunner runner(spec, &buffer, spec.name(), *device);

  const std::string ckpt = opt.out_dir + "/checkpoint.pt";
  const std::string metrics_path = opt.out_dir + "/metrics.csv";
  std::set<std::string> tables;  // baseline curves to checkpoint
  LhoptTrainSummary summary;
  double wall_before = 0;  // training seconds before this run (resumed)
  if (!opt.fresh && FileExists(ckpt)) {
    auto bytes = ReadFile(ckpt);
    if (!bytes.ok()) return bytes.status();
    auto all = DeserializeTensors(*bytes);
    if (!all.ok()) return all.status();
    auto saved_job = Find(*all, "job");
    if (!saved_job.ok() || TensorString(*saved_job) != spec.SerializeAsString())
      return absl::FailedPreconditionError(absl::StrCat(
          ckpt, " belongs to a different job spec; use --fresh to start over or another --out"));
    if (auto s = job.LoadState(WithPrefix(*all, "learner/")); !s.ok()) return s;
    auto size = Find(*all, "buffer/size");
    if (!size.ok()) return size.status();
    const int64_t n = size->item<int64_t>();
    for (int64_t i = 0; i < n; ++i) {
      NamedTensors item = WithPrefix(*all, absl::StrCat("buffer/", i, "/"));
      auto table_t = Find(item, "@table");
      if (!table_t.ok()) return table_t.status();
      std::string table = TensorString(*table_t);
      item.erase(std::remove_if(item.begin(), item.end(),
                                [](const auto& kv) { return kv.first == "@table"; }),
                 item.end());
      if (auto s = buffer.Put(table, 1, item); !s.ok()) return s;
      tables.insert(table);
    }
    summary.resumed_from = job.version();
    // metrics.csv row i: the update to version i + 1; yardstick.csv row v:
    // version v. The rows a crash left after the checkpoint are recomputed,
    // not repeated.
    if (auto s = DropCsvRowsFrom(metrics_path, summary.resumed_from); !s.ok()) return s;
    if (auto s = DropCsvRowsFrom(opt.out_dir + "/yardstick.csv", summary.resumed_from + 1); !s.ok())
      return s;
    wall_before = RunWallSecondsBefore(*all, metrics_path);
    std::fprintf(stderr,
                 "lopt train: resuming %s from its checkpoint at iteration %lld of %lld "
                 "(%s of training so far); --fresh starts over\n",
                 opt.out_dir.c_str(), (long long)summary.resumed_from,
                 (long long)job.iterations(), FormatDuration(wall_before).c_str());
  }

  if (auto s = WriteJobText(opt.out_dir, spec); !s.ok()) return s;
  const bool append = summary.resumed_from > 0 && FileExists(metrics_path);
  std::ofstream metrics(metrics_path, append ? std::ios::app : std::ios::trunc);
  if (!append) metrics << kLhoptMetricsHeader;

  // The fixed yardstick (lhopt.yardstick): its row for a version is written
  // before that version's checkpoint, so a resumed run does not repeat it.
  LhoptYardstick yardstick(spec, *device);
  std::ofstream yardstick_csv;
  double yardstick_seconds = 0;
  std::vector<double> yardstick_scores;
  auto run_yardstick = [&]() -> absl::Status {
    if (!yardstick.Due(job.version())) return absl::OkStatus();
    auto r = yardstick.Evaluate(*job.policy(), job.normalizer(), job.version());
    if (!r.ok()) return r.status();
    yardstick_csv << YardstickCsvRow(*r) << std::flush;
    yardstick_seconds += r->wall_seconds;
    yardstick_scores.push_back(r->score);
    std::string per_task;
    for (double v : r->task_score) absl::StrAppend(&per_task, absl::StrFormat(" %+.3f", v));
    std::fprintf(stderr, "lhopt yardstick @%lld: score %+.4f (per task:%s), %lld/%lld diverged, %.1f s\n",
                 (long long)r->iteration, r->score, per_task.c_str(), (long long)r->diverged,
                 (long long)r->runs, r->wall_seconds);
    return absl::OkStatus();
  };
  auto t0 = std::chrono::steady_clock::now(), ts = t0;
  auto seconds_so_far = [&] {
    return wall_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  if (yardstick.enabled()) {
    yardstick_csv.open(opt.out_dir + "/yardstick.csv",
                       summary.resumed_from > 0 ? std::ios::app : std::ios::trunc);
    if (summary.resumed_from == 0) {
      yardstick_csv << YardstickCsvHeader(spec);
      if (auto s = run_yardstick(); !s.ok()) return s;
    }
  }

  ProgressBar bar("lhopt", job.iterations(), opt.progress);
  bar.Update(job.version(), "");
  int64_t particle_steps = 0, ran = 0;
  while (!job.done() && (opt.stop_after < 0 || ran < opt.stop_after)) {
    if (!job.CanStart()) return absl::InternalError("LHOPT job cannot start a unit");
    LhoptUnit unit = job.Start();
    auto result = runner.Run(unit);
    if (!result.ok()) return result.status();
    particle_steps += result->inner_particle_steps;
    LhoptIterationRecord rec;
    auto outcome = job.Accept(*result, &rec);
    if (!outcome.ok()) return outcome.status();
    if (*outcome != LhoptAcceptOutcome::kUpdated) continue;
    auto now = std::chrono::steady_clock::now();
    double dt = std::chrono::duration<double>(now - ts).count();
    ts = now;
    metrics << LhoptMetricsColumns(rec.MetricsRow())
            << MetricsCsvTail(rec.inner_particle_steps / dt, seconds_so_far())
            << std::flush;  // followable while it runs
    ++ran;
    bar.Update(job.version(),
               absl::StrFormat("reward %+.3f len %.1f H %.2f KL %.4f VL %.3f", rec.mean_reward,
                               rec.mean_episode_length, rec.ppo.entropy, rec.ppo.approx_kl,
                               rec.ppo.value_loss));
    if (auto s = run_yardstick(); !s.ok()) return s;
    ts = std::chrono::steady_clock::now();  // the next rate leaves the yardstick out
    // Ctrl-C: the final checkpoint below is this iteration's.
    if (opt.stop && opt.stop->load()) {
      summary.stopped_early = !job.done();
      break;
    }
    int64_t every = spec.lhopt().checkpoint_every();
    if (every > 0 && job.version() % every == 0 && !job.done()) {
      PruneBaselineTables(job, runner, buffer, &tables);
      if (auto s = SaveCheckpoint(ckpt, spec, job, tables, buffer, seconds_so_far()); !s.ok())
        return s;
      // The latest policy as a controller file too, usable before the run ends.
      auto file = job.MakeControllerFile();
      if (!file.ok()) return file.status();
      if (auto s = SaveControllerFile(opt.out_dir + "/controller.lhopt", *file); !s.ok()) return s;
    }
  }
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& rewards = job.mean_rewards();
  bar.Finish(absl::StrFormat("reward %+.3f", rewards.empty() ? NAN : rewards.back()));
  metrics.close();
  PruneBaselineTables(job, runner, buffer, &tables);
  if (auto s = SaveCheckpoint(ckpt, spec, job, tables, buffer, wall_before + wall); !s.ok())
    return s;
  summary.checkpoint_path = ckpt;

  summary.iterations = job.version();
  summary.total_iterations = job.iterations();
  summary.iterations_this_run = summary.iterations - summary.resumed_from;
  std::tie(summary.reward_start, summary.reward_end) = StartEndMeans(rewards, 5);
  summary.wall_seconds = wall;
  summary.total_wall_seconds = wall_before + wall;
  summary.inner_particle_steps_per_second = particle_steps / std::max(wall, 1e-9);
  summary.controller_path = opt.out_dir + "/controller.lhopt";
  auto file = job.MakeControllerFile();
  if (!file.ok()) return file.status();
  if (auto s = SaveControllerFile(summary.controller_path, *file); !s.ok()) return s;

  PlotLhoptRewards(opt.out_dir, spec.name());  // rewards.png (needs gnuplot)
  if (yardstick.enabled()) {
    yardstick_csv.close();
    const size_t T = spec.lhopt().tasks_size();
    std::string gp = absl::StrCat(
        "set terminal pngcairo size 1000,600 noenhanced\nset output '", opt.out_dir,
        "/yardstick.png'\nset datafile separator ','\nset key top left\n",
        "set title 'LHOPT ", spec.name(), ": fixed yardstick (greedy policy, held-out instances)'\n",
        "set xlabel 'PPO iteration'\nset ylabel 'log speed-up over CIAO constant (reference fit)'\n",
        "plot '", opt.out_dir, "/yardstick.csv' using 1:2 with linespoints lw 3 title 'mean'");
    for (size_t t = 0; t < T; ++t)
      absl::StrAppend(&gp, ", '' using 1:", 3 + t, " with linespoints title columnheader(", 3 + t, ")");
    RunGnuplot(opt.out_dir + "/yardstick.gp", gp + "\n");
  }
  // What this run did and where the job stands in all (a resumed run's
  // iterations and wall_seconds count every run of the job), as ELO's.
  std::string json = absl::StrCat(
      "{\n  \"job\": ", JsonString(spec.name()), ",\n  \"iterations\": ", summary.iterations,
      ",\n  \"total_iterations\": ", summary.total_iterations,
      ",\n  \"resumed_from\": ", summary.resumed_from,
      ",\n  \"iterations_this_run\": ", summary.iterations_this_run,
      ",\n  \"reward_start\": ", JsonNumber(summary.reward_start),
      ",\n  \"reward_end\": ", JsonNumber(summary.reward_end),
      ",\n  \"baseline_runs\": ", runner.baseline_runs(),
      ",\n  \"baseline_memo_hits\": ", runner.baseline_memo_hits(),
      ",\n  \"inner_particle_steps_per_second\": ", JsonNumber(summary.inner_particle_steps_per_second),
      ",\n  \"wall_seconds\": ", JsonNumber(summary.total_wall_seconds),
      ",\n  \"wall_seconds_this_run\": ", JsonNumber(wall),
      ",\n  \"yardstick_seconds\": ", JsonNumber(yardstick_seconds),
      ",\n  \"yardstick_first\": ", JsonNumber(yardstick_scores.empty() ? NAN : yardstick_scores.front()),
      ",\n  \"yardstick_last\": ", JsonNumber(yardstick_scores.empty() ? NAN : yardstick_scores.back()),
      ",\n  \"stopped_early\": ", summary.stopped_early ? "true" : "false",
      ",\n  \"controller\": ", JsonString(summary.controller_path), "\n}\n");
  if (auto s = WriteFileAtomically(opt.out_dir + "/summary.json", json); !s.ok()) return s;
  return summary;
}

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
