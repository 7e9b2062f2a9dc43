// The learner's gRPC doors in-process on loopback, driven by a hand-written
// worker speaking the real WorkService protocol: what the learner does with
// results that are wrong, stale, for unknown jobs or units, or NaN; and
// what clients without credentials or with oversized messages get.
#include <atomic>
#include <cmath>
#include <deque>
#include <functional>
#include <thread>
#include <map>
#include <regex>

#include <filesystem>

#include <gtest/gtest.h>

#include <sstream>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/lhopt/lhopt_wire.h"
#include "common/rpc/metrics.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "common/util/checkpoint.h"
#include "common/util/remove_tree.h"
#include "common/util/run_files.h"
#include "kinds/job_door.h"
#include "learner/job_manager.h"
#include "learner/learner_services.h"
#include "learner/lhopt_job.h"
#include "tests/support/learner_harness.h"
#include "worker/worker.h"

namespace lopt {
namespace {

using namespace std::chrono_literals;
using testing::FakeWorker;
using testing::GoodResult;
using testing::LearnerServer;
using testing::Submit;

// The raw value of `key` in a summary.json ("" where it has none).
std::string JsonValue(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\": ([^,\n]*)"))) return "";
  return m[1];
}

// The file of the job's directory is what ExportFile returns.
void ExpectExportable(LearnerServer& s, const std::string& id, const std::string& file) {
  auto exported = s.manager().ExportFile(id, file);
  ASSERT_TRUE(exported.ok()) << file << ": " << exported.status();
  EXPECT_EQ(*exported, ReadFile(s.dir() + "/jobs/" + id + "/" + file).value_or("")) << file;
}

const char kJob[] =
    "name: \"svc\"\nseed: 3\n"
    "task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }\n"
    "pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }\n"
    "elo { buffer { enabled: false } }\n"
    "budget { outer_steps: 3 checkpoint_every: 0 }\n";

TEST(LearnerService, RejectsBadResultsClearlyAndKeepsTheJob) {
  LearnerServer s;
  std::string id = Submit(s, kJob);
  FakeWorker w(s.client());
  ASSERT_TRUE(w.Register());
  v1::WorkUnit u = w.NextUnit();
  ASSERT_EQ(u.job_id(), id);
  EXPECT_EQ(u.elo().theta().shape(0), 2402);  // small_fc_lopt with hidden 32

  // A gradient of the wrong shape.
  v1::WorkResult bad = GoodResult(u);
  *bad.mutable_elo()->mutable_grad() = EncodeTensor(torch::ones({3}), "grad");
  v1::ResultAck a = w.Send(bad);
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(a.error().find("gradient has shape [3] but must be ["), std::string::npos) << a.error();

  // The unit went back to the pool; NaN losses are refused too.
  u = w.NextUnit();
  v1::WorkResult nan = GoodResult(u);
  nan.mutable_elo()->set_meta_loss(std::nan(""));
  a = w.Send(nan);
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(a.error().find("non-finite"), std::string::npos) << a.error();

  // A corrupted tensor (checksum) and a result for an unknown job.
  u = w.NextUnit();
  v1::WorkResult corrupt = GoodResult(u);
  corrupt.mutable_elo()->mutable_grad()->mutable_data()->at(0) ^= 0x5a;
  a = w.Send(corrupt);
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kDataLoss)) << a.error();
  u = w.NextUnit();
  v1::WorkResult unknown = GoodResult(u);
  unknown.set_job_id("no-such-job");
  a = w.Send(unknown);
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_NE(a.error().find("no-such-job"), std::string::npos);

  // None of it moved the job; a good result does.
  auto st = s.manager().Get(id, false);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->outer_step(), 0);
  a = w.Send(GoodResult(u));
  EXPECT_TRUE(a.accepted()) << a.error();
  st = s.manager().Get(id, false);
  EXPECT_EQ(st->outer_step(), 1);
  // A result for a unit that is not running here.
  v1::WorkResult again = GoodResult(u);
  a = w.Send(again);
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kNotFound));
  EXPECT_NE(a.error().find("is not running on this worker"), std::string::npos);
  EXPECT_EQ(s.manager().Get(id, false)->outer_step(), 1);
}

TEST(LearnerService, DropsStaleResultsAndCountsThem) {
  LearnerServer s;
  std::string id = Submit(s, std::string(kJob) + "cluster { max_staleness: 0 }\n");
  FakeWorker w(s.client());
  ASSERT_TRUE(w.Register());
  v1::WorkUnit u0 = w.NextUnit();
  EXPECT_EQ(u0.theta_version(), 0);
  EXPECT_TRUE(w.Send(GoodResult(u0)).accepted());
  EXPECT_EQ(s.manager().Get(id, false)->outer_step(), 1);
  v1::WorkUnit u1 = w.NextUnit();
  EXPECT_EQ(u1.theta_version(), 1);
  // A result computed with theta of step 0 arrives at step 1: beyond the
  // bound of 0 steps, so dropped and counted, and theta does not move.
  v1::WorkResult old = GoodResult(u1);
  old.set_theta_version(0);
  v1::ResultAck ack = w.Send(old);
  EXPECT_FALSE(ack.accepted());
  EXPECT_TRUE(ack.dropped_stale());
  auto st = s.manager().Get(id, false);
  EXPECT_EQ(st->results_dropped_stale(), 1);
  EXPECT_EQ(st->results_accepted(), 1);
  EXPECT_EQ(st->outer_step(), 1);
  // The shard is free again: the next unit carries the current version.
  EXPECT_EQ(w.NextUnit().theta_version(), 1);
}

TEST(LearnerService, BufferFailuresOnWorkersShowInTheJobsStatus) {
  LearnerServer s;
  std::string id = Submit(s, kJob);
  FakeWorker w(s.client());
  ASSERT_TRUE(w.Register());
  v1::WorkUnit u = w.NextUnit();
  EXPECT_EQ(s.manager().Get(id, false)->buffer_failures(), 0);
  // The unit ran with fresh starts where the buffer failed: its result still
  // counts, and the job's status says that the buffer is failing.
  v1::WorkResult r = GoodResult(u);
  r.set_buffer_failures(3);
  r.set_buffer_error("put on table x: UNAVAILABLE: failed to connect to all addresses");
  EXPECT_TRUE(w.Send(r).accepted());
  auto st = s.manager().Get(id, false);
  EXPECT_EQ(st->results_accepted(), 1);
  EXPECT_EQ(st->buffer_failures(), 3);
  EXPECT_NE(st->buffer_error().find("UNAVAILABLE"), std::string::npos);
}

TEST(LearnerService, ReassignsTheUnitOfAWorkerThatWentAway) {
  LearnerServer s;
  std::string id = Submit(s, kJob);
  auto a = std::make_unique<FakeWorker>(s.client());
  ASSERT_TRUE(a->Register("a"));
  v1::WorkUnit ua = a->NextUnit();
  a->ctx_->TryCancel();  // the worker vanishes mid-unit
  a.reset();
  FakeWorker b(s.client());
  ASSERT_TRUE(b.Register("b"));
  v1::WorkUnit ub = b.NextUnit();
  EXPECT_EQ(ub.shard(), ua.shard());
  EXPECT_NE(ub.unit_id(), ua.unit_id());
  EXPECT_TRUE(b.Send(GoodResult(ub)).accepted());
}

TEST(LearnerService, ReassignsTheUnitOfASilentWorkerAfterTheTimeout) {
  LearnerServer s;  // worker timeout 2,000 ms
  std::string id = Submit(s, kJob);
  FakeWorker a(s.client());
  ASSERT_TRUE(a.Register("silent"));
  v1::WorkUnit ua = a.NextUnit();  // then says nothing: no heartbeat, no result
  FakeWorker b(s.client());
  ASSERT_TRUE(b.Register("b"));
  // b stays alive with heartbeats while it waits.
  std::atomic<bool> got{false};
  std::thread beats([&] {
    while (!got) {
      v1::WorkerMessage hb;
      hb.mutable_heartbeat();
      b.stream_->Write(hb);
      std::this_thread::sleep_for(200ms);
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  v1::WorkUnit ub = b.NextUnit();
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  got = true;
  beats.join();
  EXPECT_EQ(ub.shard(), ua.shard());
  EXPECT_GE(waited, 1.5);  // not before the timeout
  EXPECT_TRUE(b.Send(GoodResult(ub)).accepted());
  // The learner closed the silent worker's stream: a late result cannot land.
  v1::LearnerMessage m;
  EXPECT_FALSE(a.stream_->Read(&m));
  EXPECT_EQ(s.manager().Get(id, false)->outer_step(), 1);
}

TEST(LearnerService, CancelStopsAJobAndItsUnits) {
  LearnerServer s;
  std::string id = Submit(s, kJob);
  FakeWorker w(s.client());
  ASSERT_TRUE(w.Register());
  v1::WorkUnit u = w.NextUnit();
  auto stub = v1::JobService::NewStub(MakeChannel(s.client()));
  v1::CancelJobRequest req;
  req.set_job_id(id);
  v1::JobStatus st;
  auto ctx = MakeContext(s.client());
  ASSERT_TRUE(stub->Cancel(ctx.get(), req, &st).ok());
  EXPECT_EQ(st.state(), v1::CANCELLED);
  auto ctx2 = MakeContext(s.client());
  EXPECT_EQ(stub->Cancel(ctx2.get(), req, &st).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  v1::ResultAck a = w.Send(GoodResult(u));
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(s.manager().Get(id, false)->outer_step(), 0);
  EXPECT_EQ(s.manager().Get(id, false)->state(), v1::CANCELLED);
  // The job's directory says how it ended (issue 13), with no trained file.
  auto summary = ReadFile(s.dir() + "/jobs/" + id + "/summary.json");
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(JsonValue(*summary, "state"), "\"CANCELLED\"") << *summary;
  EXPECT_EQ(JsonValue(*summary, "error"), "\"cancelled by a client\"") << *summary;
  EXPECT_EQ(JsonValue(*summary, "job_id"), "\"" + id + "\"") << *summary;
  EXPECT_EQ(JsonValue(*summary, "algorithm"), "\"elo_pes\"") << *summary;
  EXPECT_EQ(JsonValue(*summary, "outer_steps"), "0") << *summary;
  EXPECT_EQ(JsonValue(*summary, "total_steps"), "3") << *summary;
  EXPECT_EQ(JsonValue(*summary, "results_accepted"), "0") << *summary;
  EXPECT_EQ(JsonValue(*summary, "trained_file"), "null") << *summary;
  EXPECT_GE(std::stod(JsonValue(*summary, "wall_seconds")), 0.0) << *summary;
  ExpectExportable(s, id, "summary.json");
}

TEST(LearnerService, SharesWorkersFairlyBetweenJobs) {
  LearnerServer s;
  std::string a = Submit(s, kJob);
  std::string b = Submit(s, kJob);
  FakeWorker w(s.client());
  ASSERT_TRUE(w.Register());
  std::map<std::string, int> units;
  std::string last;
  for (int i = 0; i < 6; ++i) {
    v1::WorkUnit u = w.NextUnit();
    EXPECT_NE(u.job_id(), last) << "the same job twice in a row at unit " << i;
    last = u.job_id();
    ++units[u.job_id()];
    EXPECT_TRUE(w.Send(GoodResult(u)).accepted());
  }
  EXPECT_EQ(units[a], 3);
  EXPECT_EQ(units[b], 3);
  EXPECT_EQ(s.manager().Get(a, false)->state(), v1::SUCCEEDED);
  EXPECT_EQ(s.manager().Get(b, false)->state(), v1::SUCCEEDED);
}

TEST(LearnerService, RealWorkerEngineRunsAJobInProcess) {
  LearnerServer s;
  std::string id = Submit(s, kJob);
  WorkerOptions opt;
  opt.learner = s.client();
  opt.name = "engine";
  Worker worker(opt);
  std::thread t([&] { worker.Run(); });
  int64_t version = -1;
  v1::JobStatus st;
  for (int i = 0; i < 200 && st.state() != v1::SUCCEEDED; ++i)
    st = *s.manager().WaitForChange(id, &version, 200ms);
  worker.Stop();
  t.join();
  EXPECT_EQ(st.state(), v1::SUCCEEDED);
  EXPECT_EQ(st.outer_step(), 3);
  EXPECT_EQ(worker.units_done(), 3);
}

const char kLhoptJob[] = R"(
    name: "lhopt_svc" seed: 5
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
      particles: 2 episodes_per_iteration: 4 iterations: 2 hidden_size: 16
      curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 2
      checkpoint_every: 1
    })";

TEST(LearnerService, RealWorkerEngineRunsAnLhoptJobInProcess) {
  LearnerServer s;
  std::string id = Submit(s, kLhoptJob);
  WorkerOptions opt;
  opt.learner = s.client();
  opt.name = "engine";
  Worker worker(opt);
  std::thread t([&] { worker.Run(); });
  int64_t version = -1;
  v1::JobStatus st;
  for (int i = 0; i < 300 && st.state() != v1::SUCCEEDED && st.state() != v1::FAILED; ++i)
    st = *s.manager().WaitForChange(id, &version, 200ms);
  worker.Stop();
  t.join();
  EXPECT_EQ(st.state(), v1::SUCCEEDED) << st.error();
  EXPECT_EQ(st.outer_step(), 2);
  EXPECT_EQ(st.total_steps(), 2);
  EXPECT_TRUE(std::isfinite(st.meta_loss()));  // the mean reward
  // 2 iterations of 4 episodes of 2 particles: 4 units, none rejected.
  EXPECT_EQ(worker.units_done(), 4);
  EXPECT_EQ(st.results_accepted(), 4);
  // The export is the controller file, loadable as such.
  auto bytes = s.manager().ExportOptimizer(id);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::string path = ::testing::TempDir() + "/lhopt_svc_controller.lhopt";
  ASSERT_TRUE(WriteFileAtomically(path, *bytes).ok());
  auto c = LoadControllerFile(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->file.job().name(), "lhopt_svc");
}

// Runs an in-process worker until the job's status satisfies `until`.
v1::JobStatus RunWorkerUntil(LearnerServer& s, const std::string& id,
                             const std::function<bool(const v1::JobStatus&)>& until) {
  WorkerOptions opt;
  opt.learner = s.client();
  opt.name = "engine";
  Worker worker(opt);
  std::thread t([&] { worker.Run(); });
  int64_t version = -1;
  v1::JobStatus st;
  for (int i = 0; i < 300 && !until(st) && st.state() != v1::SUCCEEDED &&
                  st.state() != v1::FAILED;
       ++i)
    st = *s.manager().WaitForChange(id, &version, 200ms);
  worker.Stop();
  t.join();
  return st;
}

// The value of gauge `name` for the job, or NaN where it has none.
double JobGauge(const std::string& name, const std::string& job_id) {
  for (const auto& family : MetricsRegistry().Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric)
      for (const auto& l : m.label)
        if (l.name == "job_id" && l.value == job_id) return m.gauge.value;
  }
  return NAN;
}

TEST(LearnerService, LhoptYardstickIsAUnitAWorkerScoresAndTheJobWaitsForTheLast) {
  LearnerServer s;
  std::string text = kLhoptJob;
  text.insert(text.rfind('}'), " yardstick { every: 1 instances_per_task: 1 particles: 1 } ");
  std::string id = Submit(s, text);
  v1::JobStatus st = RunWorkerUntil(s, id, [](const v1::JobStatus&) { return false; });
  EXPECT_EQ(st.state(), v1::SUCCEEDED) << st.error();
  // Versions 0, 1 and 2 were scored by the worker (LHOPT_YARDSTICK units),
  // in order, and the job succeeded only once the last score was in: the
  // file is complete the moment the job is.
  const std::string path = s.dir() + "/jobs/" + id + "/yardstick.csv";
  std::vector<int64_t> iterations;
  auto csv = ReadFile(path);
  ASSERT_TRUE(csv.ok()) << csv.status();
  std::istringstream in(*csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line.rfind("iteration,score,score_t0_noisy_quadratic,", 0), 0u) << line;
  while (std::getline(in, line)) iterations.push_back(std::stoll(line));
  EXPECT_EQ(iterations, (std::vector<int64_t>{0, 1, 2}));
  // The learner did none of the inner training: the worker's results are
  // the 4 PPO units (as RealWorkerEngineRunsAnLhoptJobInProcess) and the 3
  // yardstick units.
  EXPECT_EQ(st.results_accepted(), 7);
  EXPECT_EQ(JobGauge("lopt_lhopt_yardstick_iteration", id), 2.0);
  EXPECT_TRUE(std::isfinite(JobGauge("lopt_lhopt_yardstick_score", id)));
  // A job without a yardstick has no such series.
  std::string plain = Submit(s, kLhoptJob);
  EXPECT_TRUE(std::isnan(JobGauge("lopt_lhopt_yardstick_score", plain)));
  s.manager().Cancel(plain).IgnoreError();
}

// An ELO job with a small meta-test (LearnerOptions::meta_test, as
// lopt-learner runs): 40 inner steps of 1 seed, one AdamW lr, the test
// split every 20 steps.
const char kMetaTestedEval[] =
    "eval { steps: 40 seeds: 1 adamw_lrs: 0.01 record_every: 10 test_every: 20 }\n";

// The eval/ files of a job's directory are a meta-test report the worker
// wrote, as `lopt eval --out` leaves it.
void ExpectMetaTestFiles(LearnerServer& s, const std::string& id) {
  const std::string dir = s.dir() + "/jobs/" + id + "/eval";
  for (const char* f : {"report.json", "table.txt", "curves.csv", "test_curves.csv"})
    EXPECT_TRUE(FileExists(dir + "/" + f)) << f;
  auto report = ReadFile(dir + "/report.json").value_or("");
  EXPECT_NE(report.find("\"steps\": 40"), std::string::npos) << report;
  EXPECT_NE(report.find("\"optimizer\": \"lopt\""), std::string::npos) << report;
  EXPECT_NE(report.find("\"optimizer\": \"adamw\""), std::string::npos) << report;
  auto table = ReadFile(dir + "/table.txt").value_or("");
  EXPECT_NE(table.find("wrote eval/report.json, curves.csv"), std::string::npos) << table;
  ExpectExportable(s, id, "eval/report.json");
  ExpectExportable(s, id, "eval/test_curves.csv");
}

TEST(LearnerService, EloMetaTestIsAUnitAWorkerRunsAndTheJobWaitsForIt) {
  LearnerServer s("", "", 2000, /*meta_test=*/true);
  std::string id = Submit(s, std::string(kJob) + kMetaTestedEval);
  v1::JobStatus st = RunWorkerUntil(s, id, [](const v1::JobStatus&) { return false; });
  ASSERT_EQ(st.state(), v1::SUCCEEDED) << st.error();
  EXPECT_EQ(st.outer_step(), 3);
  // The 3 truncations and the meta-test, all the worker's: the job
  // succeeded only once the report was in its directory.
  EXPECT_EQ(st.results_accepted(), 4);
  ExpectMetaTestFiles(s, id);
}

// A learner that stops after an ELO job's last outer step but before its
// meta-test came back asks a worker for the meta-test again when it starts.
TEST(LearnerService, EloJobRestoredBeforeItsMetaTestAsksForItAgain) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "lopt_learner_svc_meta_test_resume_", getpid());
  lopt::RemoveTree(dir).IgnoreError();
  std::string id;
  {
    LearnerServer s("", dir, 2000, /*meta_test=*/true);
    id = Submit(s, std::string(kJob) + kMetaTestedEval);
    FakeWorker w(s.client());
    ASSERT_TRUE(w.Register());
    for (int step = 0; step < 3; ++step) {
      v1::WorkUnit u = w.NextUnit();
      ASSERT_EQ(u.algorithm(), v1::ELO_PES);
      ASSERT_TRUE(w.Send(GoodResult(u)).accepted());
    }
    auto st = s.manager().Get(id, false);
    EXPECT_EQ(st->outer_step(), 3);
    EXPECT_EQ(st->state(), v1::RUNNING) << "the meta-test is not in";
    EXPECT_FALSE(FileExists(dir + "/jobs/" + id + "/eval/report.json"));
  }  // the learner stops; checkpoint_every: 0, yet the last step was saved
  {
    LearnerServer s("", dir, 2000, /*meta_test=*/true);
    auto st = s.manager().Get(id, false);
    ASSERT_TRUE(st.ok()) << st.status();
    EXPECT_EQ(st->state(), v1::RUNNING);
    EXPECT_EQ(st->outer_step(), 3);
    auto done = RunWorkerUntil(s, id, [](const v1::JobStatus&) { return false; });
    ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
    EXPECT_EQ(done.results_accepted(), 4);  // no truncation again: only the meta-test
    ExpectMetaTestFiles(s, id);
  }
  // Once it is in, a restart asks for nothing more.
  LearnerServer again("", dir, 2000, /*meta_test=*/true);
  EXPECT_EQ(again.manager().Get(id, false)->state(), v1::SUCCEEDED);
  lopt::RemoveTree(dir).IgnoreError();
}

TEST(LearnerService, LhoptJobResumesFromItsCheckpointAfterARestart) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "lopt_learner_svc_lhopt_resume_", getpid());
  lopt::RemoveTree(dir).IgnoreError();  // an old run's, if the pid came round again
  std::string text = kLhoptJob;
  text.replace(text.find("iterations: 2"), 13, "iterations: 3");
  std::string id;
  int64_t reached = 0;
  {
    LearnerServer s("", dir);
    id = Submit(s, text);
    auto st = RunWorkerUntil(s, id, [](const v1::JobStatus& st) { return st.outer_step() >= 1; });
    reached = st.outer_step();
    ASSERT_GE(reached, 1);
    ASSERT_EQ(st.state(), v1::RUNNING);
  }
  LearnerServer s("", dir);
  auto st = s.manager().Get(id, false);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(st->state(), v1::RUNNING);
  EXPECT_GE(st->outer_step(), 1);  // the checkpoint of iteration 1 (or 2) was reloaded
  EXPECT_LE(st->outer_step(), reached);
  EXPECT_EQ(st->total_steps(), 3);
  auto done = RunWorkerUntil(s, id, [](const v1::JobStatus&) { return false; });
  EXPECT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_EQ(done.outer_step(), 3);
  // metrics.csv as local LHOPT mode writes it: iterations 0..2 once each
  // (the rows after the reloaded checkpoint were cut back and done again),
  // wall_s never going back.
  const std::string jdir = s.dir() + "/jobs/" + id;
  auto csv = ReadFile(jdir + "/metrics.csv");
  ASSERT_TRUE(csv.ok()) << csv.status();
  std::istringstream in(*csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line + "\n", kLhoptMetricsHeader);
  std::vector<int64_t> rows;
  double last_wall = -1;
  while (std::getline(in, line)) {
    rows.push_back(std::stoll(line));
    const double wall = std::stod(line.substr(line.rfind(',') + 1));
    EXPECT_GE(wall, last_wall) << *csv;
    last_wall = wall;
  }
  EXPECT_EQ(rows, (std::vector<int64_t>{0, 1, 2})) << *csv;
  // summary.json: the whole job, both learner runs.
  auto summary = ReadFile(jdir + "/summary.json");
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(JsonValue(*summary, "state"), "\"SUCCEEDED\"") << *summary;
  EXPECT_EQ(JsonValue(*summary, "algorithm"), "\"lhopt_ppo\"") << *summary;
  EXPECT_EQ(JsonValue(*summary, "iterations"), "3") << *summary;
  EXPECT_EQ(JsonValue(*summary, "total_iterations"), "3") << *summary;
  EXPECT_EQ(JsonValue(*summary, "results_accepted"), absl::StrCat(done.results_accepted()))
      << *summary;
  EXPECT_EQ(JsonValue(*summary, "trained_file"), "\"controller.lhopt\"") << *summary;
  // Means over the first and last min(5, 3) iterations: the same three.
  EXPECT_TRUE(std::isfinite(std::stod(JsonValue(*summary, "reward_end")))) << *summary;
  EXPECT_EQ(JsonValue(*summary, "reward_start"), JsonValue(*summary, "reward_end")) << *summary;
  EXPECT_GE(std::stod(JsonValue(*summary, "wall_seconds")) + 1e-3, last_wall) << *summary;
  for (const char* f : {"summary.json", "metrics.csv", "job.textproto"}) ExpectExportable(s, id, f);
}

TEST(LearnerService, RejectsCorruptAndTruncatedLhoptPayloadsClearly) {
  LearnerServer s;
  std::string id = Submit(s, kLhoptJob);
  v1::JobSpec spec = JobFromText(kLhoptJob, "job").value();
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(spec, &buffer, "fake");
  FakeWorker w(s.client());
  ASSERT_TRUE(w.Register());
  // A unit and its real episodes, as a worker would send them.
  auto run = [&](const v1::WorkUnit& u, std::string* payload) {
    EXPECT_EQ(u.algorithm(), v1::LHOPT_PPO);
    auto lu = DecodeLhoptUnit(u.lhopt(), w.Payload(u));
    EXPECT_TRUE(lu.ok()) << lu.status();
    auto res = runner.Run(*lu);
    EXPECT_TRUE(res.ok()) << res.status();
    v1::WorkResult r;
    r.set_unit_id(u.unit_id());
    r.set_job_id(u.job_id());
    r.set_shard(u.shard());
    NamedTensors t;
    EncodeLhoptResult(*res, r.mutable_lhopt(), &t);
    *r.mutable_payload() = EncodePayload(t, payload);
    return r;
  };
  v1::WorkUnit u = w.NextUnit();
  ASSERT_EQ(u.job_id(), id);
  EXPECT_GT(u.payload().payload_bytes(), 0);
  std::string payload;
  v1::WorkResult r = run(u, &payload);
  ASSERT_GT(payload.size(), 3 * 1024u);

  // A corrupt chunk: DATA_LOSS, naming the chunk.
  w.SendWithPayload(r, payload, 1024, -1, /*corrupt_chunk=*/1);
  v1::ResultAck a = w.NextAck();
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kDataLoss)) << a.error();
  EXPECT_NE(a.error().find("payload chunk at offset 1024"), std::string::npos) << a.error();

  // A truncated payload (two chunks, then the next message): INVALID_ARGUMENT.
  u = w.NextUnit();
  r = run(u, &payload);
  w.SendWithPayload(r, payload, 1024, /*chunks_to_send=*/2);
  v1::WorkResult next;  // whatever comes next ends the payload
  next.set_unit_id(u.unit_id());
  next.set_job_id(id);
  w.SendWithPayload(next, "", 1024);
  a = w.NextAck();
  EXPECT_FALSE(a.accepted());
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << a.error();
  EXPECT_NE(a.error().find("payload truncated: received 2048 of"), std::string::npos) << a.error();
  a = w.NextAck();  // the unit was over: the second result is for nothing running
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kNotFound)) << a.error();

  // A result without its LhoptResultInfo.
  u = w.NextUnit();
  r = run(u, &payload);
  v1::WorkResult no_info = r;
  no_info.clear_lhopt();
  w.SendWithPayload(no_info, payload, 1 << 20);
  a = w.NextAck();
  EXPECT_EQ(a.code(), static_cast<int>(absl::StatusCode::kInvalidArgument)) << a.error();
  EXPECT_NE(a.error().find("must carry lhopt"), std::string::npos) << a.error();

  // None of it counted; the job is still running and takes good results.
  auto st = s.manager().Get(id, false);
  EXPECT_EQ(st->state(), v1::RUNNING);
  EXPECT_EQ(st->results_accepted(), 0);
  u = w.NextUnit();
  r = run(u, &payload);
  w.SendWithPayload(r, payload, 1 << 20);
  a = w.NextAck();
  EXPECT_TRUE(a.accepted()) << a.error();
  EXPECT_EQ(s.manager().Get(id, false)->results_accepted(), 1);
}

TEST(LearnerService, ClientsWithoutTheTokenAreRefused) {
  LearnerServer s("s3cret");
  auto stub = v1::JobService::NewStub(MakeChannel(s.client()));
  v1::ListJobsResponse resp;
  auto ctx = MakeContext(s.client());
  grpc::Status st = stub->List(ctx.get(), v1::ListJobsRequest(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(st.error_message().find("--auth-token-file"), std::string::npos);
  auto ctx2 = MakeContext(s.client("wrong"));
  EXPECT_EQ(stub->List(ctx2.get(), v1::ListJobsRequest(), &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  auto ctx3 = MakeContext(s.client("s3cret"));
  EXPECT_TRUE(stub->List(ctx3.get(), v1::ListJobsRequest(), &resp).ok());
  // A worker without the token cannot register.
  FakeWorker w(s.client());
  EXPECT_FALSE(w.Register());
  EXPECT_EQ(w.Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(LearnerService, OversizedAndMalformedRequestsGetClearErrors) {
  LearnerServer s;
  auto stub = v1::JobService::NewStub(MakeChannel(s.client()));
  v1::SubmitJobRequest req;
  req.set_job_text(std::string(5 << 20, ' '));
  v1::SubmitJobResponse resp;
  auto ctx = MakeContext(s.client());
  grpc::Status st = stub->Submit(ctx.get(), req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  // Nothing set at all.
  auto ctx2 = MakeContext(s.client());
  st = stub->Submit(ctx2.get(), v1::SubmitJobRequest(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A JobSpec message with a bad field names it.
  v1::SubmitJobRequest req3;
  auto job = JobFromText(kJob, "job");
  ASSERT_TRUE(job.ok());
  *req3.mutable_job() = *job;
  req3.mutable_job()->mutable_cluster()->set_shards(0);
  auto ctx3 = MakeContext(s.client());
  st = stub->Submit(ctx3.get(), req3, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("cluster.shards"), std::string::npos) << st.error_message();
  // A worker whose first message is not register.
  FakeWorker w(s.client());
  v1::WorkerMessage hb;
  hb.mutable_heartbeat();
  ASSERT_TRUE(w.stream_->Write(hb));
  w.stream_->WritesDone();
  st = w.stream_->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("register"), std::string::npos);
  // Still serving.
  auto ctx4 = MakeContext(s.client());
  v1::ListJobsResponse list;
  EXPECT_TRUE(stub->List(ctx4.get(), v1::ListJobsRequest(), &list).ok());
}

}  // namespace
}  // namespace lopt
