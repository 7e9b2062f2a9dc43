// LHOPT's local mode: the LhoptJob learner core and an in-process
// LhoptEpisodeRunner with an in-memory buffer, wired in one process with
// checkpoints it resumes from.
#include "kinds/lhopt/lhopt_local.h"

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
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_yardstick.h"
#include "common/util/checkpoint.h"
#include "common/util/json.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "kinds/run_clock.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

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
  auto saved = ReadLocalCheckpoint(ckpt, spec, opt.fresh);
  if (!saved.ok()) return saved.status();
  if (saved->has_value()) {
    const NamedTensors* all = &**saved;
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

}  // namespace lopt
