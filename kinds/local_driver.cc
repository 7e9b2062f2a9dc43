#include "kinds/local_driver.h"

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <map>
#include <tuple>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/replay_buffer.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/checkpoint.h"
#include "common/util/files.h"
#include "common/util/json.h"
#include "common/util/progress.h"
#include "common/util/remove_tree.h"
#include "common/util/run_files.h"
#include "kinds/run_clock.h"

namespace lopt {
namespace {

// The run's replay buffer (in memory, or the store options.open_buffer
// opens), knowing the tables written to it (and the capacity they were
// written with): its checkpoint holds their items.
class TableKeepingBuffer : public ReplayBuffer {
 public:
  explicit TableKeepingBuffer(std::unique_ptr<ReplayBuffer> store) : store_(std::move(store)) {}
  absl::Status Put(const std::string& table, int64_t capacity, NamedTensors item) override {
    absl::Status s = store_->Put(table, capacity, std::move(item));
    if (s.ok()) tables_[table] = capacity;
    return s;
  }
  absl::StatusOr<NamedTensors> Sample(const std::string& table, double u) override {
    return store_->Sample(table, u);
  }
  absl::StatusOr<int64_t> Size(const std::string& table) override { return store_->Size(table); }
  absl::StatusOr<std::vector<NamedTensors>> Items(const std::string& table) override {
    return store_->Items(table);
  }
  absl::Status DeleteTable(const std::string& table) override {
    tables_.erase(table);
    return store_->DeleteTable(table);
  }
  const std::map<std::string, int64_t>& tables() const { return tables_; }

 private:
  std::unique_ptr<ReplayBuffer> store_;
  std::map<std::string, int64_t> tables_;  // name -> capacity
};

// The run's buffer: options.open_buffer's store in <out>/buffer, emptied
// first (it can hold items of a run that was killed after its checkpoint,
// or of one --fresh starts over; the checkpoint holds every item a resume
// needs), else one in memory.
absl::StatusOr<std::shared_ptr<TableKeepingBuffer>> OpenRunBuffer(const LocalTrainOptions& opt) {
  if (!opt.open_buffer)
    return std::make_shared<TableKeepingBuffer>(std::make_unique<InMemoryReplayBuffer>());
  const std::string dir = opt.out_dir + "/buffer";
  if (absl::Status st = RemoveTree(dir); !st.ok())
    return absl::Status(st.code(), absl::StrCat("cannot empty the replay buffer: ", st.message()));
  auto store = opt.open_buffer(dir);
  if (!store.ok()) return store.status();
  return std::make_shared<TableKeepingBuffer>(*std::move(store));
}

using Runners = std::map<v1::Algorithm, std::unique_ptr<UnitRunner>>;

constexpr char kTableKey[] = "@table";
constexpr char kCapacityKey[] = "@capacity";

// The checkpoint: the spec, the training time, the core's state, the
// runners' and the buffer's live tables, item by item ("buffer/<n>/" with
// its table's name).
absl::Status SaveCheckpoint(const std::string& path, const v1::JobSpec& spec, const JobCore& core,
                            const Runners& runners, TableKeepingBuffer& buffer,
                            double wall_seconds) {
  std::vector<std::string> dead;
  for (const auto& [table, capacity] : buffer.tables())
    if (!core.BufferTableLive(table)) dead.push_back(table);
  for (const std::string& table : dead) (void)buffer.DeleteTable(table);
  NamedTensors all;
  all.emplace_back("job", StringTensor(spec.SerializeAsString()));
  AddRunWallSeconds(wall_seconds, &all);
  for (auto& [k, v] : core.SaveState()) all.emplace_back("learner/" + k, v);
  for (const auto& [unit_kind, runner] : runners)
    for (auto& [k, v] : runner->SaveState()) all.emplace_back(LocalRunnerPrefix(unit_kind) + k, v);
  std::vector<LocalBufferTable> tables;
  for (const auto& [table, capacity] : buffer.tables()) {
    auto items = buffer.Items(table);
    if (!items.ok()) return items.status();
    tables.push_back({table, capacity, *std::move(items)});
  }
  AddLocalBufferTables(tables, &all);
  auto bytes = SerializeTensors(all);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(path, *bytes);
}

absl::Status LoadCheckpoint(const NamedTensors& all, JobCore& core, Runners& runners,
                            ReplayBuffer& buffer) {
  if (auto s = core.LoadState(WithPrefix(all, "learner/")); !s.ok()) return s;
  for (auto& [unit_kind, runner] : runners)
    if (auto s = runner->LoadState(WithPrefix(all, LocalRunnerPrefix(unit_kind))); !s.ok()) return s;
  auto size = Find(all, "buffer/size");
  if (!size.ok()) return size.status();
  const int64_t n = size->item<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    NamedTensors item = WithPrefix(all, absl::StrCat("buffer/", i, "/"));
    auto table = Find(item, kTableKey);
    if (!table.ok()) return table.status();
    auto capacity = Find(item, kCapacityKey);
    const int64_t cap = capacity.ok() ? capacity->item<int64_t>() : 1;
    const std::string name = TensorString(*table);
    item.erase(std::remove_if(item.begin(), item.end(),
                              [](const auto& kv) { return kv.first.rfind('@', 0) == 0; }),
               item.end());
    if (auto s = buffer.Put(name, cap, std::move(item)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

std::string LocalRunnerPrefix(v1::Algorithm unit_kind) {
  return absl::StrCat("runner/", v1::Algorithm_Name(unit_kind), "/");
}

void AddLocalBufferTables(const std::vector<LocalBufferTable>& tables, NamedTensors* all) {
  int64_t n = 0;
  for (const LocalBufferTable& table : tables)
    for (const NamedTensors& item : table.items) {
      const std::string prefix = absl::StrCat("buffer/", n, "/");
      all->emplace_back(prefix + kTableKey, StringTensor(table.name));
      all->emplace_back(prefix + kCapacityKey, torch::tensor(table.capacity, torch::kInt64));
      for (const auto& [k, v] : item) all->emplace_back(prefix + k, v);
      ++n;
    }
  all->emplace_back("buffer/size", torch::tensor(n, torch::kInt64));
}

namespace {

// `tensors` as the other side of the wire receives them: copies, bit for bit.
absl::StatusOr<NamedTensors> OverTheWire(const NamedTensors& tensors) {
  EncodedItem item = EncodeItem(tensors);
  return DecodeItem(item.tensors, item.payload);
}

}  // namespace

absl::StatusOr<LocalRunSummary> RunLocal(const JobKind& kind, const v1::JobSpec& spec,
                                         const LocalTrainOptions& opt) {
  if (absl::Status s = MakeDirs(opt.out_dir); !s.ok()) return s;
  const std::string& dir = opt.out_dir;
  // The kind's parts, as the learner and a worker make them; the runners
  // keep every shard (a worker keeps a few: here they are all the job's).
  std::unique_ptr<JobCore> core = kind.MakeCore(spec, JobCoreOptions{});
  const std::string ckpt = dir + "/checkpoint.pt";
  auto saved = ReadLocalCheckpoint(ckpt, spec, opt.fresh);
  if (!saved.ok()) return saved.status();
  auto opened = OpenRunBuffer(opt);
  if (!opened.ok()) return opened.status();
  std::shared_ptr<TableKeepingBuffer> buffer = *std::move(opened);
  UnitRunnerEnv env;
  env.device = opt.device;
  env.max_cached_shards = std::max(env.max_cached_shards, core->NumShards());
  env.buffer = [buffer](const std::string&) -> std::shared_ptr<ReplayBuffer> { return buffer; };
  Runners runners;
  for (v1::Algorithm u : kind.unit_kinds()) runners[u] = kind.MakeRunner(u, env);

  LocalRunSummary summary;
  summary.checkpoint_path = ckpt;
  summary.trained_file = dir + "/" + core->TrainedFileName(false);
  double wall_before = 0;  // training seconds before this run (resumed)
  if (saved->has_value()) {
    if (auto s = kind.UpgradeLocalCheckpoint(spec, &**saved); !s.ok()) return s;
    if (auto s = LoadCheckpoint(**saved, *core, runners, *buffer); !s.ok()) return s;
    summary.resumed_from = core->Step();
    // The rows a crash left after the checkpoint are made again, not repeated.
    for (const auto& [file, from] : core->RowsRedoneFrom())
      if (auto s = DropCsvRowsFrom(dir + "/" + file, from); !s.ok()) return s;
    wall_before = RunWallSecondsBefore(**saved, dir + "/metrics.csv");
    std::fprintf(stderr,
                 "lopt train: resuming %s from its checkpoint at %s %lld of %lld "
                 "(%s of training so far); --fresh starts over\n",
                 dir.c_str(), std::string(kind.step_name()).c_str(),
                 (long long)summary.resumed_from, (long long)core->Total(),
                 FormatDuration(wall_before).c_str());
  } else {
    // A fresh run: the rows of an earlier one go.
    for (const auto& [file, from] : core->RowsRedoneFrom()) std::remove((dir + "/" + file).c_str());
  }
  if (auto s = WriteJobText(dir, spec); !s.ok()) return s;

  auto t0 = std::chrono::steady_clock::now();
  auto seconds_this_run = [&] {
    return std::max(1e-9, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  auto seconds_so_far = [&] { return wall_before + seconds_this_run(); };
  auto write_trained = [&] { return core->WriteTrainedFile(summary.trained_file); };

  // One unit from the core, run as a worker runs it, and its verdict: the
  // unit and its result cross the "wire" as copies. The process is one
  // worker that owns every shard (its runners keep all their states); the
  // core says which shard runs next (ELO: the one with the fewest
  // truncations, from the checkpoint's counts on a resume).
  v1::WorkerInfo worker;
  worker.set_name("local");
  const auto connected = [](const std::string&) { return true; };
  uint64_t next_unit_id = 1;
  int64_t particle_steps = 0, since_update = 0;
  std::string progress;
  auto run_unit = [&]() -> absl::StatusOr<CoreVerdict> {
    std::optional<CoreUnit> cu = core->Start(worker, /*can_take_payload=*/true, connected);
    if (!cu) return absl::InternalError(absl::StrCat("the ", kind.name(), " job has no unit to run"));
    v1::WorkUnit& u = cu->unit;
    u.set_unit_id(next_unit_id++);
    u.set_job_id(spec.name());
    *u.mutable_job() = spec;
    u.set_buffer_prefix(spec.name() + "/");
    auto runner = runners.find(u.algorithm());
    if (runner == runners.end() || runner->second == nullptr)
      return absl::InternalError(absl::StrCat("no runner for ", v1::Algorithm_Name(u.algorithm())));
    absl::StatusOr<NamedTensors> payload = NamedTensors{};
    if (cu->has_payload) payload = OverTheWire(cu->payload);
    v1::WorkResult r;
    r.set_unit_id(u.unit_id());
    r.set_job_id(u.job_id());
    r.set_shard(u.shard());
    r.set_theta_version(u.theta_version());
    std::string result_bytes;
    if (absl::Status s = runner->second->Run(u, payload, [] { return false; }, &r, &result_bytes);
        !s.ok())
      return s;
    // Local mode's buffer is its own: a failing one (a full disk under the
    // store in the run directory, say) stops the run, which resumes from its
    // checkpoint.
    if (r.buffer_failures() > 0)
      return absl::UnavailableError(absl::StrCat(
          "the replay buffer", opt.open_buffer ? absl::StrCat(" in ", dir, "/buffer") : "",
          " failed (", r.buffer_error(), "); ",
          opt.open_buffer ? "free the space or fix the directory and " : "",
          "run the same command to resume"));
    absl::StatusOr<NamedTensors> result_payload = NamedTensors{};
    if (r.has_payload()) {
      std::vector<v1::TensorHeader> headers(r.payload().tensors().begin(),
                                            r.payload().tensors().end());
      result_payload = DecodeItem(headers, result_bytes);
    }
    CoreVerdict v = core->Accept(r, cu->token, result_payload);
    if (v.kind == CoreVerdict::kRejected)
      return absl::Status(v.error.code(), absl::StrCat("the ", kind.name(), " job refused a ",
                                                       v1::Algorithm_Name(u.algorithm()),
                                                       " result: ", v.error.message()));
    particle_steps += v.particle_steps;
    since_update += v.particle_steps;
    if (!v.note.empty()) std::fprintf(stderr, "%s", v.note.c_str());
    for (const RunFileRow& row : v.file_rows)
      if (auto s = AppendRunFileRow(dir, row); !s.ok()) return s;
    for (const RunFileWrite& f : v.file_writes)
      if (auto s = WriteRunFile(dir, f); !s.ok()) return s;
    return v;
  };

  ProgressBar bar(std::string(kind.name()), core->Total(), opt.progress);
  bar.Update(core->Step(), "");
  auto ts = std::chrono::steady_clock::now();  // since the last update
  int64_t ran = 0;
  while (!core->Done() && (opt.stop_after < 0 || ran < opt.stop_after)) {
    auto v = run_unit();
    if (!v.ok()) return v.status();
    if (v->kind != CoreVerdict::kUpdated) continue;
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    if (!v->metrics_row.empty())
      if (auto s = AppendRunFileRow(dir, {"metrics.csv", core->MetricsCsvHeader(),
                                          v->metrics_row + MetricsCsvTail(since_update / dt,
                                                                          seconds_so_far())});
          !s.ok())
        return s;
    if (auto s = WriteSnapshotIfDue(*core, dir); !s.ok()) return s;
    since_update = 0;
    ++ran;
    progress = absl::StrFormat("%s%s%.0f particle-steps/s", v->progress,
                               v->progress.empty() ? "" : " ", particle_steps / seconds_this_run());
    bar.Update(core->Step(), progress);
    // What the update owes (LHOPT's yardstick score of it) before it is saved.
    while (core->Owes() && !core->Done()) {
      auto owed = run_unit();
      if (!owed.ok()) return owed.status();
    }
    ts = std::chrono::steady_clock::now();  // the next rate leaves those units out
    if (opt.stop && opt.stop->load()) {
      summary.stopped_early = !core->Done();
      break;
    }
    const int64_t every = core->CheckpointEvery();
    if (every > 0 && core->Step() % every == 0 && !core->Done()) {
      if (auto s = SaveCheckpoint(ckpt, spec, *core, runners, *buffer, seconds_so_far()); !s.ok())
        return s;
      // The trained file of that update too: a run killed before its end
      // (kill -9, a second Ctrl-C) leaves a usable one.
      if (auto s = write_trained(); !s.ok()) return s;
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  bar.Finish(progress);
  if (auto s = SaveCheckpoint(ckpt, spec, *core, runners, *buffer, wall_before + wall); !s.ok())
    return s;
  if (auto s = write_trained(); !s.ok()) return s;
  kind.PlotMetrics(spec, dir);  // needs gnuplot

  summary.steps = core->Step();
  summary.total = core->Total();
  summary.steps_this_run = summary.steps - summary.resumed_from;
  summary.wall_seconds = wall;
  summary.total_wall_seconds = wall_before + wall;
  summary.particle_steps_per_second = particle_steps / std::max(wall, 1e-9);
  if (auto last = core->LastLosses()) std::tie(summary.meta_loss, summary.task_loss) = *last;

  // What this run did and where the job stands in all (a resumed run's
  // counts and wall_seconds take in every run of the job): the core's fields
  // (the first: the updates done), as the learner's summary.json has them.
  summary.fields = core->SummaryFields();
  const auto& fields = summary.fields;
  std::string json = absl::StrCat("{\n  \"job\": ", JsonString(spec.name()),
                                  ",\n  \"algorithm\": ", JsonString(core->algorithm()));
  for (const auto& [key, value] : fields) absl::StrAppend(&json, ",\n  ", JsonString(key), ": ", value);
  const std::string steps_key = fields.empty() ? "steps" : fields.front().first;
  absl::StrAppend(
      &json, ",\n  \"resumed_from\": ", summary.resumed_from,
      ",\n  ", JsonString(steps_key + "_this_run"), ": ", summary.steps_this_run,
      ",\n  \"inner_particle_steps_per_second\": ", JsonNumber(summary.particle_steps_per_second),
      ",\n  \"wall_seconds\": ", JsonNumber(summary.total_wall_seconds),
      ",\n  \"wall_seconds_this_run\": ", JsonNumber(wall),
      ",\n  \"stopped_early\": ", summary.stopped_early ? "true" : "false",
      ",\n  \"trained_file\": ", JsonString(core->TrainedFileName(false)), "\n}\n");
  if (auto s = WriteFileAtomically(dir + "/summary.json", json); !s.ok()) return s;
  return summary;
}

}  // namespace lopt
