#include "cli/local_mode.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <numeric>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/checkpoint.h"
#include "common/json.h"
#include "common/optimizer_file.h"
#include "common/progress.h"
#include "buffer_server/rocks_replay_buffer.h"
#include "common/replay_buffer.h"
#include "common/task.h"
#include "learner/elo_job.h"
#include "worker/elo_shard.h"

namespace lopt {
namespace {

// Where table k's items live in the checkpoint ("buffer/" for the first, as
// before task distributions, "buffer/g<k>/" for the others).
std::string BufferPrefix(size_t k) { return k == 0 ? "buffer/" : absl::StrCat("buffer/g", k, "/"); }

// One file holds the job's, every shard's unroller's and the buffer's state.
absl::Status SaveCheckpoint(const std::string& path, const v1::JobSpec& spec, const EloJob& job,
                            const std::vector<std::unique_ptr<EloShard>>& unrollers,
                            ReplayBuffer& buffer, const std::vector<std::string>& tables) {
  NamedTensors all;
  all.emplace_back("job", StringTensor(spec.SerializeAsString()));
  for (auto& [k, v] : job.SaveState()) all.emplace_back("learner/" + k, v);
  for (size_t s = 0; s < unrollers.size(); ++s)
    for (auto& [k, v] : unrollers[s]->SaveState())
      all.emplace_back(absl::StrCat("worker/", s, "/", k), v);
  for (size_t t = 0; t < tables.size(); ++t) {
    auto items = buffer.Items(tables[t]);
    if (!items.ok()) return items.status();
    const std::string prefix = BufferPrefix(t);
    all.emplace_back(prefix + "size", torch::tensor(int64_t(items->size()), torch::kInt64));
    for (size_t i = 0; i < items->size(); ++i)
      for (auto& [k, v] : (*items)[i]) all.emplace_back(absl::StrCat(prefix, i, "/", k), v);
  }
  auto bytes = SerializeTensors(all);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

NamedTensors WithPrefix(const NamedTensors& all, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), v);
  return out;
}

double MeanOf(const std::vector<double>& v, size_t begin, size_t end) {
  if (end <= begin) return NAN;
  return std::accumulate(v.begin() + begin, v.begin() + end, 0.0) / double(end - begin);
}

}  // namespace

absl::StatusOr<TrainSummary> RunLocalTraining(const v1::JobSpec& spec,
                                              const LocalTrainOptions& opt) {
  if (absl::Status s = MakeDirs(opt.out_dir); !s.ok()) return s;
  auto device = ParseDevice(opt.device);
  if (!device.ok()) return device.status();
  // The shards share their tasks (and so the data), built once.
  TaskCache tasks;
  const TaskFactory make_task = CachingTaskFactory(&tasks, *device);

  // The learner's job core and one unroller a shard, as the services wire
  // them, with the shards run one after another.
  // The replay buffer in RocksDB under the run's directory, as the buffer
  // server keeps it; the checkpoint holds its items, so a resume rewrites the
  // table from there (the store may hold puts made after the checkpoint).
  // So its writes need not be synced to disk one by one (an fsync a push).
  auto store = RocksReplayBuffer::Open(opt.out_dir + "/buffer", /*sync_writes=*/false);
  if (!store.ok()) return store.status();
  ReplayBuffer& buffer = **store;
  EloJob job(spec);
  std::vector<std::unique_ptr<EloShard>> unrollers;
  for (int32_t s = 0; s < job.num_shards(); ++s) {
    auto shard = EloShard::Create(spec, make_task, &buffer, spec.name() + "/", ShardSeed(spec, s));
    if (!shard.ok()) return shard.status();
    unrollers.push_back(*std::move(shard));
  }
  // Every shard's group k uses table k.
  const std::vector<std::string> tables = unrollers[0]->buffer_tables();
  for (const auto& table : tables)
    if (auto s = buffer.DeleteTable(table); !s.ok() && !absl::IsNotFound(s)) return s;

  const std::string ckpt = opt.out_dir + "/checkpoint.pt";
  TrainSummary summary;
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
    for (size_t s = 0; s < unrollers.size(); ++s)
      if (auto st = unrollers[s]->LoadState(WithPrefix(*all, absl::StrCat("worker/", s, "/")));
          !st.ok())
        return st;
    for (size_t t = 0; t < tables.size(); ++t) {
      const std::string prefix = BufferPrefix(t);
      auto size = Find(*all, prefix + "size");
      if (!size.ok()) return size.status();
      const int64_t n = size->item<int64_t>();
      for (int64_t i = 0; i < n; ++i)
        if (auto st = buffer.Put(tables[t], spec.elo().buffer().capacity(),
                                 WithPrefix(*all, absl::StrCat(prefix, i, "/")));
            !st.ok())
          return st;
    }
    summary.resumed_from = job.outer_step();
  }

  std::ofstream metrics(opt.out_dir + "/metrics.csv",
                        summary.resumed_from > 0 ? std::ios::app : std::ios::trunc);
  if (summary.resumed_from == 0)
    metrics << "outer_step,meta_loss,task_loss,bc_loss,alpha,outer_lr,fresh_starts,restores,"
               "pushes,particle_steps_per_s,wall_s\n";

  const int64_t T = job.total_steps();
  ProgressBar bar("meta-train", T, opt.progress);
  auto t0 = std::chrono::steady_clock::now();
  int64_t particle_steps = 0;
  double rate = 0;
  int64_t ran = 0;
  auto ts = std::chrono::steady_clock::now();
  while (!job.done() && (opt.stop_after < 0 || ran < opt.stop_after)) {
    for (int32_t s = 0; s < job.num_shards() && !job.done(); ++s) {
      if (!job.CanStart(s)) continue;
      EloUnit unit = job.Start(s);
      TruncationResult r = unrollers[s]->RunTruncation(unit.theta, unit.alpha, unit.truncation);
      // Local mode's buffer is a RocksDB beside the checkpoint: a failing one
      // (a full disk, say) stops the run, which resumes from its checkpoint.
      if (r.buffer_failures > 0)
        return absl::UnavailableError(absl::StrCat(
            "the replay buffer in ", opt.out_dir, "/buffer failed (", r.buffer_error,
            "); free the space or fix the directory and run the same command to resume"));
      particle_steps += r.particle_steps;
      EloShardResult res{s, unit.theta_version, r.grad, r.meta_loss, r.task_loss, r.bc_loss,
                         r.particle_steps, r.fresh_starts, r.restores, r.pushes};
      EloStepRecord rec;
      auto outcome = job.Accept(res, &rec);
      if (!outcome.ok()) return outcome.status();
      if (*outcome != EloAcceptOutcome::kStepApplied) continue;
      auto now = std::chrono::steady_clock::now();
      double dt = std::chrono::duration<double>(now - ts).count();
      ts = now;
      const double elapsed = std::chrono::duration<double>(now - t0).count();
      rate = particle_steps / elapsed;
      metrics << absl::StrFormat("%d,%.6g,%.6g,%.6g,%.4f,%.6g,%d,%d,%d,%.1f,%.3f\n",
                                 rec.outer_step, rec.meta_loss, rec.task_loss, rec.bc_loss,
                                 rec.alpha, rec.outer_lr, rec.fresh_starts, rec.restores,
                                 rec.pushes, rec.particle_steps / dt, elapsed)
              << std::flush;  // followable while it runs
      ++ran;
      bar.Update(job.outer_step(),
                 absl::StrFormat("meta-loss %.4f task %.3f a=%.2f %.0f particle-steps/s",
                                 rec.meta_loss, rec.task_loss, rec.alpha, rate));
      int64_t every = spec.budget().checkpoint_every();
      if (every > 0 && job.outer_step() % every == 0 && !job.done()) {
        if (auto st = SaveCheckpoint(ckpt, spec, job, unrollers, buffer, tables); !st.ok())
          return st;
      }
      if (opt.stop_after >= 0 && ran >= opt.stop_after) break;
      if (opt.stop && opt.stop->load()) break;
    }
    if (opt.stop && opt.stop->load()) {
      summary.stopped_early = !job.done();
      break;
    }
  }
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const EloLearner& learner = job.learner();
  bar.Finish(absl::StrFormat("meta-loss %.4f, %.0f particle-steps/s", learner.last_meta_loss(), rate));
  metrics.close();
  if (auto s = SaveCheckpoint(ckpt, spec, job, unrollers, buffer, tables); !s.ok()) return s;

  summary.outer_steps = learner.outer_step();
  const std::vector<double>& meta = job.meta_losses();
  const std::vector<double>& tl = job.task_losses();
  size_t n = meta.size(), w = std::min<size_t>(10, n);
  summary.meta_loss_start = MeanOf(meta, 0, w);
  summary.meta_loss_end = MeanOf(meta, n - w, n);
  summary.task_loss_start = MeanOf(tl, 0, w);
  summary.task_loss_end = MeanOf(tl, n - w, n);
  summary.particle_steps_per_second = rate;
  summary.wall_seconds = wall;
  summary.optimizer_path = opt.out_dir + "/optimizer.lopt";
  if (auto s = SaveOptimizerFile(summary.optimizer_path, learner.MakeOptimizerFile(),
                                 learner.theta());
      !s.ok())
    return s;

  std::string json = absl::StrCat(
      "{\n  \"job\": ", JsonString(spec.name()),
      ",\n  \"outer_steps\": ", summary.outer_steps,
      ",\n  \"resumed_from\": ", summary.resumed_from,
      ",\n  \"meta_loss_start\": ", JsonNumber(summary.meta_loss_start),
      ",\n  \"meta_loss_end\": ", JsonNumber(summary.meta_loss_end),
      ",\n  \"task_loss_start\": ", JsonNumber(summary.task_loss_start),
      ",\n  \"task_loss_end\": ", JsonNumber(summary.task_loss_end),
      ",\n  \"inner_particle_steps_per_second\": ", JsonNumber(rate),
      ",\n  \"wall_seconds\": ", JsonNumber(wall),
      ",\n  \"stopped_early\": ", summary.stopped_early ? "true" : "false",
      ",\n  \"optimizer\": ", JsonString(summary.optimizer_path), "\n}\n");
  if (auto s = WriteFileAtomically(opt.out_dir + "/summary.json", json); !s.ok()) return s;
  return summary;
}

absl::StatusOr<std::string> WriteMetaTestReport(const MetaTestReport& report,
                                                const std::string& dir) {
  if (absl::Status s = MakeDirs(dir); !s.ok()) return s;
  // report.json
  std::string json = absl::StrCat("{\n  \"task\": ", JsonString(report.task),
                                  ",\n  \"steps\": ", report.steps,
                                  ",\n  \"final_window\": ", report.final_window,
                                  ",\n  \"runs\": [");
  for (size_t i = 0; i < report.runs.size(); ++i) {
    const auto& r = report.runs[i];
    absl::StrAppend(&json, i ? ",\n" : "\n", "    {\"optimizer\": ", JsonString(r.optimizer),
                    ", \"lr\": ", r.optimizer == "adamw" ? JsonNumber(r.lr) : "null",
                    ", \"seed\": ", r.seed,
                    ", \"final_train_loss\": ", JsonNumber(r.final_train_loss),
                    ", \"test_loss\": ", JsonNumber(r.test_loss),
                    ", \"test_accuracy\": ", JsonNumber(r.test_accuracy),
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
    std::string label = r.optimizer == "adamw" ? absl::StrFormat("adamw lr=%g", r.lr) : r.optimizer;
    auto [it, inserted] = index.emplace(label, groups.size());
    if (inserted) groups.push_back({label, {}});
    groups[it->second].runs.push_back(&r);
  }

  // curves.csv (long form) and curves.dat (mean over seeds, for gnuplot).
  std::string csv = "optimizer,lr,seed,step,train_loss\n";
  for (const auto& r : report.runs)
    for (size_t k = 0; k < r.curve.size(); ++k)
      absl::StrAppend(&csv, r.optimizer, ",", r.optimizer == "adamw" ? absl::StrCat(r.lr) : "",
                      ",", r.seed, ",", (k + 1) * report.record_every, ",",
                      absl::StrFormat("%.6g", r.curve[k]), "\n");
  if (auto s = WriteFileAtomically(dir + "/curves.csv", csv); !s.ok()) return s;
  if (report.test_every > 0) {  // test_curves.csv: the test split along the run
    std::string tcsv = "optimizer,lr,seed,step,test_loss,test_accuracy\n";
    for (const auto& r : report.runs)
      for (size_t k = 0; k < r.test_curve.size(); ++k)
        absl::StrAppend(&tcsv, r.optimizer, ",", r.optimizer == "adamw" ? absl::StrCat(r.lr) : "",
                        ",", r.seed, ",", (k + 1) * report.test_every, ",",
                        absl::StrFormat("%.6g,%.6g", r.test_curve[k], r.test_acc_curve[k]), "\n");
    if (auto s = WriteFileAtomically(dir + "/test_curves.csv", tcsv); !s.ok()) return s;
  }
  std::string dat = "step";
  for (const auto& g : groups) absl::StrAppend(&dat, "\t\"", g.label, "\"");
  dat += "\n";
  size_t len = report.runs.empty() ? 0 : report.runs[0].curve.size();
  for (size_t k = 0; k < len; ++k) {
    absl::StrAppend(&dat, (k + 1) * report.record_every);
    for (const auto& g : groups) {
      double m = 0;
      for (const auto* r : g.runs) m += r->curve[k];
      m /= g.runs.size();
      absl::StrAppend(&dat, "\t", std::isfinite(m) ? absl::StrFormat("%.6g", m) : "NaN");
    }
    dat += "\n";
  }
  if (auto s = WriteFileAtomically(dir + "/curves.dat", dat); !s.ok()) return s;
  std::string gp = absl::StrCat(
      "set terminal pngcairo size 1100,700 noenhanced\nset output '", dir, "/curves.png'\n",
      "set title 'meta-test on ", report.task, ": training loss (mean over seeds)'\n",
      "set xlabel 'inner step'\nset ylabel 'training loss'\nset logscale y\nset key outside right\n",
      "set datafile missing 'NaN'\nplot ");
  // Learned optimizers thick and dark, AdamW's grid in colours.
  static const char* kGridColors[8] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a",
                                       "#66a61e", "#e6ab02", "#a6761d", "#1f78b4"};
  for (size_t i = 0; i < groups.size(); ++i) {
    bool lo = groups[i].runs[0]->optimizer != "adamw";
    absl::StrAppend(&gp, i ? ", " : "", "'", dir, "/curves.dat' using 1:", i + 2,
                    " with lines ",
                    lo ? absl::StrCat("lw 4 dt ", i + 1, " lc rgb '", i == 0 ? "#000000" : "#777777", "'")
                       : absl::StrCat("lw 2 lc rgb '", kGridColors[i % 8], "'"),
                    " title columnheader(", i + 2, ")");
  }
  gp += "\n";
  if (auto s = WriteFileAtomically(dir + "/curves.gp", gp); !s.ok()) return s;
  std::string cmd = absl::StrCat("gnuplot '", dir, "/curves.gp' 2>/dev/null");
  bool plotted = std::system(cmd.c_str()) == 0;

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
  absl::StrAppend(&table, absl::StrFormat("%-18s %-22s %-22s %-16s\n", "optimizer",
                                          "final train loss", "test loss", "test accuracy"));
  const Group* best_adamw = nullptr;
  double best = INFINITY;
  for (const auto& g : groups) {
    auto [fl, fls] = stats(g.runs, [](const MetaTestRun& r) { return r.final_train_loss; });
    auto [tl, tls] = stats(g.runs, [](const MetaTestRun& r) { return r.test_loss; });
    auto [ta, tas] = stats(g.runs, [](const MetaTestRun& r) { return r.test_accuracy; });
    absl::StrAppend(&table, absl::StrFormat("%-18s %8.4f +- %-9.4f %8.4f +- %-9.4f %6.2f%% +- %.2f\n",
                                            g.label, fl, fls, tl, tls, 100 * ta, 100 * tas));
    if (g.runs[0]->optimizer == "adamw" && fl < best) {
      best = fl;
      best_adamw = &g;
    }
  }
  if (best_adamw) absl::StrAppend(&table, "best AdamW of the grid (final train loss): ", best_adamw->label, "\n");
  absl::StrAppend(&table, "wrote ", dir, "/report.json, curves.csv",
                  plotted ? ", curves.png" : " (gnuplot not found: no curves.png)", "\n");
  if (auto s = WriteFileAtomically(dir + "/table.txt", table); !s.ok()) return s;
  return table;
}

}  // namespace lopt
