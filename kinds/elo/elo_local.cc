// ELO's local mode: the learner's EloJob, one unroller a shard and the
// run's replay buffer wired together in one process, with checkpoints it
// resumes from.
#include "kinds/elo/elo_local.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <tuple>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/elo_shard.h"
#include "common/elo/optimizer_file.h"
#include "common/elo/replay_buffer.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/json.h"
#include "common/util/progress.h"
#include "common/util/run_files.h"
#include "kinds/run_clock.h"
#include "learner/elo_job.h"

namespace lopt {
namespace {

// Where table k's items live in the checkpoint ("buffer/" for the first, as
// before task distributions, "buffer/g<k>/" for the others).
std::string BufferPrefix(size_t k) { return k == 0 ? "buffer/" : absl::StrCat("buffer/g", k, "/"); }

// One file holds the job's, every shard's unroller's and the buffer's state.
absl::Status SaveCheckpoint(const std::string& path, const v1::JobSpec& spec, const EloJob& job,
                            const std::vector<std::unique_ptr<EloShard>>& unrollers,
                            ReplayBuffer& buffer, const std::vector<std::string>& tables,
                            double wall_seconds) {
  NamedTensors all;
  all.emplace_back("job", StringTensor(spec.SerializeAsString()));
  AddRunWallSeconds(wall_seconds, &all);
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

}  // namespace

absl::StatusOr<TrainSummary> RunEloLocalTraining(const v1::JobSpec& spec,
                                                 const LocalTrainOptions& opt) {
  if (absl::Status s = MakeDirs(opt.out_dir); !s.ok()) return s;
  auto device = ParseDevice(opt.device);
  if (!device.ok()) return device.status();
  // The shards share their tasks (and so the data), built once.
  TaskCache tasks;
  const TaskFactory make_task = CachingTaskFactory(&tasks, *device);

  // The learner's job core and one unroller a shard, as the services wire
  // them, with the shards run one after another.
  // The replay buffer in the run's directory (`lopt train`: RocksDB, as the
  // buffer server keeps it); the checkpoint holds its items, so a resume
  // rewrites the table from there (the store may hold puts made after the
  // checkpoint).
  absl::StatusOr<std::unique_ptr<ReplayBuffer>> store =
      opt.open_buffer ? opt.open_buffer(opt.out_dir + "/buffer")
                      : std::unique_ptr<ReplayBuffer>(std::make_unique<InMemoryReplayBuffer>());
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
  const std::string optimizer_path = opt.out_dir + "/optimizer.lopt";
  // θ of the learner's current step, with its provenance: at each checkpoint and at the end.
  auto save_optimizer = [&] {
    return SaveOptimizerFile(optimizer_path, job.learner().MakeOptimizerFile(), job.learner().theta());
  };
  const std::string metrics_path = opt.out_dir + "/metrics.csv";
  TrainSummary summary;
  double wall_before = 0;  // meta-training seconds before this run (resumed)
  auto saved = ReadLocalCheckpoint(ckpt, spec, opt.fresh);
  if (!saved.ok()) return saved.status();
  if (saved->has_value()) {
    const NamedTensors* all = &**saved;
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
    // metrics.csv's row s is outer step s (0-based): the rows a crash left
    // after the checkpoint are recomputed, not repeated.
    if (auto s = DropCsvRowsFrom(metrics_path, summary.resumed_from); !s.ok()) return s;
    wall_before = RunWallSecondsBefore(*all, metrics_path);
    std::fprintf(stderr,
                 "lopt train: resuming %s from its checkpoint at outer step %lld of %lld "
                 "(%s of meta-training so far); --fresh starts over\n",
                 opt.out_dir.c_str(), (long long)summary.resumed_from,
                 (long long)job.total_steps(), FormatDuration(wall_before).c_str());
  }
  if (auto s = WriteJobText(opt.out_dir, spec); !s.ok()) return s;

  const bool append = summary.resumed_from > 0 && FileExists(metrics_path);
  std::ofstream metrics(metrics_path, append ? std::ios::app : std::ios::trunc);
  if (!append) metrics << kEloMetricsHeader;

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
      metrics << FormatEloMetricsRow({rec.outer_step, rec.meta_loss, rec.task_loss, rec.bc_loss,
                                      rec.alpha, rec.outer_lr, rec.fresh_starts, rec.restores,
                                      rec.pushes, rec.particle_steps / dt, wall_before + elapsed})
              << std::flush;  // followable while it runs
      ++ran;
      bar.Update(job.outer_step(),
                 absl::StrFormat("meta-loss %.4f task %.3f a=%.2f %.0f particle-steps/s",
                                 rec.meta_loss, rec.task_loss, rec.alpha, rate));
      int64_t every = spec.budget().checkpoint_every();
      if (every > 0 && job.outer_step() % every == 0 && !job.done()) {
        const double upto =
            wall_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (auto st = SaveCheckpoint(ckpt, spec, job, unrollers, buffer, tables, upto); !st.ok())
          return st;
        // And the optimizer of that step, as LHOPT's runs write their controller: a run killed
        // before its end (kill -9, out of memory, a second Ctrl-C) leaves a usable file.
        if (auto st = save_optimizer(); !st.ok()) return st;
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
  if (auto s = SaveCheckpoint(ckpt, spec, job, unrollers, buffer, tables, wall_before + wall);
      !s.ok())
    return s;
  summary.checkpoint_path = ckpt;

  summary.outer_steps = learner.outer_step();
  summary.total_steps = job.total_steps();
  summary.outer_steps_this_run = summary.outer_steps - summary.resumed_from;
  std::tie(summary.meta_loss_start, summary.meta_loss_end) = StartEndMeans(job.meta_losses(), 10);
  std::tie(summary.task_loss_start, summary.task_loss_end) = StartEndMeans(job.task_losses(), 10);
  summary.particle_steps_per_second = rate;
  summary.alpha = learner.Alpha();
  summary.wall_seconds = wall;
  summary.total_wall_seconds = wall_before + wall;
  summary.optimizer_path = optimizer_path;
  if (auto s = save_optimizer(); !s.ok()) return s;

  PlotEloTraining(opt.out_dir, spec.name());  // training.png (needs gnuplot)
  // What this run did and where the job stands in all (a resumed run's
  // outer_steps and wall_seconds count every run of the job).
  std::string json = absl::StrCat(
      "{\n  \"job\": ", JsonString(spec.name()),
      ",\n  \"outer_steps\": ", summary.outer_steps,
      ",\n  \"total_steps\": ", summary.total_steps,
      ",\n  \"resumed_from\": ", summary.resumed_from,
      ",\n  \"outer_steps_this_run\": ", summary.outer_steps_this_run,
      ",\n  \"meta_loss_start\": ", JsonNumber(summary.meta_loss_start),
      ",\n  \"meta_loss_end\": ", JsonNumber(summary.meta_loss_end),
      ",\n  \"task_loss_start\": ", JsonNumber(summary.task_loss_start),
      ",\n  \"task_loss_end\": ", JsonNumber(summary.task_loss_end),
      ",\n  \"inner_particle_steps_per_second\": ", JsonNumber(rate),
      ",\n  \"wall_seconds\": ", JsonNumber(summary.total_wall_seconds),
      ",\n  \"wall_seconds_this_run\": ", JsonNumber(wall),
      ",\n  \"stopped_early\": ", summary.stopped_early ? "true" : "false",
      ",\n  \"alpha\": ", JsonNumber(summary.alpha),
      ",\n  \"optimizer\": ", JsonString(summary.optimizer_path), "\n}\n");
  if (auto s = WriteFileAtomically(opt.out_dir + "/summary.json", json); !s.ok()) return s;
  return summary;
}

}  // namespace lopt
