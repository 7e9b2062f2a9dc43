#include "worker/worker.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <random>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/lhopt/lhopt_wire.h"  // PayloadReceiver
#include "common/rpc/metrics.h"
#include "common/rpc/tensor_codec.h"
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

namespace {

// The result of `unit`, its ids and the version it ran filled in.
v1::WorkResult ResultFor(const v1::WorkUnit& unit) {
  v1::WorkResult r;
  r.set_unit_id(unit.unit_id());
  r.set_job_id(unit.job_id());
  r.set_shard(unit.shard());
  r.set_theta_version(unit.theta_version());
  return r;
}

// `r` as the answer of a unit that could not run: the error, and no payload or result info
// of its kind; counted and logged.
v1::WorkResult FailedResult(const v1::WorkUnit& unit, v1::WorkResult r, const absl::Status& s) {
  r.set_error(std::string(s.message()));
  r.clear_payload();
  r.clear_elo();
  r.clear_lhopt();
  r.clear_yardstick();
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

UnitRunner* Worker::RunnerFor(v1::Algorithm unit_kind) {
  auto it = runners_.find(unit_kind);
  if (it != runners_.end()) return it->second.get();
  const JobKind* kind = JobKinds().KindOfUnit(unit_kind);
  if (kind == nullptr) return nullptr;
  UnitRunnerEnv env;
  env.device = options_.device;
  env.max_cached_shards = options_.max_cached_shards;
  env.buffer = [this](const std::string& job_id) {
    auto& buffer = buffers_[job_id];
    if (!buffer) buffer = std::shared_ptr<ReplayBuffer>(options_.make_buffer());
    return buffer;
  };
  return (runners_[unit_kind] = kind->MakeRunner(unit_kind, env)).get();
}

v1::WorkResult Worker::RunUnit(const v1::WorkUnit& unit) { return RunOne(unit, nullptr, nullptr); }

v1::WorkResult Worker::RunUnit(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>& payload,
                               std::string* result_payload) {
  return RunOne(unit, &payload, result_payload);
}

v1::WorkResult Worker::RunOne(const v1::WorkUnit& unit, const absl::StatusOr<NamedTensors>* payload,
                              std::string* result_payload) {
  auto t0 = std::chrono::steady_clock::now();
  std::string no_payload;
  if (result_payload == nullptr) result_payload = &no_payload;
  result_payload->clear();
  v1::WorkResult r = ResultFor(unit);
  auto fail = [&](const absl::Status& s) {
    result_payload->clear();
    return FailedResult(unit, r, s);
  };
  const std::string name = v1::Algorithm_Name(unit.algorithm());
  UnitRunner* runner = RunnerFor(unit.algorithm());
  if (runner == nullptr)
    return fail(absl::UnimplementedError(absl::StrCat(
        "this worker runs ", JobKinds().UnitKindNames(), " units, not ",
        name.empty() ? absl::StrCat("algorithm ", int(unit.algorithm())) : name)));
  // The unit's job is of the kind that issues such units (its spec section).
  const JobKind* kind = JobKinds().KindOfUnit(unit.algorithm());
  auto owner = JobKinds().KindOf(unit.job());
  if (!owner.ok()) return fail(owner.status());
  if (*owner != kind)
    return fail(absl::InvalidArgumentError(absl::StrCat("an ", name, " unit's job is of kind '",
                                                        (*owner)->name(), "', not '",
                                                        kind->name(), "'")));
  if (runner->takes_payload() && payload == nullptr)
    return fail(absl::InvalidArgumentError(absl::StrCat("an ", name, " unit needs its payload")));
  if (!runner->takes_payload() && payload != nullptr)
    return fail(absl::InvalidArgumentError(absl::StrCat("an ", name, " unit carries no payload")));
  if (payload != nullptr && !payload->ok())
    return fail(absl::Status(payload->status().code(),
                             absl::StrCat("the unit's payload: ", payload->status().message())));
  static const absl::StatusOr<NamedTensors> kNone = NamedTensors{};
  const uint64_t id = unit.unit_id();
  absl::Status s = runner->Run(unit, payload != nullptr ? *payload : kNone,
                               [this, id] { return Cancelled(id); }, &r, result_payload);
  if (absl::IsCancelled(s) && Cancelled(id)) {
    r.set_error("cancelled by the learner while running");
    r.clear_payload();
    result_payload->clear();
    M().units.Add({{"result", "cancelled"}}).Increment();
    LogInfo("unit stopped: the learner cancelled it",
            {{"job", unit.job_id()}, {"unit", absl::StrCat(id)}, {"kind", name},
             {"seconds", absl::StrFormat("%.2f", std::chrono::duration<double>(
                                                     std::chrono::steady_clock::now() - t0)
                                                     .count())}});
    return r;
  }
  if (!s.ok()) return fail(s);
  if (r.buffer_failures() > 0) {
    M().buffer_failures.Increment(static_cast<double>(r.buffer_failures()));
    LogWarning("replay buffer calls failed; the unit ran on with fresh starts",
               {{"job", unit.job_id()}, {"failures", absl::StrCat(r.buffer_failures())},
                {"error", r.buffer_error()}});
  }
  CountRun(t0, &r);
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
        *out.mutable_result() = RunUnit(unit, payload, &result_payload);
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
