#include "learner/job_manager.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>
#include <set>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/rpc/buffer_client.h"
#include "common/rpc/metrics.h"
#include "common/rpc/tensor_codec.h"
#include "common/spec/job_limits.h"
#include "common/spec/job_spec.h"
#include "common/util/checkpoint.h"
#include "common/util/json.h"
#include "common/util/log.h"
#include "common/util/run_files.h"
#include "common/util/utf8.h"
#include "kinds/job_kind.h"
#include "learner/job_core.h"

namespace lopt {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMaxConsecutiveWorkerErrors = 5;
// A checkpoint or trained file that could not be written (a full disk, say)
// is tried again this often until it is.
constexpr auto kSaveRetry = std::chrono::seconds(1);

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool Terminal(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

// Job ids: the job's name (safe characters only) and 8 random hex digits.
std::string NewJobId(const std::string& name) {
  std::string base;
  for (char c : name) {
    if (isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') base += c;
    if (base.size() >= 40) break;
  }
  if (base.empty()) base = "job";
  static std::mt19937_64 rng(std::random_device{}());
  return absl::StrFormat("%s-%08x", base, static_cast<uint32_t>(rng()));
}

struct Families {
  prometheus::Family<prometheus::Counter>& outer_steps = CounterFamily(
      "lopt_outer_steps_total", "Outer (meta-parameter) steps applied");
  prometheus::Family<prometheus::Counter>& inner_steps = CounterFamily(
      "lopt_inner_steps_total", "Inner particle-steps of the results received");
  prometheus::Family<prometheus::Counter>& accepted = CounterFamily(
      "lopt_results_accepted_total", "Worker results accepted toward an outer step");
  prometheus::Family<prometheus::Counter>& dropped_stale = CounterFamily(
      "lopt_results_dropped_stale_total",
      "Worker results dropped because their theta was older than the job's staleness bound");
  prometheus::Family<prometheus::Counter>& rejected = CounterFamily(
      "lopt_results_rejected_total", "Worker results rejected as invalid, by reason");
  prometheus::Family<prometheus::Gauge>& meta_loss =
      GaugeFamily("lopt_meta_loss", "Mean meta-loss of the latest outer step");
  prometheus::Family<prometheus::Gauge>& task_loss =
      GaugeFamily("lopt_task_loss", "Mean task loss of the latest outer step");
  prometheus::Family<prometheus::Gauge>& outer_step =
      GaugeFamily("lopt_outer_step", "Outer steps completed by the job");
  prometheus::Family<prometheus::Gauge>& rate = GaugeFamily(
      "lopt_inner_particle_steps_per_second", "Inner particle-steps per second of the job");
  prometheus::Family<prometheus::Gauge>& budget = GaugeFamily(
      "lopt_outer_steps_budget", "The job's budget.outer_steps (for progress = outer_step / budget)");
  prometheus::Family<prometheus::Gauge>& jobs = GaugeFamily("lopt_jobs", "Jobs by state");
  prometheus::Family<prometheus::Gauge>& workers =
      GaugeFamily("lopt_workers_connected", "Workers connected to the learner");
  prometheus::Family<prometheus::Counter>& reassigned = CounterFamily(
      "lopt_units_reassigned_total", "Work units given back to the pool after their worker left");
  prometheus::Family<prometheus::Counter>& save_failures = CounterFamily(
      "lopt_checkpoint_failures_total",
      "Writes of a job's checkpoint, trained file or a result's file (run_file: a meta-test "
      "report) that failed (they are retried), by file");
  prometheus::Family<prometheus::Histogram>& staleness = HistogramFamily(
      "lopt_result_staleness_steps", "Outer steps between a result's theta and the current one");
  // Its one series, looked up once (not a labelled lookup every result).
  prometheus::Histogram& staleness_all = staleness.Add(
      {}, prometheus::Histogram::BucketBoundaries{0, 1, 2, 4, 8, 16, 32, 64, 128});
  prometheus::Family<prometheus::Counter>& buffer_failures = CounterFamily(
      "lopt_buffer_failures_total",
      "Replay-buffer calls that failed on the workers (lost puts, samples fallen back to fresh starts)");
};
Families& F() {
  static Families* f = new Families();
  return *f;
}

}  // namespace

// A connected worker (reached through workers_: guarded by mu_).
struct JobManager::Worker {
  std::string id;
  v1::WorkerInfo info;
  Clock::time_point last_seen;
  bool alive = true;
  // HandleResult is under way for it (its reader thread waits for the
  // job's section, a PPO update, say): not silent, whatever last_seen says.
  bool in_result = false;
  // The running unit, if any.
  uint64_t unit_id = 0;
  std::string unit_job;
  int32_t unit_shard = -1;
  int64_t unit_token = -1;  // the job core's own id of the unit (JobCore::Start)
  // The unit a job's end took from it, for the heartbeat's reply (Heartbeat).
  uint64_t ended_unit = 0;
  std::string ended_job, ended_state;
  // What its NextUnit waits on (with mu_): signalled by SignalAll while it
  // runs no unit or is gone, and where its unit ends or on shutdown.
  CondVar cv;
};

void JobManager::Job::AddSeries() {
  std::map<std::string, std::string> l = {{"job_id", id}};
  m_outer = &F().outer_steps.Add(l);
  m_inner = &F().inner_steps.Add(l);
  m_accepted = &F().accepted.Add(l);
  m_stale = &F().dropped_stale.Add(l);
  m_meta = &F().meta_loss.Add(l);
  m_task = &F().task_loss.Add(l);
  m_step = &F().outer_step.Add(l);
  m_rate = &F().rate.Add(l);
  m_budget = &F().budget.Add(l);
  m_step->Set(core->Step());
  m_budget->Set(core->Total());
  core->AddSeries(id);
}

prometheus::Counter& JobManager::Job::Rejected(const std::string& reason) {
  auto it = m_rejected.find(reason);
  if (it != m_rejected.end()) return *it->second;
  auto* c = &F().rejected.Add({{"job_id", id}, {"reason", reason}});
  m_rejected[reason] = c;
  return *c;
}

void JobManager::Job::RemoveSeries() {
  if (series_removed || !m_outer) return;
  series_removed = true;
  F().outer_steps.Remove(m_outer);
  F().inner_steps.Remove(m_inner);
  F().accepted.Remove(m_accepted);
  F().dropped_stale.Remove(m_stale);
  F().meta_loss.Remove(m_meta);
  F().task_loss.Remove(m_task);
  F().outer_step.Remove(m_step);
  F().rate.Remove(m_rate);
  F().budget.Remove(m_budget);
  core->RemoveSeries();
  for (auto& [r, c] : m_rejected) F().rejected.Remove(c);
  m_rejected.clear();
}

JobManager::JobManager(const LearnerOptions& options) : options_(options) {
  // Unit ids from before a restart must not match new ones.
  MutexLock l(&mu_);
  next_unit_id_ = (static_cast<uint64_t>(NowUnixMs()) << 16) | 1;
}

JobCoreOptions JobManager::CoreOptions() const {
  JobCoreOptions o;
  o.meta_test = options_.meta_test;
  return o;
}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(const LearnerOptions& options) {
  std::unique_ptr<JobManager> m(new JobManager(options));
  if (auto s = MakeDirs(options.state_dir + "/jobs"); !s.ok()) return s;
  if (auto s = m->LoadAll(); !s.ok()) return s;
  F().workers.Add({}).Set(0);
  {
    MutexLock l(&m->mu_);
    m->UpdateJobGauges();
  }
  m->janitor_ = std::thread([p = m.get()] { p->JanitorLoop(); });
  m->outputs_thread_ = std::thread([p = m.get()] { p->OutputsLoop(); });
  return m;
}

JobManager::~JobManager() {
  Shutdown();
  if (janitor_.joinable()) janitor_.join();
  if (outputs_thread_.joinable()) outputs_thread_.join();
}

// --- sections ----------------------------------------------------------------

std::shared_ptr<JobManager::Job> JobManager::Enter(const std::string& id) {
  MutexLock l(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return nullptr;
  ++it->second.busy;
  return it->second.job;
}

JobManager::Effects JobManager::TakeEffects(Job& job) {
  Effects fx = std::move(job.fx);
  job.fx = Effects();
  fx.section = ++job.sections;
  fx.touches = job.touches;
  fx.status = StatusOf(job);
  fx.unsaved = job.unsaved;
  fx.next_save = job.next_save;
  return fx;
}

void JobManager::Apply(Slot& slot, Effects& fx, bool wake_idle) {
  if (fx.section > slot.section) {
    slot.section = fx.section;
    slot.status = std::move(fx.status);
    slot.version = fx.touches;
    slot.unsaved = fx.unsaved;
    slot.next_save = fx.next_save;
    // The janitor drops a terminal job's series metrics_retention_ms after
    // this. A later section can be applied before the one that finished the
    // job (two threads leave it in either order), so the clock starts at the
    // first terminal status the slot sees, not at fx.finished.
    if (Terminal(slot.status.state()) && slot.finished_at == Clock::time_point()) {
      slot.finished_at = Clock::now();
      janitor_cv_.Signal();  // its series' retention starts
    }
  }
  const std::string& id = slot.job->id;
  if (fx.release_units)
    for (auto& [wid, w] : workers_)
      if (w->unit_job == id) {
        // Their results will be answered "unknown unit"; their next heartbeat
        // tells them to stop the unit.
        w->ended_unit = w->unit_id;
        w->ended_job = id;
        w->ended_state = fx.ended_state;
        w->unit_id = 0;
        w->unit_job.clear();
        w->unit_shard = -1;
        w->unit_token = -1;
        w->cv.Signal();  // to look for another job's unit
      }
  if (fx.finished) {
    if (slot.finished_at == Clock::time_point()) slot.finished_at = Clock::now();
    cleanup_prefixes_.push_back(id + "/");
    janitor_cv_.Signal();  // its buffer tables go now
  }
  if (fx.outputs) EnqueueOutputs(*slot.job, fx.finished);
  if (fx.state_changed) UpdateJobGauges();
  cv_.SignalAll();
  // NextUnit passes over a job that a thread is busy with: the workers
  // waiting for a unit look again once it is free (Leave), not at every
  // section's end while other results still queue for the job.
  if (wake_idle && slot.busy == 0) SignalIdleWorkers();
}

void JobManager::Leave(Job& job, Effects fx) {
  MutexLock l(&mu_);
  LeaveLocked(job, std::move(fx));
}

void JobManager::LeaveLocked(Job& job, Effects fx) {
  auto it = jobs_.find(job.id);
  if (it == jobs_.end()) return;  // a submission that failed
  Slot& slot = it->second;
  Apply(slot, fx);
  if (--slot.busy == 0) {
    if (!slot.abandons.empty()) DrainAbandons(slot);
    SignalIdleWorkers();
  }
}

void JobManager::SignalAll() {
  cv_.SignalAll();
  SignalIdleWorkers();
}

void JobManager::SignalIdleWorkers() {
  for (auto& [wid, w] : workers_)
    if (w->unit_id == 0 || !w->alive) w->cv.Signal();
}

void JobManager::DrainAbandons(Slot& slot) {
  Job& job = *slot.job;
  MutexLock jl(&job.mu);  // free: nobody is busy with the job
  for (auto [shard, token] : slot.abandons)
    if (!Terminal(job.state)) {
      job.core->Abandon(shard, token, /*worker_gone=*/true);
      F().reassigned.Add({}).Increment();
      Touch(job);
    }
  slot.abandons.clear();
  Effects fx = TakeEffects(job);
  Apply(slot, fx);
}

// --- outputs -------------------------------------------------------------------

void JobManager::AppendMetricsRow(Job& job, const std::string& row) {
  if (row.empty()) return;
  // wall_s: seconds since the job was submitted (queueing and restarts in).
  AppendRunFileRow(job, {"metrics.csv", job.core->MetricsCsvHeader(),
                         row + MetricsCsvTail(job.rate, double(NowUnixMs() - job.submitted_ms) / 1000.0)});
}

void JobManager::AppendRunFileRow(Job& job, const RunFileRow& row) {
  if (absl::Status s = lopt::AppendRunFileRow(JobDir(job.id), row); !s.ok())
    LogWarning("cannot append to a run file", {{"job", job.id}, {"error", std::string(s.message())}});
}

void JobManager::WriteRunFiles(Job& job, std::vector<RunFileWrite> files) {
  for (auto& f : files) {
    // A later result's file replaces one still waiting to be written.
    auto& u = job.unwritten;
    u.erase(std::remove_if(u.begin(), u.end(), [&](const RunFileWrite& w) { return w.file == f.file; }),
            u.end());
    u.push_back(std::move(f));
  }
  if (absl::Status s = FlushRunFiles(job); !s.ok())
    LogWarning("cannot write a result's file yet (the job's next save tries again)",
               {{"job", job.id}, {"error", std::string(s.message())}});
}

absl::Status JobManager::FlushRunFiles(Job& job) {
  while (!job.unwritten.empty()) {
    if (absl::Status s = WriteRunFile(JobDir(job.id), job.unwritten.front()); !s.ok()) return s;
    job.unwritten.erase(job.unwritten.begin());
  }
  return absl::OkStatus();
}

void JobManager::QueueOutputs(Job& job) { job.fx.outputs = true; }

void JobManager::EnqueueOutputs(const Job& job, bool ended) {
  for (auto& q : outputs_queue_)
    if (q.job_id == job.id) {  // one request a job: the latest wins
      q.ended |= ended;
      return;
    }
  outputs_queue_.push_back({job.id, job.spec, ended});
  outputs_cv_.Signal();
}

void JobManager::OutputsLoop() {
  while (true) {
    OutputsRequest req;
    {
      MutexLock l(&mu_);
      while (!shutdown_ && outputs_queue_.empty()) outputs_cv_.Wait(&mu_);
      if (shutdown_) break;
      req = std::move(outputs_queue_.front());
      outputs_queue_.pop_front();
    }
    const std::string dir = JobDir(req.job_id);
    PlotRunMetrics(req.spec, dir);  // training.png (ELO) or rewards.png (LHOPT)
    // What a client (loptctl export --all) fetches from here on is final.
    if (req.ended) LogInfo("run directory complete", {{"job", req.job_id}, {"dir", dir}});
  }
}

absl::StatusOr<std::string> JobManager::ExportFile(const std::string& id, const std::string& file) {
  static const std::set<std::string> kFiles = {
      "job.textproto",    "summary.json",     "metrics.csv",           "training.png",
      "rewards.png",      "yardstick.csv",    "eval/report.json",      "eval/curves.csv",
      "eval/test_curves.csv", "eval/curves.png", "eval/table.txt"};
  // A snapshot of budget.snapshot_every: "snapshots/step_" six digits ".lopt".
  const bool snapshot = file.size() == 26 && absl::StartsWith(file, "snapshots/step_") &&
                        absl::EndsWith(file, ".lopt") &&
                        std::all_of(file.begin() + 15, file.begin() + 21, ::isdigit);
  if (!kFiles.count(file) && !snapshot) {
    std::string names;
    for (const auto& f : kFiles) absl::StrAppend(&names, names.empty() ? "" : ", ", f);
    absl::StrAppend(&names, ", snapshots/step_NNNNNN.lopt");
    return absl::InvalidArgumentError(
        absl::StrCat("no file '", file, "' to export; a job's files: ", names));
  }
  {
    MutexLock l(&mu_);
    if (!jobs_.count(id)) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  }
  return ReadFile(JobDir(id) + "/" + file);
}

void JobManager::Shutdown() {
  MutexLock l(&mu_);
  shutdown_ = true;
  cv_.SignalAll();
  janitor_cv_.Signal();
  outputs_cv_.Signal();
  for (auto& [wid, w] : workers_) w->cv.Signal();
}

void JobManager::SaveAll() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    MutexLock l(&mu_);
    for (auto& [id, slot] : jobs_) {
      ++slot.busy;
      jobs.push_back(slot.job);
    }
  }
  int saved = 0;
  for (auto& job : jobs) {
    Effects fx;
    {
      MutexLock jl(&job->mu);
      if (!Terminal(job->state)) {
        Save(*job);
        saved += !job->unsaved;
      }
      fx = TakeEffects(*job);
    }
    Leave(*job, std::move(fx));
  }
  LogInfo("checkpointed the unfinished jobs", {{"jobs", absl::StrCat(saved)}});
}

std::string JobManager::JobDir(const std::string& id) const {
  return options_.state_dir + "/jobs/" + id;
}

absl::Status JobManager::Checkpoint(Job& job) {
  NamedTensors all;
  all.emplace_back("spec", StringTensor(job.spec.SerializeAsString()));
  v1::JobStatus st;
  st.set_state(job.state);
  st.set_error(job.error);
  st.set_submitted_unix_ms(job.submitted_ms);
  st.set_results_accepted(job.accepted);
  st.set_results_dropped_stale(job.dropped_stale);
  all.emplace_back("status", StringTensor(st.SerializeAsString()));
  for (auto& [k, v] : job.core->SaveState()) all.emplace_back("core/" + k, v);
  auto bytes = SerializeTensors(all);
  if (!bytes.ok()) return bytes.status();
  return WriteFileAtomically(JobDir(job.id) + "/checkpoint.pt", *bytes);
}

absl::Status JobManager::LoadAll() {
  std::string dir = options_.state_dir + "/jobs";
  DIR* d = opendir(dir.c_str());
  if (!d) return absl::OkStatus();
  std::vector<std::string> ids;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") ids.push_back(n);
  }
  closedir(d);
  MutexLock l(&mu_);
  for (const auto& id : ids) {
    auto bytes = ReadFile(JobDir(id) + "/checkpoint.pt");
    if (!bytes.ok()) {
      LogWarning("skipping a job directory without a readable checkpoint", {{"job", id}});
      continue;
    }
    auto all = DeserializeTensors(*bytes);
    if (!all.ok()) {
      LogWarning("skipping an unreadable checkpoint",
                 {{"job", id}, {"error", std::string(all.status().message())}});
      continue;
    }
    auto spec_t = Find(*all, "spec");
    auto status_t = Find(*all, "status");
    v1::JobSpec spec;
    v1::JobStatus st;
    if (!spec_t.ok() || !status_t.ok() || !spec.ParseFromString(TensorString(*spec_t)) ||
        !st.ParseFromString(TensorString(*status_t))) {
      LogWarning("skipping a checkpoint without its job spec", {{"job", id}});
      continue;
    }
    // A record from before names were checked at the door: one bad string
    // in a reply would break list and status for every job, so skip it.
    if (auto s = ValidateJobStrings(spec); !s.ok()) {
      LogWarning("skipping a job whose stored spec is invalid",
                 {{"job", id}, {"error", std::string(s.message())}});
      continue;
    }
    auto job = std::make_shared<Job>(id, std::move(spec));
    MutexLock jl(&job->mu);  // not shared yet: for the annotations
    job->core = MakeJobCore(job->spec, CoreOptions());
    NamedTensors core;
    for (auto& [k, v] : *all)
      if (k.rfind("core/", 0) == 0) core.emplace_back(k.substr(5), v);
    if (auto s = job->core->LoadState(core); !s.ok()) {
      LogWarning("skipping a checkpoint that does not load",
                 {{"job", id}, {"error", std::string(s.message())}});
      continue;
    }
    job->state = st.state();
    job->error = SanitizeUtf8(st.error());
    job->submitted_ms = st.submitted_unix_ms();
    job->accepted = st.results_accepted();
    job->dropped_stale = st.results_dropped_stale();
    job->updated_ms = NowUnixMs();
    if (auto last = job->core->LastLosses()) std::tie(job->last_meta, job->last_task) = *last;
    if (!Terminal(job->state) && job->core->Done()) {
      job->finishing = true;  // its trained file is the janitor's to write
      job->unsaved = true;
    }
    Slot& slot = jobs_[id];
    slot.job = job;
    if (!Terminal(job->state)) {
      // The rows after the checkpoint (metrics.csv's, yardstick.csv's) are
      // done again, not repeated.
      for (const auto& [file, from] : job->core->RowsRedoneFrom())
        if (auto s = DropCsvRowsFrom(JobDir(id) + "/" + file, from); !s.ok())
          LogWarning("cannot cut a run file back to the checkpoint",
                     {{"job", id}, {"file", file}, {"error", std::string(s.message())}});
      job->AddSeries();
      LogInfo("resuming job from its checkpoint",
              {{"job", id}, {"outer_step", absl::StrCat(job->core->Step())},
               {"total_steps", absl::StrCat(job->core->Total())}});
    } else {
      slot.finished_at = Clock::now() - std::chrono::hours(1);
      slot.series_removed = true;
      job->series_removed = true;
    }
    Effects fx = TakeEffects(*job);
    Apply(slot, fx);
  }
  return absl::OkStatus();
}

void JobManager::Touch(Job& job) {
  job.updated_ms = NowUnixMs();
  ++job.touches;
}

void JobManager::UpdateJobGauges() {
  std::map<v1::JobState, int> n;
  for (auto& [id, slot] : jobs_) ++n[slot.status.state()];
  for (v1::JobState s : {v1::QUEUED, v1::RUNNING, v1::SUCCEEDED, v1::FAILED, v1::CANCELLED})
    F().jobs.Add({{"state", v1::JobState_Name(s)}}).Set(n[s]);
}

v1::JobStatus JobManager::StatusOf(const Job& job) const {
  v1::JobStatus s;
  s.set_job_id(job.id);
  s.set_name(job.spec.name());
  s.set_state(job.state);
  s.set_outer_step(job.core->Step());
  s.set_total_steps(job.core->Total());
  // LHOPT: meta_loss is the latest iteration's mean reward, task_loss its
  // mean final eval loss (job_service.proto).
  s.set_meta_loss(job.last_meta);
  s.set_task_loss(job.last_task);
  s.set_alpha(job.core->Alpha());
  s.set_inner_particle_steps_per_second(job.rate);
  s.set_results_accepted(job.accepted);
  s.set_results_dropped_stale(job.dropped_stale);
  s.set_submitted_unix_ms(job.submitted_ms);
  s.set_updated_unix_ms(job.updated_ms);
  s.set_error(job.save_error.empty()   ? job.error
              : job.error.empty() ? job.save_error
                                  : absl::StrCat(job.error, "; ", job.save_error));
  s.set_buffer_failures(job.buffer_failures);
  s.set_buffer_error(job.buffer_error);
  return s;
}

v1::JobStatus JobManager::ClientStatus(const Slot& slot) const {
  v1::JobStatus s = slot.status;
  int running = 0;
  for (const auto& [wid, w] : workers_)
    if (w->alive && w->unit_id != 0 && w->unit_job == slot.job->id) ++running;
  s.set_workers(running);
  // A job that waits because no connected worker can hold a unit says so.
  if (running == 0 && !Terminal(s.state()) && s.error().empty()) {
    std::string why = WhyNoWorkerCanHold(slot.job->spec);
    if (!why.empty()) s.set_error(absl::StrCat("waiting: ", why));
  }
  return s;
}

std::string JobManager::WhyNoWorkerCanHold(const v1::JobSpec& spec) const {
  std::string why;
  int alive = 0;
  for (const auto& [wid, w] : workers_) {
    if (!w->alive) continue;
    std::string r = WhyWorkerCannotHold(w->info.memory_bytes(), w->info.max_particles(), spec);
    if (r.empty()) return "";
    if (++alive <= 3) absl::StrAppend(&why, alive > 1 ? "; " : "", w->info.name(), ": ", r);
  }
  if (alive == 0) return "";  // workers may yet connect
  if (alive > 3) absl::StrAppend(&why, "; and ", alive - 3, " more");
  return absl::StrCat("no connected worker can run a unit of this job (", alive,
                      alive == 1 ? " worker; " : " workers; ", why, ")");
}

absl::StatusOr<std::string> JobManager::Submit(const v1::JobSpec& spec) {
  // The job's kind runs it (its core here, its runners on the workers).
  if (auto kind = JobKinds().KindOf(spec); !kind.ok()) return kind.status();
  std::string id;
  {
    MutexLock l(&mu_);
    // Admission: refused at the door when no connected worker could run it.
    if (std::string why = WhyNoWorkerCanHold(spec); !why.empty())
      return absl::FailedPreconditionError(absl::StrCat(
          why, ": make its units smaller (pes.num_tasks, lhopt.particles, the task's sizes) or "
               "connect a worker with more memory"));
    do id = NewJobId(spec.name());
    while (jobs_.count(id) || reserved_ids_.count(id));
    reserved_ids_.insert(id);
  }
  // Not shared until it is in jobs_: its checkpoint is written outside mu_.
  auto job = std::make_shared<Job>(id, spec);
  absl::Status s;
  Effects fx;
  {
    MutexLock jl(&job->mu);
    job->core = MakeJobCore(spec, CoreOptions());
    job->submitted_ms = job->updated_ms = NowUnixMs();
    s = MakeDirs(JobDir(id));
    if (s.ok()) {
      s = Checkpoint(*job);
      if (!s.ok()) ::rmdir(JobDir(id).c_str());  // refused: leave no directory behind
    }
    if (s.ok()) {
      if (auto w = WriteJobText(JobDir(id), spec); !w.ok())
        LogWarning("cannot write job.textproto", {{"job", id}, {"error", std::string(w.message())}});
      job->AddSeries();
      LogInfo("job submitted", {{"job", id},
                                {"total_steps", absl::StrCat(job->core->Total())},
                                {"shards", absl::StrCat(job->core->NumShards())},
                                {"algorithm", job->core->algorithm()}});
    }
    fx = TakeEffects(*job);
  }
  MutexLock l(&mu_);
  reserved_ids_.erase(id);
  if (!s.ok()) return s;
  Slot& slot = jobs_[id];
  slot.job = job;
  Apply(slot, fx);
  UpdateJobGauges();
  SignalAll();
  return id;
}

absl::StatusOr<v1::JobStatus> JobManager::Get(const std::string& id, bool with_spec) const {
  MutexLock l(&mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  v1::JobStatus s = ClientStatus(it->second);
  if (with_spec) *s.mutable_job() = it->second.job->spec;
  return s;
}

std::vector<v1::JobStatus> JobManager::List() const {
  MutexLock l(&mu_);
  std::vector<v1::JobStatus> out;
  for (const auto& [id, slot] : jobs_) out.push_back(ClientStatus(slot));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.submitted_unix_ms() < b.submitted_unix_ms();
  });
  return out;
}

void JobManager::Finish(Job& job, v1::JobState state, const std::string& error) {
  job.error = error;
  // Their results will be answered "unknown unit"; their next heartbeat
  // tells them to stop the unit (Apply).
  job.fx.release_units = true;
  job.fx.ended_state = v1::JobState_Name(state);
  if (state == v1::SUCCEEDED) {
    // Not succeeded until its result is durable: Save finishes it.
    job.finishing = true;
    Save(job);
    return;
  }
  job.finishing = false;
  job.state = state;
  Save(job);  // a failure leaves it unsaved, retried by the janitor
  Finished(job);
}

void JobManager::WriteSummary(const Job& job) {
  // wall_seconds as metrics.csv's wall_s: from the submission to the end,
  // queueing and learner restarts in.
  const int64_t now = NowUnixMs();
  std::string json = absl::StrCat(
      "{\n  \"job\": ", JsonString(job.spec.name()), ",\n  \"job_id\": ", JsonString(job.id),
      ",\n  \"algorithm\": ", JsonString(job.core->algorithm()),
      ",\n  \"state\": ", JsonString(v1::JobState_Name(job.state)),
      ",\n  \"error\": ", JsonString(job.error));
  for (const auto& [key, value] : job.core->SummaryFields())
    absl::StrAppend(&json, ",\n  ", JsonString(key), ": ", value);
  absl::StrAppend(
      &json, ",\n  \"results_accepted\": ", job.accepted,
      ",\n  \"results_dropped_stale\": ", job.dropped_stale,
      ",\n  \"results_rejected\": ", job.rejected,
      ",\n  \"inner_particle_steps_per_second\": ", JsonNumber(job.rate),
      ",\n  \"submitted_unix_ms\": ", job.submitted_ms, ",\n  \"ended_unix_ms\": ", now,
      ",\n  \"wall_seconds\": ", JsonNumber(double(now - job.submitted_ms) / 1000.0),
      ",\n  \"trained_file\": ",
      job.state == v1::SUCCEEDED ? JsonString(job.core->TrainedFileName(false)) : "null", "\n}\n");
  if (auto s = WriteFileAtomically(JobDir(job.id) + "/summary.json", json); !s.ok())
    LogWarning("cannot write summary.json", {{"job", job.id}, {"error", std::string(s.message())}});
}

void JobManager::Finished(Job& job) {
  WriteSummary(job);
  job.fx.finished = true;
  job.fx.state_changed = true;
  QueueOutputs(job);
  LogInfo("job finished", {{"job", job.id}, {"state", v1::JobState_Name(job.state)},
                           {"outer_step", absl::StrCat(job.core->Step())},
                           {"meta_loss", absl::StrFormat("%.5g", job.last_meta)},
                           {"error", job.error}});
  Touch(job);
}

void JobManager::Save(Job& job) {
  std::string file = "checkpoint";
  absl::Status s;
  if (job.finishing) {
    // The trained file first: a checkpoint that says SUCCEEDED promises it.
    file = "trained";
    const std::string path = JobDir(job.id) + "/" + job.core->TrainedFileName(false);
    s = job.core->WriteTrainedFile(path);
  }
  // The files of results the checkpoint counts in (a meta-test report)
  // before it: a restored job asks again for what is not on disk.
  if (s.ok()) {
    file = "run_file";
    s = FlushRunFiles(job);
  }
  if (s.ok()) {
    file = "checkpoint";
    if (job.finishing) job.state = v1::SUCCEEDED;
    s = Checkpoint(job);
    if (!s.ok() && job.finishing) job.state = v1::RUNNING;
  }
  if (s.ok()) {
    if (!job.finishing) QueueOutputs(job);  // training.png as of this checkpoint
    const bool was_unsaved = job.unsaved;
    job.unsaved = false;
    job.save_error.clear();
    if (was_unsaved) {
      LogInfo("job saved after failed attempts", {{"job", job.id}});
      Touch(job);
    }
    if (job.finishing) {
      job.finishing = false;
      Finished(job);
    }
    return;
  }
  const bool first = !job.unsaved;
  job.unsaved = true;
  job.next_save = Clock::now() + kSaveRetry;
  job.save_error = absl::StrCat(
      job.finishing ? "its steps are done but its result is not saved yet: " : "not saved: ",
      s.message(), " (retrying every ",
      std::chrono::duration_cast<std::chrono::seconds>(kSaveRetry).count(), " s)");
  F().save_failures.Add({{"file", file}}).Increment();
  if (first)  // not once a second while the disk stays full
    LogError("cannot save the job", {{"job", job.id}, {"file", file},
                                     {"error", std::string(s.message())}});
  Touch(job);
}

absl::StatusOr<v1::JobStatus> JobManager::Cancel(const std::string& id) {
  std::shared_ptr<Job> job = Enter(id);
  if (!job) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  absl::Status refused;
  Effects fx;
  {
    MutexLock jl(&job->mu);
    if (Terminal(job->state))
      refused = absl::FailedPreconditionError(absl::StrCat(
          "job '", id, "' already ended (", v1::JobState_Name(job->state), ")"));
    else
      Finish(*job, v1::CANCELLED, "cancelled by a client");
    fx = TakeEffects(*job);
  }
  Leave(*job, std::move(fx));
  if (!refused.ok()) return refused;
  return Get(id, false);
}

absl::StatusOr<v1::JobStatus> JobManager::WaitForChange(const std::string& id, int64_t* version,
                                                        std::chrono::milliseconds timeout) const {
  MutexLock l(&mu_);
  const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
  while (true) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
    if (it->second.version != *version || shutdown_ || cv_.WaitWithDeadline(&mu_, deadline)) {
      auto jt = jobs_.find(id);
      if (jt == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
      *version = jt->second.version;
      return ClientStatus(jt->second);
    }
  }
}

absl::StatusOr<std::string> JobManager::ExportOptimizer(const std::string& id) {
  // The trained file of a running job is written in the job's section:
  // NextUnit passes over it meanwhile, nothing else waits.
  std::shared_ptr<Job> job = Enter(id);
  if (!job) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  absl::StatusOr<std::string> bytes;
  Effects fx;
  {
    MutexLock jl(&job->mu);
    const bool partial = job->state != v1::SUCCEEDED;
    const std::string path = JobDir(id) + "/" + job->core->TrainedFileName(partial);
    absl::Status s = partial ? job->core->WriteTrainedFile(path) : absl::OkStatus();
    bytes = s.ok() ? ReadFile(path) : absl::StatusOr<std::string>(s);
    fx = TakeEffects(*job);
  }
  Leave(*job, std::move(fx));
  return bytes;
}

std::string JobManager::RegisterWorker(const v1::WorkerInfo& info) {
  MutexLock l(&mu_);
  auto w = std::make_shared<Worker>();
  w->id = absl::StrCat("w", next_worker_++);
  w->info = info;
  w->last_seen = Clock::now();
  std::string id = w->id;
  workers_[id] = std::move(w);
  F().workers.Add({}).Set(ConnectedWorkersLocked());
  LogInfo("worker connected", {{"worker", id}, {"name", info.name()}, {"device", info.device()}});
  SignalAll();
  return id;
}

int JobManager::ConnectedWorkers() const {
  MutexLock l(&mu_);
  return ConnectedWorkersLocked();
}

int JobManager::ConnectedWorkersLocked() const {
  int n = 0;
  for (const auto& [id, w] : workers_) n += w->alive;
  return n;
}

void JobManager::DropWorker(Worker& w, const std::string& why) {
  if (!w.alive) return;
  w.alive = false;
  if (w.unit_id != 0) {
    auto it = jobs_.find(w.unit_job);
    if (it != jobs_.end()) {
      // Given back now if the job is free, else when its section ends.
      it->second.abandons.emplace_back(w.unit_shard, w.unit_token);
      if (it->second.busy == 0) DrainAbandons(it->second);
    }
    w.unit_id = 0;
  }
  F().workers.Add({}).Set(ConnectedWorkersLocked());
  LogInfo("worker gone", {{"worker", w.id}, {"name", w.info.name()}, {"why", why}});
  SignalAll();  // w too: it is gone
}

void JobManager::DisconnectWorker(const std::string& worker_id) {
  MutexLock l(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  DropWorker(*it->second, "stream ended");
  workers_.erase(it);
}

std::string JobManager::Heartbeat(const std::string& worker_id, uint64_t unit_id) {
  MutexLock l(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return "";
  Worker& w = *it->second;
  w.last_seen = Clock::now();
  if (unit_id == 0 || unit_id == w.unit_id) return "";
  if (unit_id == w.ended_unit)
    return absl::StrCat("unit ", unit_id, " of job '", w.ended_job, "': the job ended (",
                        w.ended_state, ")");
  return absl::StrCat("unit ", unit_id, " is no longer this worker's (reassigned, or its job ended)");
}

absl::StatusOr<std::optional<v1::WorkUnit>> JobManager::NextUnit(
    const std::string& worker_id, std::chrono::milliseconds timeout, std::string* payload) {
  std::shared_ptr<Job> job;
  auto unit = WaitForUnit(worker_id, timeout, payload, &job);
  // The job's spec (const: no lock needed) is copied into the unit outside
  // mu_, for which the other workers' results and units wait.
  if (unit.ok() && unit->has_value()) *(*unit)->mutable_job() = job->spec;
  return unit;
}

absl::StatusOr<std::optional<v1::WorkUnit>> JobManager::WaitForUnit(
    const std::string& worker_id, std::chrono::milliseconds timeout, std::string* payload,
    std::shared_ptr<Job>* job_out) {
  MutexLock l(&mu_);
  const absl::Time deadline = absl::Now() + absl::FromChrono(timeout);
  while (true) {
    auto wit = workers_.find(worker_id);
    if (shutdown_ || wit == workers_.end() || !wit->second->alive)
      return absl::NotFoundError("worker is no longer registered");
    Worker& w = *wit->second;
    if (w.unit_id == 0 && !jobs_.empty()) {
      // Round robin over the jobs, starting after the last one served.
      std::vector<Slot*> order;
      auto start = jobs_.upper_bound(rr_cursor_);
      for (auto it = start; it != jobs_.end(); ++it) order.push_back(&it->second);
      for (auto it = jobs_.begin(); it != start; ++it) order.push_back(&it->second);
      for (Slot* slot : order) {
        // A job in a section (an update, a checkpoint, an export) is passed
        // over: its lock would make this wait, and with it every worker
        // and client that needs mu_. Its Leave wakes this loop.
        if (slot->busy > 0 || Terminal(slot->status.state())) continue;
        Job& job = *slot->job;
        // Admission: only a worker that can hold its units.
        if (!WhyWorkerCannotHold(w.info.memory_bytes(), w.info.max_particles(), job.spec).empty())
          continue;
        MutexLock jl(&job.mu);  // free: nobody is busy with the job
        // A job whose steps are all done needs no more work, also while its
        // result is still being saved (it stays RUNNING until that is durable).
        if (Terminal(job.state) || job.core->Done()) continue;
        auto connected = [&](const std::string& name) {
          mu_.AssertHeld();
          for (const auto& [id, o] : workers_)
            if (o->alive && o->info.name() == name) return true;
          return false;
        };
        std::optional<CoreUnit> started = job.core->Start(w.info, payload != nullptr, connected);
        if (!started) continue;
        v1::WorkUnit u = std::move(started->unit);
        u.set_unit_id(next_unit_id_++);
        u.set_job_id(job.id);
        *job_out = slot->job;  // NextUnit copies its spec into the unit
        u.set_buffer_prefix(job.id + "/");
        if (started->has_payload) *u.mutable_payload() = EncodePayload(started->payload, payload);
        w.unit_id = u.unit_id();
        w.unit_job = job.id;
        w.unit_shard = started->shard;
        w.unit_token = started->token;
        if (job.state == v1::QUEUED) {
          job.state = v1::RUNNING;
          job.fx.state_changed = true;
        }
        rr_cursor_ = job.id;
        Touch(job);
        Effects fx = TakeEffects(job);
        // A unit taken makes none available to the other idle workers.
        Apply(*slot, fx, /*wake_idle=*/false);
        return std::optional<v1::WorkUnit>(std::move(u));
      }
    }
    // On the worker's own CondVar: while it runs a unit, only that unit's
    // end, its drop or shutdown wake it, not every other worker's result.
    std::shared_ptr<Worker> self = wit->second;  // kept should it be removed meanwhile
    if (self->cv.WaitWithDeadline(&mu_, deadline)) return std::optional<v1::WorkUnit>();
  }
}

v1::ResultAck JobManager::HandleResult(const std::string& worker_id, const v1::WorkResult& r,
                                       const absl::StatusOr<NamedTensors>& payload) {
  v1::ResultAck ack;
  ack.set_unit_id(r.unit_id());
  auto reject = [&](absl::StatusCode code, const std::string& msg) {
    ack.set_accepted(false);
    ack.set_code(static_cast<int>(code));
    ack.set_error(msg);
    return ack;
  };
  std::shared_ptr<Job> job;
  bool unit_ok = false;
  int64_t token = -1;
  {
    MutexLock l(&mu_);
    auto wit = workers_.find(worker_id);
    if (wit == workers_.end()) return reject(absl::StatusCode::kNotFound, "unknown worker");
    Worker& w = *wit->second;
    w.last_seen = Clock::now();
    auto jit = jobs_.find(r.job_id());
    if (jit == jobs_.end()) {
      LogWarning("result for an unknown job", {{"worker", worker_id}, {"job", r.job_id()}});
      return reject(absl::StatusCode::kNotFound, absl::StrCat("no job with id '", r.job_id(), "'"));
    }
    unit_ok = w.unit_id != 0 && r.unit_id() == w.unit_id && w.unit_job == r.job_id() &&
              w.unit_shard == r.shard();
    if (unit_ok) {
      // From here on the unit is over, whatever the verdict.
      token = w.unit_token;
      w.unit_id = 0;
      w.unit_job.clear();
      w.unit_shard = -1;
      w.unit_token = -1;
    }
    ++jit->second.busy;
    job = jit->second.job;
    w.in_result = true;
  }
  // The job's section: an LHOPT job's last result of an iteration runs its
  // PPO update here, and a checkpoint may follow; only this job waits.
  Effects fx;
  {
    MutexLock jl(&job->mu);
    ack = HandleResultLocked(*job, worker_id, r, unit_ok, token, payload);
    fx = TakeEffects(*job);
  }
  // The section's end and the worker's in one hold of mu_.
  MutexLock l(&mu_);
  LeaveLocked(*job, std::move(fx));
  if (auto wit = workers_.find(worker_id); wit != workers_.end()) {
    wit->second->in_result = false;
    wit->second->last_seen = Clock::now();
    // Its unit is over: another job may have one for it now. (Its own job's
    // Leave woke it if that job became free; NextUnit passes over a busy one.)
    if (unit_ok && jobs_.size() > 1) wit->second->cv.Signal();
  }
  return ack;
}

v1::ResultAck JobManager::HandleResultLocked(Job& job, const std::string& worker_id,
                                             const v1::WorkResult& r, bool unit_ok, int64_t token,
                                             const absl::StatusOr<NamedTensors>& payload) {
  v1::ResultAck ack;
  ack.set_unit_id(r.unit_id());
  auto reject = [&](absl::StatusCode code, const std::string& msg) {
    ack.set_accepted(false);
    ack.set_code(static_cast<int>(code));
    ack.set_error(msg);
    return ack;
  };
  // A job that ended after the unit was checked: its units were over.
  if (!unit_ok || Terminal(job.state)) {
    job.Rejected("unknown_unit").Increment();
    return reject(absl::StatusCode::kNotFound,
                  absl::StrCat("unit ", r.unit_id(), " of job '", r.job_id(), "' shard ", r.shard(),
                               " is not running on this worker (reassigned, or the job ended)"));
  }
  auto fail = [&](const std::string& reason, absl::StatusCode code, const std::string& msg) {
    job.mu.AssertHeld();
    job.core->Abandon(r.shard(), token, /*worker_gone=*/false);
    ++job.rejected;
    job.Rejected(reason).Increment();
    LogWarning("result rejected", {{"job", job.id}, {"worker", worker_id},
                                   {"reason", reason}, {"error", msg}});
    Touch(job);
    return reject(code, msg);
  };
  if (!r.error().empty()) {
    // The worker's text goes into replies and the job's status: valid
    // UTF-8 (proto3 strings) and bounded.
    const std::string error = SanitizeUtf8(r.error(), 1024);
    ack = fail("worker_error", absl::StatusCode::kAborted,
               absl::StrCat("the worker could not run the unit: ", error));
    // A job that no worker can run (its data is missing, say) fails with
    // the workers' reason instead of being retried for ever.
    if (++job.consecutive_worker_errors >= kMaxConsecutiveWorkerErrors)
      Finish(job, v1::FAILED, absl::StrCat("workers could not run it ", job.consecutive_worker_errors,
                                           " times in a row; last error: ", error));
    return ack;
  }
  job.consecutive_worker_errors = 0;
  if (r.buffer_failures() > 0) {
    // The unit ran (with fresh starts where the buffer failed): its result
    // counts, and the job's status says the buffer is failing.
    job.buffer_failures += r.buffer_failures();
    job.buffer_error = r.buffer_error().substr(0, 1024);
    F().buffer_failures.Add({}).Increment(static_cast<double>(r.buffer_failures()));
    LogWarning("replay buffer failing on a worker", {{"job", job.id}, {"worker", worker_id},
                                                    {"error", job.buffer_error}});
  }
  CoreVerdict v = job.core->Accept(r, token, payload);
  if (v.kind == CoreVerdict::kRejected)
    return fail(v.reason, v.error.code(), std::string(v.error.message()));
  RecordParticleSteps(job, v.particle_steps);
  if (v.kind == CoreVerdict::kDroppedStale) {
    ++job.dropped_stale;
    job.m_stale->Increment();
    ack.set_dropped_stale(true);
    Touch(job);
    return ack;
  }
  if (v.staleness >= 0) F().staleness_all.Observe(static_cast<double>(v.staleness));
  ++job.accepted;
  job.m_accepted->Increment();
  ack.set_accepted(true);
  if (v.kind == CoreVerdict::kUpdated) {
    job.last_meta = v.meta_loss;
    job.last_task = v.task_loss;
    job.m_outer->Increment();
    job.m_step->Set(job.core->Step());
    job.m_meta->Set(v.meta_loss);
    job.m_task->Set(v.task_loss);
    AppendMetricsRow(job, v.metrics_row);
    // A snapshot that cannot be written (a full disk) costs the job nothing
    // else: it is logged, and the next one is tried.
    if (absl::Status s = WriteSnapshotIfDue(*job.core, JobDir(job.id)); !s.ok())
      LogWarning("could not keep a snapshot", {{"job", job.id}, {"error", std::string(s.message())}});
  }
  if (!v.log_message.empty()) {  // every update's, a yardstick score's, a meta-test report's
    std::vector<LogField> fields = {{"job", job.id}};
    fields.insert(fields.end(), v.log_fields.begin(), v.log_fields.end());
    fields.emplace_back("worker", worker_id);
    Log(LogLevel::kInfo, v.log_message, fields);
  }
  for (const RunFileRow& row : v.file_rows) AppendRunFileRow(job, row);
  if (!v.file_writes.empty()) WriteRunFiles(job, std::move(v.file_writes));
  // A job ends with its last update, or with the last result it waited for
  // after it (LHOPT's yardstick of the final policy, ELO's meta-test).
  if (job.core->Done()) {
    Finish(job, v1::SUCCEEDED, "");
    return ack;
  }
  if (v.kind == CoreVerdict::kUpdated) {
    // The last update is saved too while the job waits for what follows
    // it, so that a restart does not train its last steps again.
    int64_t every = job.core->CheckpointEvery();
    if ((every > 0 && job.core->Step() % every == 0) || job.core->Step() >= job.core->Total())
      Save(job);
  }
  Touch(job);
  return ack;
}

void JobManager::RecordParticleSteps(Job& job, int64_t steps) {
  job.m_inner->Increment(static_cast<double>(std::max<int64_t>(0, steps)));
  auto now = Clock::now();
  job.recent.emplace_back(now, steps);
  job.recent_steps += steps;
  while (job.recent.size() > 1 && now - job.recent.front().first > std::chrono::seconds(30)) {
    job.recent_steps -= job.recent.front().second;
    job.recent.pop_front();
  }
  if (job.recent.size() > 1) {
    // The steps of all entries but the first (the window's start).
    const int64_t n = job.recent_steps - job.recent.front().second;
    double dt = std::chrono::duration<double>(now - job.recent.front().first).count();
    job.rate = dt > 0 ? n / dt : 0;
    job.m_rate->Set(job.rate);
  }
}

void JobManager::JanitorLoop() {
  while (true) {
    std::vector<std::shared_ptr<Job>> to_save, to_unlabel;
    std::vector<std::string> prefixes;
    {
      MutexLock l(&mu_);
      if (shutdown_) break;
      janitor_cv_.WaitWithTimeout(&mu_, absl::Milliseconds(200));
      if (shutdown_) break;
      auto now = Clock::now();
      for (auto& [id, w] : workers_)
        if (w->alive && !w->in_result &&
            now - w->last_seen > std::chrono::milliseconds(options_.worker_timeout_ms))
          DropWorker(*w, absl::StrCat("silent for more than ", options_.worker_timeout_ms, " ms"));
      // Saves retried and series removed in the jobs' own sections, outside mu_.
      for (auto& [id, slot] : jobs_) {
        if (slot.unsaved && now >= slot.next_save) {
          ++slot.busy;
          to_save.push_back(slot.job);
        }
        if (Terminal(slot.status.state()) && !slot.series_removed &&
            now - slot.finished_at > std::chrono::milliseconds(options_.metrics_retention_ms)) {
          slot.series_removed = true;
          ++slot.busy;
          to_unlabel.push_back(slot.job);
        }
      }
      if (!options_.buffer.target.empty()) prefixes.swap(cleanup_prefixes_);
      cleanup_prefixes_.clear();
    }
    for (auto& job : to_save) {
      Effects fx;
      {
        MutexLock jl(&job->mu);
        if (job->unsaved && Clock::now() >= job->next_save) Save(*job);
        fx = TakeEffects(*job);
      }
      Leave(*job, std::move(fx));
    }
    for (auto& job : to_unlabel) {
      Effects fx;
      {
        MutexLock jl(&job->mu);
        job->RemoveSeries();
        fx = TakeEffects(*job);
      }
      Leave(*job, std::move(fx));
    }
    if (prefixes.empty()) continue;
    // One attempt of 5 s each: the janitor also retries checkpoints.
    ClientConfig buffer = options_.buffer;
    buffer.timeout_ms = 5000;
    RemoteReplayBufferOptions once;
    once.max_attempts = 1;
    RemoteReplayBuffer client(buffer, once);
    for (const auto& p : prefixes) {
      // Closed too: a worker's late put must not create the tables again.
      auto resp = client.CloseTables(p);
      if (resp.ok())
        LogInfo("deleted the job's buffer tables",
                {{"prefix", p}, {"tables", absl::StrCat(resp->tables_deleted())}});
      else
        LogWarning("cannot delete the job's buffer tables",
                   {{"prefix", p}, {"error", std::string(resp.status().message())}});
    }
  }
}

}  // namespace lopt
