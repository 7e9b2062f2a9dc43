#include "worker/worker.h"

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <random>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/small_fc_lopt.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/rpc/metrics.h"
#include "common/rpc/tensor_codec.h"
#include "common/spec/job_spec.h"
#include "common/util/log.h"

namespace lopt {
namespace {

struct WorkerMetrics {
  prometheus::Family<prometheus::Counter>& units =
      CounterFamily("lopt_worker_units_total", "Work units run by this worker, by result");
  prometheus::Counter& inner =
      CounterFamily("lopt_worker_inner_steps_total", "Inner particle-steps run by this worker")
          .Add({});
  prometheus::Histogram& seconds =
      HistogramFamily("lopt_worker_unit_seconds", "Time to run one work unit")
          .Add({}, SecondsBuckets());
  prometheus::Gauge& connected =
      GaugeFamily("lopt_worker_connected", "1 while the worker holds a stream to the learner")
          .Add({});
  prometheus::Counter& buffer_failures =
      CounterFamily("lopt_worker_buffer_failures_total",
                    "Replay-buffer calls that failed (lost puts, samples that fell back to fresh starts)")
          .Add({});
};
WorkerMetrics& M() {
  static WorkerMetrics* m = new WorkerMetrics();
  return *m;
}

}  // namespace

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {
  if (!options_.make_buffer)
    options_.make_buffer = [] { return std::make_unique<InMemoryReplayBuffer>(); };
}

Worker::~Worker() { Stop(); }

void Worker::Stop() {
  stop_ = true;
  std::lock_guard<std::mutex> l(ctx_mu_);
  if (ctx_) ctx_->TryCancel();
}

absl::StatusOr<Worker::Shard*> Worker::ShardFor(const v1::WorkUnit& unit) {
  auto key = std::make_pair(unit.job_id(), unit.shard());
  std::string bytes = unit.job().SerializeAsString();
  auto it = shards_.find(key);
  if (it != shards_.end() && it->second.job_bytes == bytes) {
    it->second.last_used = ++use_counter_;
    return &it->second;
  }
  v1::JobSpec spec = unit.job();
  FillJobDefaults(&spec);
  if (auto s = ValidateJob(spec); !s.ok()) return s;
  if (unit.shard() < 0 || unit.shard() >= spec.cluster().shards())
    return absl::InvalidArgumentError(absl::StrCat("shard ", unit.shard(), " is out of range"));
  // Shards of one job share its tasks (data) and its buffer client: the
  // cached shards' tasks seed this one's cache.
  TaskCache tasks;
  for (auto& [k, s] : shards_)
    if (k.first == unit.job_id() && s.job_bytes == bytes) tasks.insert(s.tasks.begin(), s.tasks.end());
  const TaskFactory make_task = CachingTaskFactory(&tasks, DefaultTaskDevice());
  auto& buffer = buffers_[unit.job_id()];
  if (!buffer) buffer = std::shared_ptr<ReplayBuffer>(options_.make_buffer());
  auto elo = EloShard::Create(spec, make_task, buffer.get(), unit.buffer_prefix(),
                              ShardSeed(spec, unit.shard()));
  if (!elo.ok()) return elo.status();
  // Evict the least recently used shard beyond the cache's size.
  if (it == shards_.end() && int32_t(shards_.size()) >= options_.max_cached_shards) {
    auto lru = shards_.begin();
    for (auto s = shards_.begin(); s != shards_.end(); ++s)
      if (s->second.last_used < lru->second.last_used) lru = s;
    shards_.erase(lru);
  }
  Shard& sh = shards_[key];
  sh.job_bytes = bytes;
  sh.tasks = std::move(tasks);
  sh.buffer = buffer;
  sh.unroller = *std::move(elo);
  sh.last_used = ++use_counter_;
  return &sh;
}

namespace {

// The result of `unit`, its ids and the version it ran filled in.
v1::WorkResult ResultFor(const v1::WorkUnit& unit, int64_t version) {
  v1::WorkResult r;
  r.set_unit_id(unit.unit_id());
  r.set_job_id(unit.job_id());
  r.set_shard(unit.shard());
  r.set_theta_version(version);
  return r;
}

// `r` as the answer of a unit that could not run: the error, and no payload or result info
// of its kind; counted and logged.
v1::WorkResult FailedResult(const v1::WorkUnit& unit, v1::WorkResult r, const absl::Status& s) {
  r.set_error(std::string(s.message()));
  r.clear_payload();
  r.clear_meta_test();
  M().units.Add({{"result", "error"}}).Increment();
  LogWarning("cannot run unit", {{"job", unit.job_id()}, {"error", r.error()}});
  return r;
}

}  // namespace

void Worker::CountRun(std::chrono::steady_clock::time_point t0, v1::WorkResult* r) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r->set_seconds(secs);
  M().units.Add({{"result", "ok"}}).Increment();
  M().inner.Increment(static_cast<double>(r->particle_steps()));
  M().seconds.Observe(secs);
  ++units_done_;
}

v1::WorkResult Worker::RunUnit(const v1::WorkUnit& unit) {
  auto t0 = std::chrono::steady_clock::now();
  v1::WorkResult r = ResultFor(unit, unit.theta_version());
  auto fail = [&](const absl::Status& s) { return FailedResult(unit, r, s); };
  if (unit.algorithm() == v1::LHOPT_PPO || unit.algorithm() == v1::LHOPT_YARDSTICK ||
      unit.algorithm() == v1::ELO_META_TEST)
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "an ", v1::Algorithm_Name(unit.algorithm()),
        " unit needs its payload (RunLhoptUnit, RunMetaTestUnit)")));
  if (unit.algorithm() != v1::ELO_PES)
    return fail(absl::UnimplementedError(absl::StrCat(
        "this worker runs ELO_PES, ELO_META_TEST, LHOPT_PPO and LHOPT_YARDSTICK units, not ",
        v1::Algorithm_Name(unit.algorithm()))));
  auto shard = ShardFor(unit);
  if (!shard.ok()) return fail(shard.status());
  SmallFcLopt lopt(unit.job().lopt());
  auto theta = DecodeFloatTensor(unit.theta(), {lopt.theta_size()}, "theta");
  if (!theta.ok()) return fail(theta.status());
  TruncationResult tr;
  (*shard)->unroller->set_cancel_check([this, id = unit.unit_id()] { return Cancelled(id); });
  try {
    tr = (*shard)->unroller->RunTruncation(*theta, unit.alpha(), unit.truncation());
  } catch (const std::exception& e) {
    shards_.erase({unit.job_id(), unit.shard()});
    return fail(absl::InternalError(absl::StrCat("truncation failed: ", e.what())));
  }
  if (tr.cancelled) {
    // Its inner states stopped mid-truncation: the shard starts afresh if
    // its job ever sends it again.
    shards_.erase({unit.job_id(), unit.shard()});
    r.set_error("cancelled by the learner while running");
    M().units.Add({{"result", "cancelled"}}).Increment();
    LogInfo("unit stopped: the learner cancelled it",
            {{"job", unit.job_id()}, {"unit", absl::StrCat(unit.unit_id())},
             {"seconds", absl::StrFormat("%.2f", std::chrono::duration<double>(
                                                     std::chrono::steady_clock::now() - t0)
                                                     .count())}});
    return r;
  }
  *r.mutable_grad() = EncodeTensor(tr.grad, "grad");
  r.set_meta_loss(tr.meta_loss);
  r.set_task_loss(tr.task_loss);
  r.set_bc_loss(tr.bc_loss);
  r.set_particle_steps(tr.particle_steps);
  r.set_fresh_starts(tr.fresh_starts);
  r.set_restores(tr.restores);
  r.set_pushes(tr.pushes);
  if (tr.buffer_failures > 0) {
    r.set_buffer_failures(tr.buffer_failures);
    r.set_buffer_error(tr.buffer_error.substr(0, 1024));
    M().buffer_failures.Increment(static_cast<double>(tr.buffer_failures));
    LogWarning("replay buffer calls failed; the unit ran on with fresh starts",
               {{"job", unit.job_id()}, {"failures", absl::StrCat(tr.buffer_failures)},
                {"error", r.buffer_error()}});
  }
  CountRun(t0, &r);
  return r;
}

namespace {
// The job of an LHOPT_PPO or LHOPT_YARDSTICK unit, with its defaults, validated.
absl::StatusOr<v1::JobSpec> LhoptJobOf(const v1::WorkUnit& unit) {
  v1::JobSpec spec = unit.job();
  FillJobDefaults(&spec);
  if (auto s = ValidateJob(spec); !s.ok()) return s;
  if (!IsLhoptJob(spec))
    return absl::InvalidArgumentError(absl::StrCat(
        "an ", v1::Algorithm_Name(unit.algorithm()), " unit's job has no lhopt section"));
  return spec;
}
}  // namespace

absl::StatusOr<LhoptEpisodeRunner*> Worker::LhoptRunnerFor(const v1::WorkUnit& unit) {
  std::string bytes = unit.job().SerializeAsString();
  auto it = lhopt_.find(unit.job_id());
  if (it != lhopt_.end() && it->second.job_bytes == bytes) return it->second.runner.get();
  auto job = LhoptJobOf(unit);
  if (!job.ok()) return job.status();
  const v1::JobSpec& spec = *job;
  if (it == lhopt_.end() && lhopt_.size() >= 4) lhopt_.clear();  // jobs long gone
  auto& buffer = buffers_[unit.job_id()];
  if (!buffer) buffer = std::shared_ptr<ReplayBuffer>(options_.make_buffer());
  LhoptRunner& r = lhopt_[unit.job_id()];
  r.job_bytes = bytes;
  r.buffer = buffer;
  // Tables "<job_id>/lhopt/baseline/..." and "<job_id>/lhopt/registers/...":
  // shared by the job's workers, deleted with the job's prefix.
  r.runner = std::make_unique<LhoptEpisodeRunner>(spec, buffer.get(),
                                                  unit.buffer_prefix() + "lhopt");
  return r.runner.get();
}

absl::StatusOr<LhoptYardstick*> Worker::YardstickFor(const v1::WorkUnit& unit) {
  std::string bytes = unit.job().SerializeAsString();
  auto it = sticks_.find(unit.job_id());
  if (it != sticks_.end() && it->second.job_bytes == bytes) return it->second.stick.get();
  auto job = LhoptJobOf(unit);
  if (!job.ok()) return job.status();
  const v1::JobSpec& spec = *job;
  if (spec.lhopt().yardstick().every() <= 0)
    return absl::InvalidArgumentError(
        "an LHOPT_YARDSTICK unit's job has no lhopt.yardstick with every > 0");
  if (it == sticks_.end() && sticks_.size() >= 4) sticks_.clear();  // jobs long gone
  YardstickHolder& h = sticks_[unit.job_id()];
  h.job_bytes = bytes;
  // Its reference runs are done once and kept for the job's later versions.
  h.stick = std::make_unique<LhoptYardstick>(spec);
  return h.stick.get();
}

v1::WorkResult Worker::RunLhoptUnit(const v1::WorkUnit& unit,
                                    const absl::StatusOr<NamedTensors>& payload,
                                    std::string* result_payload) {
  auto t0 = std::chrono::steady_clock::now();
  result_payload->clear();
  v1::WorkResult r = ResultFor(unit, unit.lhopt().policy_version());
  auto fail = [&](const absl::Status& s) {
    result_payload->clear();
    return FailedResult(unit, r, s);
  };
  if (!payload.ok())
    return fail(absl::Status(payload.status().code(),
                             absl::StrCat("the unit's payload: ", payload.status().message())));
  if (unit.algorithm() == v1::LHOPT_YARDSTICK) {
    r.set_theta_version(unit.theta_version());
    auto stick = YardstickFor(unit);
    if (!stick.ok()) return fail(stick.status());
    absl::StatusOr<YardstickResult> ys;
    try {
      ys = (*stick)->EvaluateShipped(*payload, unit.theta_version());
    } catch (const std::exception& e) {
      sticks_.erase(unit.job_id());
      return fail(absl::InternalError(absl::StrCat("the LHOPT yardstick failed: ", e.what())));
    }
    if (!ys.ok()) return fail(ys.status());
    EncodeYardstickResult(*ys, r.mutable_yardstick());
    r.set_particle_steps(ys->inner_particle_steps);
    CountRun(t0, &r);
    LogInfo("LHOPT yardstick scored", {{"job", unit.job_id()},
                                       {"iteration", absl::StrCat(ys->iteration)},
                                       {"score", absl::StrFormat("%.4g", ys->score)},
                                       {"seconds", absl::StrFormat("%.1f", r.seconds())}});
    return r;
  }
  auto lu = DecodeLhoptUnit(unit.lhopt(), *payload);
  if (!lu.ok()) return fail(lu.status());
  auto runner = LhoptRunnerFor(unit);
  if (!runner.ok()) return fail(runner.status());
  absl::StatusOr<LhoptUnitResult> res;
  (*runner)->set_cancel_check([this, id = unit.unit_id()] { return Cancelled(id); });
  try {
    res = (*runner)->Run(*lu);
  } catch (const std::exception& e) {
    lhopt_.erase(unit.job_id());
    return fail(absl::InternalError(absl::StrCat("LHOPT episodes failed: ", e.what())));
  }
  if (!res.ok() && absl::IsCancelled(res.status()) && Cancelled(unit.unit_id())) {
    r.set_error("cancelled by the learner while running");
    M().units.Add({{"result", "cancelled"}}).Increment();
    LogInfo("unit stopped: the learner cancelled it",
            {{"job", unit.job_id()}, {"unit", absl::StrCat(unit.unit_id())},
             {"error", std::string(res.status().message())}});
    return r;
  }
  if (!res.ok()) return fail(res.status());
  NamedTensors tensors;
  EncodeLhoptResult(*res, r.mutable_lhopt(), &tensors);
  *r.mutable_payload() = EncodePayload(tensors, result_payload);
  r.set_particle_steps(res->inner_particle_steps);
  CountRun(t0, &r);
  return r;
}

namespace {
// Thrown by the meta-test's progress callback when the learner cancels the unit.
struct MetaTestCancelled {};
}  // namespace

v1::WorkResult Worker::RunMetaTestUnit(const v1::WorkUnit& unit,
                                       const absl::StatusOr<NamedTensors>& payload,
                                       std::string* result_payload) {
  auto t0 = std::chrono::steady_clock::now();
  result_payload->clear();
  v1::WorkResult r = ResultFor(unit, unit.theta_version());
  auto fail = [&](const absl::Status& s) {
    result_payload->clear();
    return FailedResult(unit, r, s);
  };
  if (unit.algorithm() != v1::ELO_META_TEST)
    return fail(absl::InvalidArgumentError(absl::StrCat(
        "RunMetaTestUnit runs ELO_META_TEST units, not ", v1::Algorithm_Name(unit.algorithm()))));
  if (!payload.ok())
    return fail(absl::Status(payload.status().code(),
                             absl::StrCat("the unit's payload: ", payload.status().message())));
  // The job as `lopt eval --job` checks it: a meta-test trains one
  // optimizee at a time, whatever a PES unit of it would hold.
  v1::JobSpec spec = unit.job();
  FillJobDefaults(&spec);
  if (auto s = ValidateJob(spec, JobUse::kMetaTest); !s.ok()) return fail(s);
  if (IsLhoptJob(spec))
    return fail(absl::InvalidArgumentError("an ELO_META_TEST unit's job is an LHOPT job"));
  auto theta = Find(*payload, "theta");
  if (!theta.ok()) return fail(absl::InvalidArgumentError("the unit's payload has no theta"));
  const int64_t d = SmallFcLopt(spec.lopt()).theta_size();
  if (theta->dim() != 1 || theta->size(0) != d || theta->scalar_type() != torch::kFloat32)
    return fail(absl::InvalidArgumentError(
        absl::StrCat("the unit's theta must be float32 of shape [", d, "]")));
  // The optimizer the job's optimizer.lopt holds: its options and job, and
  // this theta.
  TrainedOptimizer trained;
  *trained.file.mutable_options() = spec.lopt();
  *trained.file.mutable_job() = spec;
  trained.file.set_outer_step(unit.theta_version());
  trained.theta = *theta;
  // The report is written as `lopt eval --out` writes it, into a directory
  // of this worker's that goes once its files are in the result.
  std::string dir = (std::filesystem::temp_directory_path() / "lopt-meta-test-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr)
    return fail(absl::InternalError(
        absl::StrCat("cannot create a directory for the meta-test: ", std::strerror(errno))));
  struct RemoveDir {
    std::string dir;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } remove_dir{dir};
  MetaTestOptions o;
  o.device = options_.device;
  o.progress = [this, id = unit.unit_id()](int64_t, int64_t) {
    if (Cancelled(id)) throw MetaTestCancelled();
  };
  absl::StatusOr<MetaTestOutcome> outcome;
  LogInfo("meta-test of the trained optimizer", {{"job", unit.job_id()},
                                                  {"theta_version", absl::StrCat(unit.theta_version())},
                                                  {"steps", absl::StrCat(EvalSteps(spec))}});
  try {
    outcome = RunAndWriteMetaTest(spec, trained, dir, o);
  } catch (const MetaTestCancelled&) {
    r.set_error("cancelled by the learner while running");
    M().units.Add({{"result", "cancelled"}}).Increment();
    LogInfo("unit stopped: the learner cancelled it",
            {{"job", unit.job_id()}, {"unit", absl::StrCat(unit.unit_id())}});
    return r;
  } catch (const std::exception& e) {
    return fail(absl::InternalError(absl::StrCat("the meta-test failed: ", e.what())));
  }
  if (!outcome.ok()) return fail(outcome.status());
  NamedTensors files;
  v1::MetaTestResultInfo* info = r.mutable_meta_test();
  if (auto s = EncodeMetaTestFiles(dir, info, &files); !s.ok()) return fail(s);
  info->set_theta_version(unit.theta_version());
  info->set_runs(outcome->runs);
  info->set_diverged(outcome->diverged);
  *r.mutable_payload() = EncodePayload(files, result_payload);
  // One optimizee a run, each for the meta-test's steps.
  r.set_particle_steps(outcome->runs * EvalSteps(spec));
  CountRun(t0, &r);
  info->set_wall_seconds(r.seconds());
  LogInfo("meta-test run", {{"job", unit.job_id()},
                            {"theta_version", absl::StrCat(unit.theta_version())},
                            {"runs", absl::StrCat(outcome->runs)},
                            {"diverged", absl::StrCat(outcome->diverged)},
                            {"bytes", absl::StrCat(result_payload->size())},
                            {"seconds", absl::StrFormat("%.1f", r.seconds())}});
  return r;
}

void Worker::Serve() {
  auto channel = MakeChannel(options_.learner);
  auto stub = v1::WorkService::NewStub(channel);
  auto ctx = MakeStreamContext(options_.learner);
  {
    std::lock_guard<std::mutex> l(ctx_mu_);
    if (stop_) return;
    ctx_ = ctx.get();
  }
  auto stream = stub->Connect(ctx.get());
  std::mutex write_mu;
  v1::WorkerMessage reg;
  auto* info = reg.mutable_register_();
  info->set_name(options_.name);
  info->set_device(options_.device);
  info->set_max_particles(static_cast<int32_t>(options_.max_particles));
  info->set_memory_bytes(options_.memory_bytes);
  info->set_version(LOPT_VERSION);
  v1::LearnerMessage msg;
  bool ok = stream->Write(reg) && stream->Read(&msg) && msg.has_registered();
  // A stream the learner ended (a wrong token, say) must not be cancelled
  // here: Finish would report our CANCELLED instead of the learner's reason.
  const bool still_open = !ok && msg.kind_case() != v1::LearnerMessage::KIND_NOT_SET;
  std::atomic<uint64_t> current{0};
  std::atomic<bool> done{false};
  std::thread heartbeats;
  cancelled_unit_ = 0;  // unit ids are the learner's, counted afresh after its restart
  // The learner's messages are read on their own thread while a unit runs, so
  // that a cancel (a ResultAck for the running unit with code CANCELLED, the
  // reply to a heartbeat that named it) reaches the unit between its inner
  // steps; everything else queues for the loop below in order.
  std::mutex q_mu;
  std::condition_variable q_cv;
  std::deque<v1::LearnerMessage> queue;
  bool q_done = false;
  std::thread reader;
  auto next = [&](v1::LearnerMessage* m) {
    std::unique_lock<std::mutex> l(q_mu);
    q_cv.wait(l, [&] { return !queue.empty() || q_done; });
    if (queue.empty()) return false;
    *m = std::move(queue.front());
    queue.pop_front();
    return true;
  };
  if (ok) {
    ++connections_;
    M().connected.Set(1);
    int interval = std::max(50, msg.registered().heartbeat_interval_ms());
    LogInfo("connected", {{"learner", options_.learner.target},
                          {"worker_id", msg.registered().worker_id()}});
    heartbeats = std::thread([&, interval] {
      while (!done) {
        for (int waited = 0; waited < interval && !done; waited += 50)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (done) break;
        v1::WorkerMessage hb;
        hb.mutable_heartbeat()->set_unit_id(current.load());
        std::lock_guard<std::mutex> l(write_mu);
        if (!stream->Write(hb)) break;
      }
    });
    reader = std::thread([&] {
      v1::LearnerMessage m;
      while (stream->Read(&m)) {
        if (m.has_ack() && !m.ack().accepted() &&
            m.ack().code() == static_cast<int>(grpc::StatusCode::CANCELLED)) {
          const uint64_t u = m.ack().unit_id();
          if (u != 0 && u == current.load() && cancelled_unit_.exchange(u) != u)
            LogInfo("the learner cancelled the running unit",
                    {{"unit", absl::StrCat(u)}, {"reason", m.ack().error()}});
          continue;
        }
        std::lock_guard<std::mutex> l(q_mu);
        queue.push_back(std::move(m));
        q_cv.notify_one();
      }
      std::lock_guard<std::mutex> l(q_mu);
      q_done = true;
      q_cv.notify_all();
    });
    while (!stop_ && next(&msg)) {
      if (msg.has_unit() && msg.unit().has_payload()) {
        v1::WorkUnit unit = msg.unit();
        current = unit.unit_id();
        // Its payload's chunks follow the unit back to back.
        absl::StatusOr<NamedTensors> payload;
        auto receiver = PayloadReceiver::Create(unit.payload());
        if (!receiver.ok()) payload = receiver.status();
        bool read_ok = true;
        while (receiver.ok() && !receiver->complete()) {
          if (!(read_ok = next(&msg))) break;
          if (!msg.has_chunk()) {
            payload = absl::InvalidArgumentError("the unit's payload was cut short");
            break;
          }
          if (auto s = receiver->Add(msg.chunk()); !s.ok()) {
            payload = s;
            break;
          }
        }
        if (!read_ok) break;
        if (receiver.ok() && receiver->complete()) payload = receiver->Finish();
        std::string result_payload;
        v1::WorkerMessage out;
        *out.mutable_result() = unit.algorithm() == v1::ELO_META_TEST
                                    ? RunMetaTestUnit(unit, payload, &result_payload)
                                    : RunLhoptUnit(unit, payload, &result_payload);
        current = 0;
        if (Cancelled(unit.unit_id())) continue;  // the learner no longer wants its result
        // The result and its chunks back to back (no heartbeat between).
        std::lock_guard<std::mutex> l(write_mu);
        bool ok = stream->Write(out);
        if (ok && out.result().has_payload())
          for (auto& c : MakeChunks(result_payload, kChunkBytes)) {
            v1::WorkerMessage cm;
            *cm.mutable_chunk() = std::move(c);
            if (!(ok = stream->Write(cm))) break;
          }
        if (!ok) break;
      } else if (msg.has_unit()) {
        const uint64_t id = msg.unit().unit_id();
        current = id;
        v1::WorkerMessage out;
        *out.mutable_result() = RunUnit(msg.unit());
        current = 0;
        if (Cancelled(id)) continue;  // the learner no longer wants its result
        std::lock_guard<std::mutex> l(write_mu);
        if (!stream->Write(out)) break;
      } else if (msg.has_ack() && !msg.ack().accepted()) {
        const auto& a = msg.ack();
        M().units.Add({{"result", a.dropped_stale() ? "stale" : "rejected"}}).Increment();
        if (!a.dropped_stale())
          LogWarning("result rejected by the learner",
                     {{"unit", absl::StrCat(a.unit_id())}, {"error", a.error()}});
      }
    }
  }
  done = true;
  if (heartbeats.joinable()) heartbeats.join();
  {
    std::lock_guard<std::mutex> l(ctx_mu_);
    // Stopping, or an unexpected reply left the stream open: end it. The
    // loop leaves otherwise only when a Read or Write failed, that is when
    // the stream is over and Finish has the learner's status.
    if (stop_ || still_open) ctx_->TryCancel();
    ctx_ = nullptr;
  }
  // The stream is over or cancelled: the reader's Read fails and it ends.
  if (reader.joinable()) reader.join();
  grpc::Status s = stream->Finish();
  M().connected.Set(0);
  if (!stop_ && s.error_code() == grpc::StatusCode::UNAUTHENTICATED)
    LogError("the learner refused this worker's credentials: check --auth-token-file",
             {{"learner", options_.learner.target}, {"error", s.error_message()},
              {"code", "UNAUTHENTICATED"}});
  else if (!stop_)
    LogWarning("stream to the learner ended",
               {{"learner", options_.learner.target}, {"error", s.error_message()},
                {"code", absl::StrCat(static_cast<int>(s.error_code()))}});
}

void Worker::Run() {
  std::mt19937_64 rng(std::random_device{}());
  int64_t backoff = options_.initial_backoff_ms;
  while (!stop_) {
    int64_t before = connections_;
    Serve();
    if (stop_) break;
    if (connections_ > before) backoff = options_.initial_backoff_ms;
    // Exponential backoff with jitter, so that workers do not reconnect in step.
    int64_t sleep_ms = backoff / 2 + static_cast<int64_t>(rng() % (backoff / 2 + 1));
    for (int64_t slept = 0; slept < sleep_ms && !stop_; slept += 20)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    backoff = std::min(options_.max_backoff_ms, backoff * 2);
  }
}

}  // namespace lopt
