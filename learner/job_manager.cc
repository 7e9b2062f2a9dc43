#include "learner/job_manager.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/meta_test_report.h"
#include "common/buffer_protocol.h"
#include "common/checkpoint.h"
#include "common/job_limits.h"
#include "common/job_spec.h"
#include "common/lhopt_wire.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/run_files.h"
#include "common/tensor_codec.h"
#include "common/utf8.h"
#include "learner/job_core.h"
#include "worker/lhopt_yardstick.h"
#include "lopt/v1/buffer_service.grpc.pb.h"

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
      "Writes of a job's checkpoint or trained file that failed (they are retried), by file");
  prometheus::Family<prometheus::Histogram>& staleness = HistogramFamily(
      "lopt_result_staleness_steps", "Outer steps between a result's theta and the current one");
  prometheus::Family<prometheus::Counter>& buffer_failures = CounterFamily(
      "lopt_buffer_failures_total",
      "Replay-buffer calls that failed on the workers (lost puts, samples fallen back to fresh starts)");
};
Families& F() {
  static Families* f = new Families();
  return *f;
}

}  // namespace

struct JobManager::Worker {
  std::string id;
  v1::WorkerInfo info;
  Clock::time_point last_seen;
  bool alive = true;
  // The running unit, if any.
  uint64_t unit_id = 0;
  std::string unit_job;
  int32_t unit_shard = -1;
  int64_t unit_token = -1;  // the job core's own id of the unit (JobCore::Start)
  // The unit a job's end took from it, for the heartbeat's reply (Heartbeat).
  uint64_t ended_unit = 0;
  std::string ended_job, ended_state;
};

struct JobManager::Job {
  std::string id;
  v1::JobSpec spec;
  std::unique_ptr<JobCore> core;  // the algorithm: MakeJobCore(spec)
  v1::JobState state = v1::QUEUED;
  std::string error;
  int64_t submitted_ms = 0;
  int64_t updated_ms = 0;
  int64_t version = 0;  // bumped on every status change
  int64_t accepted = 0, dropped_stale = 0, rejected = 0;
  int consecutive_worker_errors = 0;
  int64_t buffer_failures = 0;  // reported by the workers' results
  std::string buffer_error;     // the last of them
  double last_meta = 0, last_task = 0;  // the latest update's (CoreVerdict)
  std::deque<std::pair<Clock::time_point, int64_t>> recent;  // (time, particle steps)
  double rate = 0;
  Clock::time_point finished_at;
  bool series_removed = false;
  // Its steps are done; it is SUCCEEDED once its trained file and a
  // checkpoint that says so are on disk (until then RUNNING).
  bool finishing = false;
  // The last write of its checkpoint or trained file failed: save_error says
  // why (shown in its status), and the janitor retries at next_save.
  bool unsaved = false;
  std::string save_error;
  Clock::time_point next_save;
  // Metrics series of this job (the core adds its own).
  prometheus::Counter* m_outer = nullptr;
  prometheus::Counter* m_inner = nullptr;
  prometheus::Counter* m_accepted = nullptr;
  prometheus::Counter* m_stale = nullptr;
  prometheus::Gauge* m_meta = nullptr;
  prometheus::Gauge* m_task = nullptr;
  prometheus::Gauge* m_step = nullptr;
  prometheus::Gauge* m_rate = nullptr;
  prometheus::Gauge* m_budget = nullptr;
  std::map<std::string, prometheus::Counter*> m_rejected;

  void AddSeries() {
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
  prometheus::Counter& Rejected(const std::string& reason) {
    auto it = m_rejected.find(reason);
    if (it != m_rejected.end()) return *it->second;
    auto* c = &F().rejected.Add({{"job_id", id}, {"reason", reason}});
    m_rejected[reason] = c;
    return *c;
  }
  void RemoveSeries() {
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
};

JobManager::JobManager(const LearnerOptions& options) : options_(options) {
  // Unit ids from before a restart must not match new ones.
  next_unit_id_ = (static_cast<uint64_t>(NowUnixMs()) << 16) | 1;
}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Create(const LearnerOptions& options) {
  std::unique_ptr<JobManager> m(new JobManager(options));
  if (auto s = MakeDirs(options.state_dir + "/jobs"); !s.ok()) return s;
  if (auto s = m->LoadAll(); !s.ok()) return s;
  F().workers.Add({}).Set(0);
  {
    std::lock_guard<std::mutex> l(m->mu_);
    m->UpdateJobGauges();
  }
  m->janitor_ = std::thread([p = m.get()] { p->JanitorLoop(); });
  m->yardstick_thread_ = std::thread([p = m.get()] { p->YardstickLoop(); });
  m->outputs_thread_ = std::thread([p = m.get()] { p->OutputsLoop(); });
  return m;
}

JobManager::~JobManager() {
  Shutdown();
  if (janitor_.joinable()) janitor_.join();
  if (yardstick_thread_.joinable()) yardstick_thread_.join();
  if (outputs_thread_.joinable()) outputs_thread_.join();
}

void JobManager::AppendMetricsRow(Job& job, const std::string& row) {
  if (row.empty()) return;
  const std::string path = JobDir(job.id) + "/metrics.csv";
  const bool fresh = !FileExists(path);
  std::ofstream out(path, std::ios::app);
  if (fresh) out << job.core->MetricsCsvHeader();
  // wall_s: seconds since the job was submitted (queueing and restarts in).
  out << row << MetricsCsvTail(job.rate, double(NowUnixMs() - job.submitted_ms) / 1000.0);
  if (!out) LogWarning("cannot append to metrics.csv", {{"job", job.id}, {"path", path}});
}

void JobManager::QueueOutputs(Job& job, bool meta_test) {
  for (auto& q : outputs_queue_)
    if (q.job_id == job.id) {  // one request a job: the latest wins
      q.meta_test |= meta_test;
      return;
    }
  outputs_queue_.push_back({job.id, job.spec, meta_test});
  cv_.notify_all();
}

namespace {
struct MetaTestAbandoned {};
}  // namespace

void JobManager::OutputsLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return shutdown_ || !outputs_queue_.empty(); });
    if (shutdown_) break;
    OutputsRequest req = std::move(outputs_queue_.front());
    outputs_queue_.pop_front();
    l.unlock();
    const std::string dir = JobDir(req.job_id);
    PlotEloTraining(dir, req.spec.name());  // false without metrics.csv (LHOPT)
    if (req.meta_test) {
      LogInfo("meta-test of the trained optimizer", {{"job", req.job_id}, {"out", dir + "/eval"}});
      MetaTestOptions o;
      o.progress = [this](int64_t, int64_t) {
        if (stop_outputs_.load()) throw MetaTestAbandoned();
      };
      try {
        auto table = RunAndWriteMetaTest(req.spec, dir + "/optimizer.lopt", dir + "/eval", o);
        if (table.ok())
          LogInfo("meta-test written", {{"job", req.job_id}, {"report", dir + "/eval/report.json"}});
        else
          LogError("meta-test failed", {{"job", req.job_id}, {"error", std::string(table.status().message())}});
      } catch (const MetaTestAbandoned&) {
        LogInfo("meta-test abandoned: the learner stops (it runs again after a restart)",
                {{"job", req.job_id}});
      } catch (const std::exception& e) {
        LogError("meta-test failed", {{"job", req.job_id}, {"error", e.what()}});
      }
    }
    l.lock();
  }
}

absl::StatusOr<std::string> JobManager::ExportFile(const std::string& id, const std::string& file) {
  static const std::set<std::string> kFiles = {
      "job.textproto",    "metrics.csv",      "training.png",          "yardstick.csv",
      "eval/report.json", "eval/curves.csv",  "eval/test_curves.csv",  "eval/curves.png",
      "eval/table.txt"};
  if (!kFiles.count(file)) {
    std::string names;
    for (const auto& f : kFiles) absl::StrAppend(&names, names.empty() ? "" : ", ", f);
    return absl::InvalidArgumentError(
        absl::StrCat("no file '", file, "' to export; a job's files: ", names));
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!jobs_.count(id)) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  }
  return ReadFile(JobDir(id) + "/" + file);
}

void JobManager::QueueYardstick(Job& job) {
  auto due = job.core->DueYardstick();
  if (!due) return;
  yardstick_queue_.push_back({job.id, job.spec, due->first, std::move(due->second)});
  cv_.notify_all();
}

// Scores run here, outside mu_: an evaluation trains optimizees for seconds
// to minutes, and the RPC doors must not wait for it. One job's
// LhoptYardstick (its reference fits) lives as long as the job runs.
void JobManager::YardstickLoop() {
  std::map<std::string, std::unique_ptr<LhoptYardstick>> sticks;
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return shutdown_ || !yardstick_queue_.empty(); });
    if (shutdown_) break;
    YardstickRequest req = std::move(yardstick_queue_.front());
    yardstick_queue_.pop_front();
    l.unlock();
    auto& stick = sticks[req.job_id];
    if (!stick) stick = std::make_unique<LhoptYardstick>(req.spec);
    auto r = stick->EvaluateShipped(req.policy, req.version);
    l.lock();
    auto it = jobs_.find(req.job_id);
    if (it == jobs_.end() || Terminal(it->second->state)) sticks.erase(req.job_id);
    if (!r.ok()) {
      LogError("LHOPT yardstick failed", {{"job", req.job_id}, {"error", std::string(r.status().message())}});
      continue;
    }
    if (it != jobs_.end()) it->second->core->SetYardstick(r->score, r->iteration);
    // yardstick.csv in the job's directory, as local mode writes it.
    const std::string path = JobDir(req.job_id) + "/yardstick.csv";
    std::string text = FileExists(path) ? ReadFile(path).value_or("") : YardstickCsvHeader(req.spec);
    text += YardstickCsvRow(*r);
    if (auto s = WriteFileAtomically(path, text); !s.ok())
      LogError("cannot write yardstick.csv", {{"job", req.job_id}, {"error", std::string(s.message())}});
    LogInfo("LHOPT yardstick", {{"job", req.job_id}, {"iteration", absl::StrCat(r->iteration)},
                                {"score", absl::StrFormat("%.4g", r->score)},
                                {"diverged", absl::StrCat(r->diverged, "/", r->runs)},
                                {"seconds", absl::StrFormat("%.1f", r->wall_seconds)}});
  }
}

void JobManager::Shutdown() {
  std::lock_guard<std::mutex> l(mu_);
  shutdown_ = true;
  stop_outputs_ = true;
  cv_.notify_all();
}

void JobManager::SaveAll() {
  std::lock_guard<std::mutex> l(mu_);
  int saved = 0;
  for (auto& [id, j] : jobs_)
    if (!Terminal(j->state)) {
      Save(*j);
      saved += !j->unsaved;
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
  std::lock_guard<std::mutex> l(mu_);
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
    auto job = std::make_unique<Job>();
    job->id = id;
    v1::JobStatus st;
    if (!spec_t.ok() || !status_t.ok() || !job->spec.ParseFromString(TensorString(*spec_t)) ||
        !st.ParseFromString(TensorString(*status_t))) {
      LogWarning("skipping a checkpoint without its job spec", {{"job", id}});
      continue;
    }
    // A record from before names were checked at the door: one bad string
    // in a reply would break list and status for every job, so skip it.
    if (auto s = ValidateJobStrings(job->spec); !s.ok()) {
      LogWarning("skipping a job whose stored spec is invalid",
                 {{"job", id}, {"error", std::string(s.message())}});
      continue;
    }
    job->core = MakeJobCore(job->spec);
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
    if (!Terminal(job->state)) {
      // metrics.csv's rows after the checkpoint are done again, not repeated.
      if (auto s = DropCsvRowsFrom(JobDir(id) + "/metrics.csv", job->core->Step()); !s.ok())
        LogWarning("cannot cut metrics.csv back to the checkpoint",
                   {{"job", id}, {"error", std::string(s.message())}});
      job->AddSeries();
      LogInfo("resuming job from its checkpoint",
              {{"job", id}, {"outer_step", absl::StrCat(job->core->Step())},
               {"total_steps", absl::StrCat(job->core->Total())}});
    } else {
      job->finished_at = Clock::now() - std::chrono::hours(1);
      job->series_removed = true;
      // A meta-test that a stop abandoned runs again.
      if (job->state == v1::SUCCEEDED && options_.meta_test && !IsLhoptJob(job->spec) &&
          !FileExists(JobDir(id) + "/eval/report.json"))
        QueueOutputs(*job, true);
    }
    jobs_[id] = std::move(job);
  }
  return absl::OkStatus();
}

void JobManager::Touch(Job& job) {
  job.updated_ms = NowUnixMs();
  ++job.version;
  cv_.notify_all();
}

void JobManager::UpdateJobGauges() {
  std::map<v1::JobState, int> n;
  for (auto& [id, j] : jobs_) ++n[j->state];
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
  int running = 0;
  for (const auto& [wid, w] : workers_)
    if (w->alive && w->unit_id != 0 && w->unit_job == job.id) ++running;
  s.set_workers(running);
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

absl::StatusOr<std::string> JobManager::Submit(const v1::JobSpec& spec) {
  auto job = std::make_unique<Job>();
  job->spec = spec;
  job->core = MakeJobCore(spec);
  job->submitted_ms = job->updated_ms = NowUnixMs();
  std::lock_guard<std::mutex> l(mu_);
  do job->id = NewJobId(spec.name());
  while (jobs_.count(job->id));
  if (auto s = MakeDirs(JobDir(job->id)); !s.ok()) return s;
  if (auto s = Checkpoint(*job); !s.ok()) {
    ::rmdir(JobDir(job->id).c_str());  // refused: leave no directory behind
    return s;
  }
  if (auto s = WriteJobText(JobDir(job->id), spec); !s.ok())
    LogWarning("cannot write job.textproto", {{"job", job->id}, {"error", std::string(s.message())}});
  job->AddSeries();
  std::string id = job->id;
  LogInfo("job submitted", {{"job", id},
                            {"total_steps", absl::StrCat(job->core->Total())},
                            {"shards", absl::StrCat(job->core->NumShards())},
                            {"algorithm", job->core->algorithm()}});
  QueueYardstick(*job);  // LHOPT's yardstick of the policy before training
  jobs_[id] = std::move(job);
  UpdateJobGauges();
  cv_.notify_all();
  return id;
}

absl::StatusOr<v1::JobStatus> JobManager::Get(const std::string& id, bool with_spec) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  v1::JobStatus s = StatusOf(*it->second);
  if (with_spec) *s.mutable_job() = it->second->spec;
  return s;
}

std::vector<v1::JobStatus> JobManager::List() const {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<v1::JobStatus> out;
  for (const auto& [id, j] : jobs_) out.push_back(StatusOf(*j));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.submitted_unix_ms() < b.submitted_unix_ms();
  });
  return out;
}

void JobManager::Finish(Job& job, v1::JobState state, const std::string& error) {
  job.error = error;
  for (auto& [wid, w] : workers_)
    if (w->unit_job == job.id) {
      // Their results will be answered "unknown unit"; their next heartbeat
      // tells them to stop the unit.
      w->ended_unit = w->unit_id;
      w->ended_job = job.id;
      w->ended_state = v1::JobState_Name(state);
      w->unit_id = 0;
      w->unit_job.clear();
      w->unit_shard = -1;
      w->unit_token = -1;
    }
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

void JobManager::Finished(Job& job) {
  job.finished_at = Clock::now();
  QueueOutputs(job, job.state == v1::SUCCEEDED && options_.meta_test && !IsLhoptJob(job.spec));
  cleanup_prefixes_.push_back(job.id + "/");
  LogInfo("job finished", {{"job", job.id}, {"state", v1::JobState_Name(job.state)},
                           {"outer_step", absl::StrCat(job.core->Step())},
                           {"meta_loss", absl::StrFormat("%.5g", job.last_meta)},
                           {"error", job.error}});
  UpdateJobGauges();
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
    if (s.ok()) {
      file = "checkpoint";
      job.state = v1::SUCCEEDED;
      s = Checkpoint(job);
      if (!s.ok()) job.state = v1::RUNNING;
    }
  } else {
    s = Checkpoint(job);
  }
  if (s.ok()) {
    if (!job.finishing) QueueOutputs(job, false);  // training.png as of this checkpoint
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
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  Job& job = *it->second;
  if (Terminal(job.state))
    return absl::FailedPreconditionError(absl::StrCat("job '", id, "' already ended (",
                                                      v1::JobState_Name(job.state), ")"));
  Finish(job, v1::CANCELLED, "cancelled by a client");
  return StatusOf(job);
}

absl::StatusOr<v1::JobStatus> JobManager::WaitForChange(const std::string& id, int64_t* version,
                                                        std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> l(mu_);
  auto deadline = Clock::now() + timeout;
  while (true) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
    if (it->second->version != *version || shutdown_ ||
        cv_.wait_until(l, deadline) == std::cv_status::timeout) {
      auto jt = jobs_.find(id);
      if (jt == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
      *version = jt->second->version;
      return StatusOf(*jt->second);
    }
  }
}

absl::StatusOr<std::string> JobManager::ExportOptimizer(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job with id '", id, "'"));
  Job& job = *it->second;
  const bool partial = job.state != v1::SUCCEEDED;
  const std::string path = JobDir(id) + "/" + job.core->TrainedFileName(partial);
  if (partial) {
    if (auto s = job.core->WriteTrainedFile(path); !s.ok()) return s;
  }
  return ReadFile(path);
}

std::string JobManager::RegisterWorker(const v1::WorkerInfo& info) {
  std::lock_guard<std::mutex> l(mu_);
  auto w = std::make_unique<Worker>();
  w->id = absl::StrCat("w", next_worker_++);
  w->info = info;
  w->last_seen = Clock::now();
  std::string id = w->id;
  workers_[id] = std::move(w);
  F().workers.Add({}).Set(ConnectedWorkers());
  LogInfo("worker connected", {{"worker", id}, {"name", info.name()}, {"device", info.device()}});
  cv_.notify_all();
  return id;
}

int JobManager::ConnectedWorkers() const {
  int n = 0;
  for (const auto& [id, w] : workers_) n += w->alive;
  return n;
}

void JobManager::DropWorker(Worker& w, const std::string& why) {
  if (!w.alive) return;
  w.alive = false;
  if (w.unit_id != 0) {
    auto it = jobs_.find(w.unit_job);
    if (it != jobs_.end() && !Terminal(it->second->state)) {
      it->second->core->Abandon(w.unit_shard, w.unit_token, /*worker_gone=*/true);
      F().reassigned.Add({}).Increment();
      Touch(*it->second);
    }
    w.unit_id = 0;
  }
  F().workers.Add({}).Set(ConnectedWorkers());
  LogInfo("worker gone", {{"worker", w.id}, {"name", w.info.name()}, {"why", why}});
  cv_.notify_all();
}

void JobManager::DisconnectWorker(const std::string& worker_id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  DropWorker(*it->second, "stream ended");
  workers_.erase(it);
}

std::string JobManager::Heartbeat(const std::string& worker_id, uint64_t unit_id) {
  std::lock_guard<std::mutex> l(mu_);
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
  std::unique_lock<std::mutex> l(mu_);
  auto deadline = Clock::now() + timeout;
  while (true) {
    auto wit = workers_.find(worker_id);
    if (shutdown_ || wit == workers_.end() || !wit->second->alive)
      return absl::NotFoundError("worker is no longer registered");
    Worker& w = *wit->second;
    if (w.unit_id == 0 && !jobs_.empty()) {
      // Round robin over the jobs, starting after the last one served.
      std::vector<Job*> order;
      auto start = jobs_.upper_bound(rr_cursor_);
      for (auto it = start; it != jobs_.end(); ++it) order.push_back(it->second.get());
      for (auto it = jobs_.begin(); it != start; ++it) order.push_back(it->second.get());
      for (Job* job : order) {
        // A job whose steps are all done needs no more work, also while its
        // result is still being saved (it stays RUNNING until that is durable).
        if (Terminal(job->state) || job->core->Done()) continue;
        auto connected = [&](const std::string& name) {
          for (const auto& [id, o] : workers_)
            if (o->alive && o->info.name() == name) return true;
          return false;
        };
        std::optional<CoreUnit> start = job->core->Start(w.info, payload != nullptr, connected);
        if (!start) continue;
        v1::WorkUnit u = std::move(start->unit);
        u.set_unit_id(next_unit_id_++);
        u.set_job_id(job->id);
        *u.mutable_job() = job->spec;
        u.set_buffer_prefix(job->id + "/");
        if (start->has_payload) *u.mutable_payload() = EncodePayload(start->payload, payload);
        w.unit_id = u.unit_id();
        w.unit_job = job->id;
        w.unit_shard = start->shard;
        w.unit_token = start->token;
        if (job->state == v1::QUEUED) {
          job->state = v1::RUNNING;
          UpdateJobGauges();
        }
        rr_cursor_ = job->id;
        Touch(*job);
        return std::optional<v1::WorkUnit>(std::move(u));
      }
    }
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout)
      return std::optional<v1::WorkUnit>();
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
  std::lock_guard<std::mutex> l(mu_);
  auto wit = workers_.find(worker_id);
  if (wit == workers_.end()) return reject(absl::StatusCode::kNotFound, "unknown worker");
  Worker& w = *wit->second;
  w.last_seen = Clock::now();
  auto jit = jobs_.find(r.job_id());
  if (jit == jobs_.end()) {
    LogWarning("result for an unknown job", {{"worker", worker_id}, {"job", r.job_id()}});
    return reject(absl::StatusCode::kNotFound, absl::StrCat("no job with id '", r.job_id(), "'"));
  }
  Job& job = *jit->second;
  if (w.unit_id == 0 || r.unit_id() != w.unit_id || w.unit_job != r.job_id() ||
      w.unit_shard != r.shard()) {
    job.Rejected("unknown_unit").Increment();
    return reject(absl::StatusCode::kNotFound,
                  absl::StrCat("unit ", r.unit_id(), " of job '", r.job_id(), "' shard ", r.shard(),
                               " is not running on this worker (reassigned, or the job ended)"));
  }
  // From here on the unit is over, whatever the verdict.
  const int64_t token = w.unit_token;
  w.unit_id = 0;
  w.unit_job.clear();
  w.unit_shard = -1;
  w.unit_token = -1;
  auto fail = [&](const std::string& reason, absl::StatusCode code, const std::string& msg) {
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
  if (v.staleness >= 0)
    F().staleness.Add({}, prometheus::Histogram::BucketBoundaries{0, 1, 2, 4, 8, 16, 32, 64, 128})
        .Observe(static_cast<double>(v.staleness));
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
    std::vector<LogField> fields = {{"job", job.id}};
    fields.insert(fields.end(), v.log_fields.begin(), v.log_fields.end());
    fields.emplace_back("worker", worker_id);
    Log(LogLevel::kInfo, v.log_message, fields);
    AppendMetricsRow(job, v.metrics_row);
    QueueYardstick(job);
    if (job.core->Done()) {
      Finish(job, v1::SUCCEEDED, "");
      return ack;
    }
    int64_t every = job.core->CheckpointEvery();
    if (every > 0 && job.core->Step() % every == 0) Save(job);
  }
  Touch(job);
  return ack;
}

void JobManager::RecordParticleSteps(Job& job, int64_t steps) {
  job.m_inner->Increment(static_cast<double>(std::max<int64_t>(0, steps)));
  auto now = Clock::now();
  job.recent.emplace_back(now, steps);
  while (job.recent.size() > 1 && now - job.recent.front().first > std::chrono::seconds(30))
    job.recent.pop_front();
  if (job.recent.size() > 1) {
    int64_t n = 0;
    for (size_t i = 1; i < job.recent.size(); ++i) n += job.recent[i].second;
    double dt = std::chrono::duration<double>(now - job.recent.front().first).count();
    job.rate = dt > 0 ? n / dt : 0;
    job.m_rate->Set(job.rate);
  }
}

void JobManager::JanitorLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!shutdown_) {
    cv_.wait_for(l, std::chrono::milliseconds(200));
    if (shutdown_) break;
    auto now = Clock::now();
    for (auto& [id, w] : workers_)
      if (w->alive && now - w->last_seen > std::chrono::milliseconds(options_.worker_timeout_ms))
        DropWorker(*w, absl::StrCat("silent for more than ", options_.worker_timeout_ms, " ms"));
    for (auto& [id, j] : jobs_)
      if (j->unsaved && now >= j->next_save) Save(*j);
    for (auto& [id, j] : jobs_)
      if (Terminal(j->state) && !j->series_removed &&
          now - j->finished_at > std::chrono::milliseconds(options_.metrics_retention_ms))
        j->RemoveSeries();
    if (!cleanup_prefixes_.empty() && !options_.buffer.target.empty()) {
      std::vector<std::string> prefixes;
      prefixes.swap(cleanup_prefixes_);
      l.unlock();
      auto stub = v1::BufferService::NewStub(MakeChannel(options_.buffer));
      for (const auto& p : prefixes) {
        v1::DeleteTablesRequest req;
        req.set_prefix(p);
        v1::DeleteTablesResponse resp;
        auto ctx = MakeContext(options_.buffer, 5000);
        // Closed too: a worker's late put must not create the tables again.
        ctx->AddMetadata(kClosePrefixMetadata, "1");
        grpc::Status s = stub->DeleteTables(ctx.get(), req, &resp);
        if (s.ok())
          LogInfo("deleted the job's buffer tables",
                  {{"prefix", p}, {"tables", absl::StrCat(resp.tables_deleted())}});
        else
          LogWarning("cannot delete the job's buffer tables",
                     {{"prefix", p}, {"error", s.error_message()}});
      }
      l.lock();
    } else {
      cleanup_prefixes_.clear();
    }
  }
}

}  // namespace lopt
