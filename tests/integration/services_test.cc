// The services as a user runs them: real lopt-buffer, lopt-learner and
// lopt-worker processes on loopback, jobs submitted and watched with
// loptctl, and a real Prometheus server scraping them.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/local_mode.h"
#include "common/lhopt/lhopt_policy.h"
#include "kinds/job_door.h"
#include "kinds/lhopt/lhopt_kind.h"
#include "kinds/local_driver.h"
#include "common/elo/optimizer_file.h"
#include "common/util/checkpoint.h"
#include "common/util/run_files.h"
#include "learner/elo_learner.h"
#include "learner/lhopt_job.h"
#include "tests/support/child_process.h"
#include "tests/support/service_cluster.h"

namespace lopt {
namespace {

using lopt::testing::ChildProcess;
using lopt::testing::FreePort;
using lopt::testing::HttpGet;
using lopt::testing::RunCommand;
using namespace std::chrono_literals;

using lopt::testing::MetricValue;
using lopt::testing::Scrape;
using lopt::testing::TlsFiles;

void WriteFile(const std::string& path, const std::string& text) {
  lopt::testing::WriteTextFile(path, text);
}

std::string JobText(const std::string& name, int steps, int shards, int staleness,
                    int checkpoint_every = 4) {
  return lopt::testing::SmallJobText(name, steps, shards, staleness, checkpoint_every);
}

// Real lopt-buffer, lopt-learner and lopt-worker processes on loopback.
class Cluster : public lopt::testing::ServiceCluster {
 public:
  explicit Cluster(const std::string& name)
      : ServiceCluster({LOPT_BUFFER_BINARY, LOPT_LEARNER_BINARY, LOPT_WORKER_BINARY,
                        LOPT_LOPTCTL_BINARY},
                       lopt::testing::MakeTestDir("lopt_services", name)) {}
};

torch::Tensor ExportTheta(Cluster& c, const std::string& id) {
  std::string out = c.dir() + "/" + id + ".lopt";
  auto [code, text] = RunCommand(c.Ctl(absl::StrCat("export ", id, " --out ", out)));
  EXPECT_EQ(code, 0) << text;
  auto file = LoadOptimizerFile(out);
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? file->theta : torch::Tensor();
}

// The raw value of `key` in a summary.json ("" where it has none).
std::string JsonValue(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\": ([^,\n]*)"))) return "";
  return m[1];
}

// The last row's wall_s (the last column) of a metrics.csv.
double LastWallSeconds(const std::string& csv) {
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  return lines.size() < 2 ? -1 : std::stod(lines.back().substr(lines.back().rfind(',') + 1));
}

// metrics.csv of a run directory: local mode's header, then outer steps
// 0..steps-1 once each, in order.
void ExpectOneRowAnOuterStep(const std::string& path, int steps) {
  auto text = lopt::ReadFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), size_t(steps) + 1) << *text;
  EXPECT_EQ(lines[0] + "\n", lopt::kEloMetricsHeader);
  for (int i = 0; i < steps; ++i)
    EXPECT_EQ(std::atoi(lines[i + 1].c_str()), i) << "row " << i + 1 << " of\n" << *text;
}

TEST(Services, ThreeWorkersRunAnEloJobToCompletionWithLoptctl) {
  Cluster c("three");
  c.StartBuffer();
  c.StartLearner();
  for (auto n : {"w1", "w2", "w3"}) c.StartWorker(n);
  std::string out;
  std::string id = c.Submit(JobText("three", 12, 3, 1), /*watch=*/true, &out);
  EXPECT_NE(out.find(absl::StrCat("job ", id, " succeeded at outer step 12/12")), std::string::npos)
      << out;
  // Every worker took part (3 shards, one a worker at a time): it finished a
  // unit, or it had one when the job ended, which stopped it (with staleness 1
  // the other two can run the 12 steps while a loaded machine delays one).
  for (auto n : {"w1", "w2", "w3"}) {
    const std::string metrics = Scrape(c.worker(n).metrics_port());
    auto units = [&](const char* result) {  // -1: no such series yet
      return std::max(0.0, MetricValue(metrics, "lopt_worker_units_total",
                                       absl::StrCat("result=\"", result, "\"")));
    };
    EXPECT_GT(units("ok") + units("cancelled"), 0)
        << n << "\n" << metrics;
  }
  EXPECT_EQ(c.LearnerMetric("lopt_outer_steps_total", "job_id=\"" + id + "\""), 12);
  auto [code, list] = RunCommand(c.Ctl("list"));
  EXPECT_EQ(code, 0);
  EXPECT_NE(list.find(id), std::string::npos);
  EXPECT_NE(list.find("succeeded"), std::string::npos);
  // The exported optimizer is trained: theta moved from where it started.
  torch::Tensor theta = ExportTheta(c, id);
  auto job = JobFromText(JobText("three", 12, 3, 1), "job");
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE(theta.defined());
  EXPECT_FALSE(torch::equal(theta, InitialTheta(*job)));
  // The job's buffer tables were deleted when it ended.
  EXPECT_TRUE(c.learner().WaitForLine("msg=\"deleted the job's buffer tables\"", 10s));
}

TEST(Services, OneWorkerWithStalenessZeroMatchesLocalModeBitForBit) {
  Cluster c("determinism");
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  const std::string text = JobText("det", 10, 1, 0, 3);
  std::string out;
  std::string id = c.Submit(text, /*watch=*/true, &out);
  ASSERT_NE(out.find("succeeded"), std::string::npos) << out;
  torch::Tensor remote = ExportTheta(c, id);

  auto job = JobFromText(text, "job");
  ASSERT_TRUE(job.ok());
  torch::set_num_threads(1);  // as the worker (--threads=1)
  LocalTrainOptions opt;
  opt.out_dir = c.dir() + "/local";
  opt.progress = false;
  opt.fresh = true;
  auto summary = RunLocalTraining(*job, opt);
  ASSERT_TRUE(summary.ok()) << summary.status();
  auto local = LoadOptimizerFile(summary->trained_file);
  ASSERT_TRUE(local.ok());
  ASSERT_TRUE(remote.defined());
  EXPECT_TRUE(torch::equal(remote, local->theta))
      << "max |diff| " << (remote - local->theta).abs().max().item<float>();
  EXPECT_FALSE(torch::equal(remote, InitialTheta(*job)));
}

TEST(Services, KillNineOfAWorkerMidJobLosesNoStepAndAppliesNoneTwice) {
  Cluster c("killworker");
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  c.StartWorker("w2");
  const int kSteps = 30;
  std::string id = c.Submit(JobText("kw", kSteps, 2, 0));
  ASSERT_TRUE(c.learner().WaitForLine("step=4 ", 60s));
  c.worker("w1").Kill9();
  ASSERT_TRUE(c.learner().WaitForLine("msg=\"worker gone\"", 10s));
  auto [code, out] = RunCommand(c.Ctl(absl::StrCat("watch ", id, " --no-progress")));
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(absl::StrFormat("succeeded at outer step %d/%d", kSteps, kSteps)),
            std::string::npos);
  // Each outer step was applied exactly once.
  for (int s = 0; s < kSteps; ++s)
    EXPECT_EQ(c.learner().CountLines(absl::StrCat("msg=\"outer step\" job=", id, " step=", s, " ")), 1)
        << "step " << s;
  EXPECT_EQ(c.LearnerMetric("lopt_outer_steps_total", "job_id=\"" + id + "\""), kSteps);
}

TEST(Services, KillNineOfTheLearnerResumesFromItsCheckpoint) {
  Cluster c("killlearner");
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  c.StartWorker("w2");
  const int kSteps = 24;
  std::string id = c.Submit(JobText("kl", kSteps, 2, 1, 4));
  ASSERT_TRUE(c.learner().WaitForLine("step=9 ", 60s));
  c.learner().Kill9();
  c.StartLearner();  // same port and state directory
  ASSERT_TRUE(c.learner().WaitForLine("msg=\"resuming job from its checkpoint\"", 5s));
  std::smatch m;
  std::string out = c.learner().Output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("resuming job from its checkpoint\" job=" + id +
                                                   " outer_step=([0-9]+)")));
  int resumed = std::stoi(m[1]);
  EXPECT_GE(resumed, 8);  // checkpoints every 4 steps; step 9 was under way
  EXPECT_EQ(resumed % 4, 0);
  // The workers reconnect by themselves and the job completes.
  auto [code, watch] = RunCommand(c.Ctl(absl::StrCat("watch ", id, " --no-progress")));
  EXPECT_EQ(code, 0) << watch;
  EXPECT_NE(watch.find(absl::StrFormat("succeeded at outer step %d/%d", kSteps, kSteps)),
            std::string::npos);
  EXPECT_EQ(c.LearnerMetric("lopt_outer_steps_total", "job_id=\"" + id + "\""), kSteps - resumed);
  // metrics.csv was cut back to the checkpoint at the restart: no step twice.
  ExpectOneRowAnOuterStep(c.dir() + "/learner/jobs/" + id + "/metrics.csv", kSteps);
}

// Issue 13: a job on the services leaves what `lopt train --out` leaves --
// job.textproto, metrics.csv, training.png and its meta-test in eval/ -- in
// the learner's state directory, and `loptctl export --all` fetches them.
// Issue 15: the meta-test is a unit the worker runs (ELO_META_TEST), not
// inner training in the learner, and the job succeeds once its report is in.
TEST(Services, AJobLeavesTheRunDirectoryOfALocalRunAndExportsIt) {
  Cluster c("rundir");
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  const int kSteps = 6;
  std::string out;
  std::string id = c.Submit(absl::StrReplaceAll(JobText("rundir", kSteps, 1, 0, 2),
                                                {{"checkpoint_every: 2", "checkpoint_every: 2 snapshot_every: 4"}}) +
                                "eval { steps: 40 seeds: 2 record_every: 10 test_every: 20 "
                                "adamw_lrs: 0.01 }\n",
                            /*watch=*/true, &out);
  EXPECT_NE(out.find("succeeded"), std::string::npos) << out;
  const std::string dir = c.dir() + "/learner/jobs/" + id;
  // The worker ran the meta-test and the learner took its report before the
  // job succeeded: its files are there the moment watch says so.
  EXPECT_EQ(c.worker("w1").CountLines(absl::StrCat("msg=\"meta-test run\" job=", id, " ")), 1)
      << c.worker("w1").Output();
  EXPECT_EQ(c.learner().CountLines(absl::StrCat("msg=\"meta-test report\" job=", id, " ")), 1)
      << c.learner().Output();
  EXPECT_EQ(c.learner().CountLines("msg=\"meta-test of the trained optimizer\""), 0)
      << "the learner trained optimizees itself";
  for (const char* f : {"eval/report.json", "eval/table.txt", "eval/curves.csv", "eval/test_curves.csv"})
    EXPECT_TRUE(lopt::FileExists(dir + "/" + f)) << f << " missing when the job succeeded";
  // training.png is drawn after the end, off the doors.
  ASSERT_TRUE(c.learner().WaitForLine("msg=\"run directory complete\"", 60s)) << c.learner().Output();
  const std::string e = c.dir() + "/exported";
  auto [code, text] = RunCommand(c.Ctl(absl::StrCat("export ", id, " --all -o ", e)));
  ASSERT_EQ(code, 0) << text;
  for (const char* f : {"optimizer.lopt", "job.textproto", "summary.json", "metrics.csv",
                        "training.png", "eval/report.json", "eval/curves.png", "eval/table.txt",
                        "eval/curves.csv", "eval/test_curves.csv"}) {
    EXPECT_TRUE(lopt::FileExists(e + "/" + f)) << f << " not exported: " << text;
    EXPECT_EQ(lopt::ReadFile(e + "/" + f).value_or("a"), lopt::ReadFile(dir + "/" + f).value_or("b"))
        << f;
  }
  ExpectOneRowAnOuterStep(e + "/metrics.csv", kSteps);
  // The snapshots of budget.snapshot_every (4 of 6 steps): step 4 and the last, as the learner
  // kept them, for `lopt select --run` on the exported directory.
  for (int step : {4, 6}) {
    const std::string f = absl::StrFormat("snapshots/step_%06d.lopt", step);
    EXPECT_EQ(lopt::ReadFile(e + "/" + f).value_or("a"), lopt::ReadFile(dir + "/" + f).value_or("b")) << f;
    EXPECT_EQ(LoadOptimizerFile(e + "/" + f).value().file.outer_step(), step);
  }
  EXPECT_FALSE(lopt::FileExists(e + "/snapshots/step_000002.lopt"));
  EXPECT_NE(text.find("snapshots/ (2)"), std::string::npos) << text;
  EXPECT_FALSE(lopt::FileExists(e + "/rewards.png")) << "an ELO job has no LHOPT plot";
  // summary.json: how the job ended, with local mode's keys for its figures.
  const std::string summary = lopt::ReadFile(e + "/summary.json").value_or("");
  EXPECT_EQ(JsonValue(summary, "state"), "\"SUCCEEDED\"") << summary;
  EXPECT_EQ(JsonValue(summary, "job"), "\"rundir\"") << summary;
  EXPECT_EQ(JsonValue(summary, "outer_steps"), absl::StrCat(kSteps)) << summary;
  EXPECT_EQ(JsonValue(summary, "total_steps"), absl::StrCat(kSteps)) << summary;
  EXPECT_EQ(JsonValue(summary, "trained_file"), "\"optimizer.lopt\"") << summary;
  EXPECT_EQ(std::stod(JsonValue(summary, "results_accepted")),
            c.LearnerMetric("lopt_results_accepted_total", "job_id=\"" + id + "\""))
      << summary;
  EXPECT_TRUE(std::isfinite(std::stod(JsonValue(summary, "meta_loss_end")))) << summary;
  EXPECT_TRUE(std::isfinite(std::stod(JsonValue(summary, "task_loss_start")))) << summary;
  EXPECT_GE(std::stod(JsonValue(summary, "wall_seconds")) + 1e-3,
            LastWallSeconds(lopt::ReadFile(e + "/metrics.csv").value_or("")))
      << summary;
  auto job = LoadJobFile(e + "/job.textproto");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->name(), "rundir");
  auto report = lopt::ReadFile(e + "/eval/report.json").value_or("");
  EXPECT_NE(report.find("\"optimizer\": \"lopt\""), std::string::npos) << report;
  EXPECT_NE(report.find("\"optimizer\": \"adamw\""), std::string::npos) << report;
  EXPECT_EQ(LoadOptimizerFile(e + "/optimizer.lopt").value().file.outer_step(), kSteps);
  // `lopt compare` reads the exported directory as it reads a local run's.
  auto [ccode, cmp] = RunCommand(absl::StrCat(LOPT_LOPT_BINARY, " compare ", e, " --out ", c.dir(), "/cmp"));
  EXPECT_EQ(ccode, 0) << cmp;
  EXPECT_NE(cmp.find("lopt_untrained"), std::string::npos) << cmp;
}

TEST(Services, PrometheusScrapesAllThreeProcesses) {
  const std::string prom = "/usr/bin/prometheus";
  ASSERT_EQ(access(prom.c_str(), X_OK), 0)
      << "Debian's prometheus package is missing: run scripts/bootstrap.sh";
  Cluster c("prometheus");
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  int worker_metrics = c.worker("w1").metrics_port();
  int port = FreePort();
  std::string cfg = c.dir() + "/prometheus.yml";
  WriteFile(cfg, absl::StrCat(
                     "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n",
                     "scrape_configs:\n",
                     "  - job_name: lopt-learner\n    static_configs:\n      - targets: ['127.0.0.1:",
                     c.learner().metrics_port(), "']\n",
                     "  - job_name: lopt-buffer\n    static_configs:\n      - targets: ['127.0.0.1:",
                     c.buffer().metrics_port(), "']\n",
                     "  - job_name: lopt-worker\n    static_configs:\n      - targets: ['127.0.0.1:",
                     worker_metrics, "']\n"));
  auto p = ChildProcess::Start(
      "prometheus",
      {prom, "--config.file=" + cfg, "--storage.tsdb.path=" + c.dir() + "/tsdb",
       absl::StrCat("--web.listen-address=127.0.0.1:", port)},
      "Server is ready to receive web requests", 30s);
  ASSERT_TRUE(p.ok()) << p.status();
  std::string out;
  std::string id = c.Submit(JobText("prom", 6, 1, 0), /*watch=*/true, &out);
  ASSERT_NE(out.find("succeeded"), std::string::npos) << out;
  std::string steps, up;
  for (int i = 0; i < 60; ++i) {
    auto r = HttpGet(port, "/api/v1/query?query=lopt_outer_steps_total");
    auto u = HttpGet(port, "/api/v1/query?query=sum(up)");
    if (r.ok()) steps = *r;
    if (u.ok()) up = *u;
    if (steps.find(id) != std::string::npos && steps.find("\"6\"") != std::string::npos &&
        up.find("\"3\"") != std::string::npos)
      break;
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_NE(steps.find("\"job_id\":\"" + id + "\""), std::string::npos) << steps;
  EXPECT_NE(steps.find("\"6\"]"), std::string::npos) << steps;
  EXPECT_NE(up.find("\"3\"]"), std::string::npos) << "not all three targets are up: " << up;
  auto buf = HttpGet(port, "/api/v1/query?query=lopt_buffer_puts_total");
  ASSERT_TRUE(buf.ok());
  EXPECT_NE(buf->find("lopt_buffer_puts_total"), std::string::npos) << *buf;
  (*p)->Stop();
  // Every lopt_ metric the three export is in deploy/check/exported_metrics.txt
  // (the list the dashboards and alerting rules are checked against) with its
  // type and process, so the list cannot fall behind the code.
  std::map<std::string, std::pair<std::string, std::string>> listed;  // name -> (type, processes)
  for (absl::string_view line : absl::StrSplit(lopt::ReadFile(LOPT_EXPORTED_METRICS).value_or(""), '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (f.size() >= 3 && f[0][0] != '#') listed[f[0]] = {f[1], f[2]};
  }
  ASSERT_GT(listed.size(), 20u) << LOPT_EXPORTED_METRICS;
  int seen = 0;
  for (const auto& [process, mport] : std::vector<std::pair<std::string, int>>{
           {"learner", c.learner().metrics_port()},
           {"buffer", c.buffer().metrics_port()},
           {"worker", worker_metrics}}) {
    for (absl::string_view line : absl::StrSplit(lopt::testing::Scrape(mport), '\n')) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
      if (f.size() != 4 || f[0] != "#" || f[1] != "TYPE" || f[2].rfind("lopt_", 0) != 0) continue;
      ++seen;
      auto it = listed.find(f[2]);
      if (it == listed.end()) {
        ADD_FAILURE() << process << " exports " << f[2] << " (" << f[3]
                      << "), which deploy/check/exported_metrics.txt does not list";
        continue;
      }
      EXPECT_EQ(it->second.first, f[3]) << f[2];
      EXPECT_NE(it->second.second.find(process), std::string::npos)
          << f[2] << " is exported by the " << process << ", the list says " << it->second.second;
    }
  }
  EXPECT_GT(seen, 20);
}

TEST(Services, TlsClusterRunsAJobAndRefusesPlaintextAndStrangers) {
  Cluster c("tls");
  const TlsFiles tls = c.EnableTls();
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  EXPECT_TRUE(c.learner().WaitForLine("tls=on", 1s));
  std::string out;
  std::string id = c.Submit(JobText("tls_job", 4, 1, 0), /*watch=*/true, &out);
  EXPECT_NE(out.find(absl::StrCat("job ", id, " succeeded at outer step 4/4")), std::string::npos)
      << out;
  // The worker kept its replay states in the TLS buffer server.
  EXPECT_GT(MetricValue(Scrape(c.buffer().metrics_port()), "lopt_buffer_puts_total", ""), 0);
  const std::string plain = absl::StrCat(LOPT_LOPTCTL_BINARY, " --learner=", c.learner_target(),
                                         " --timeout-ms=3000 ");
  auto [code, text] = RunCommand(plain + "health");
  EXPECT_NE(code, 0) << "a plaintext client reached a TLS learner: " << text;
  std::tie(code, text) = RunCommand(plain + "--tls-ca-file=" + tls.other_ca + " health");
  EXPECT_NE(code, 0) << "a client that does not trust the learner's CA reached it: " << text;
  std::tie(code, text) = RunCommand(plain + "--tls-ca-file=" + tls.ca + " health");
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("SERVING"), std::string::npos) << text;
  std::tie(code, text) = RunCommand(plain + "--tls-ca-file=/nonexistent.pem health");
  EXPECT_EQ(code, 2) << text;
  EXPECT_NE(text.find("--tls-ca-file: cannot read /nonexistent.pem"), std::string::npos) << text;
}

TEST(Services, TwoWorkersRunAnLhoptJobAndItsControllerExports) {
  Cluster c("lhopt");
  c.StartBuffer();
  c.StartLearner();
  for (auto n : {"w1", "w2"}) c.StartWorker(n);
  const std::string job = R"(
      name: "lhopt_services" seed: 7
      task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
      lhopt {
        tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
        min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
        particles: 2 episodes_per_iteration: 4 iterations: 2 hidden_size: 256
        curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 2
        checkpoint_every: 1 schedule_decisions: 4
      })";
  std::string out;
  std::string id = c.Submit(job, /*watch=*/true, &out);
  EXPECT_NE(out.find(absl::StrCat("job ", id, " succeeded at outer step 2/2")), std::string::npos)
      << out;
  const std::string label = "job_id=\"" + id + "\"";
  EXPECT_EQ(c.LearnerMetric("lopt_outer_steps_total", label), 2);
  EXPECT_EQ(c.LearnerMetric("lopt_results_accepted_total", label), 4);
  EXPECT_GE(c.LearnerMetric("lopt_lhopt_episode_length", label), 2);
  // The export is the controller file: it loads, and lopt schedule takes it.
  std::string controller = c.dir() + "/controller.lhopt";
  auto [code, text] = RunCommand(c.Ctl(absl::StrCat("export ", id, " --out ", controller)));
  ASSERT_EQ(code, 0) << text;
  auto loaded = LoadControllerFile(controller);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->file.job().name(), "lhopt_services");
  // The full-size policy (LSTM 256, ~2.5 MB): every unit carried it in
  // several ~1 MiB chunks.
  EXPECT_EQ(loaded->file.job().lhopt().hidden_size(), 256);
  const std::string job_path = c.dir() + "/lhopt_job.textproto";
  WriteFile(job_path, job);
  std::tie(code, text) = RunCommand(absl::StrCat(
      LOPT_LOPT_BINARY, " schedule --controller ", controller, " --job ", job_path, " --out ",
      c.dir(), "/schedule --steps 30 --decisions 4 --threads 1"));
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("schedule.json"), std::string::npos) << text;
  // The job's buffer tables (registers, baseline curves) went with it.
  EXPECT_TRUE(c.learner().WaitForLine("msg=\"deleted the job's buffer tables\"", 10s));

  // Issue 13: the job leaves local LHOPT mode's run files in the learner's
  // state directory -- job.textproto, metrics.csv (a row a PPO iteration),
  // rewards.png, summary.json -- and `loptctl export --all` fetches them.
  const std::string dir = c.dir() + "/learner/jobs/" + id;
  // rewards.png is drawn by the learner's outputs thread, after the job's end.
  ASSERT_TRUE(c.learner().WaitForLine("msg=\"run directory complete\" job=" + id, 60s))
      << c.learner().Output();
  const std::string e = c.dir() + "/exported";
  std::tie(code, text) = RunCommand(c.Ctl(absl::StrCat("export ", id, " --all -o ", e)));
  ASSERT_EQ(code, 0) << text;
  for (const char* f : {"controller.lhopt", "job.textproto", "summary.json", "metrics.csv",
                        "rewards.png"}) {
    EXPECT_TRUE(lopt::FileExists(e + "/" + f)) << f << " not exported: " << text;
    EXPECT_EQ(lopt::ReadFile(e + "/" + f).value_or("a"), lopt::ReadFile(dir + "/" + f).value_or("b"))
        << f;
  }
  EXPECT_FALSE(lopt::FileExists(e + "/training.png")) << "an LHOPT job has no ELO plot";
  EXPECT_EQ(lopt::ReadFile(e + "/controller.lhopt").value_or("a"),
            lopt::ReadFile(controller).value_or("b"));
  const std::string csv = lopt::ReadFile(e + "/metrics.csv").value_or("");
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << csv;
  EXPECT_EQ(lines[0] + "\n", lopt::kLhoptMetricsHeader);
  EXPECT_EQ(std::atoi(lines[1].c_str()), 0) << csv;
  EXPECT_EQ(std::atoi(lines[2].c_str()), 1) << csv;
  const std::string summary = lopt::ReadFile(e + "/summary.json").value_or("");
  EXPECT_EQ(JsonValue(summary, "state"), "\"SUCCEEDED\"") << summary;
  EXPECT_EQ(JsonValue(summary, "algorithm"), "\"lhopt_ppo\"") << summary;
  EXPECT_EQ(JsonValue(summary, "iterations"), "2") << summary;
  EXPECT_EQ(JsonValue(summary, "total_iterations"), "2") << summary;
  EXPECT_EQ(JsonValue(summary, "results_accepted"), "4") << summary;
  EXPECT_EQ(JsonValue(summary, "trained_file"), "\"controller.lhopt\"") << summary;
  EXPECT_TRUE(std::isfinite(std::stod(JsonValue(summary, "reward_end")))) << summary;
  EXPECT_GE(std::stod(JsonValue(summary, "wall_seconds")) + 1e-3, LastWallSeconds(csv)) << summary;
  auto exported_job = LoadJobFile(e + "/job.textproto");
  ASSERT_TRUE(exported_job.ok()) << exported_job.status();
  EXPECT_EQ(exported_job->name(), "lhopt_services");
}

// The CSV's rows without their last `drop` columns (timings).
std::string CsvWithoutLast(const std::string& csv, int drop) {
  std::string out;
  for (absl::string_view line : absl::StrSplit(csv, '\n', absl::SkipEmpty())) {
    for (int k = 0; k < drop; ++k) line = line.substr(0, line.rfind(','));
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

// Local mode is the services in one process (kinds/local_driver.h): an
// LHOPT job with its yardstick, run by one worker, trains the same
// controller bit for bit and leaves the same rows as `lopt train`'s driver.
TEST(Services, OneWorkerRunsAnLhoptJobBitForBitAsLocalMode) {
  Cluster c("lhopt_det");
  c.StartBuffer();
  c.StartLearner();
  c.StartWorker("w1");
  const std::string text = R"(
      name: "lhopt_det" seed: 11
      task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
      lhopt {
        tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 1 }
        min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
        particles: 2 episodes_per_iteration: 4 iterations: 3 hidden_size: 16
        curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 2
        checkpoint_every: 2
        yardstick { every: 2 instances_per_task: 1 particles: 1 }
      })";
  std::string out;
  std::string id = c.Submit(text, /*watch=*/true, &out);
  ASSERT_NE(out.find("succeeded"), std::string::npos) << out;
  const std::string remote_path = c.dir() + "/remote.lhopt";
  auto [code, exported] = RunCommand(c.Ctl(absl::StrCat("export ", id, " --out ", remote_path)));
  ASSERT_EQ(code, 0) << exported;

  auto job = JobFromText(text, "job");
  ASSERT_TRUE(job.ok()) << job.status();
  torch::set_num_threads(1);  // as the worker (--threads=1)
  LocalTrainOptions opt;
  opt.out_dir = c.dir() + "/local";
  opt.progress = false;
  opt.fresh = true;
  auto local = RunLocal(LhoptKind(), *job, opt);
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(local->steps, 3);

  auto remote_c = LoadControllerFile(remote_path);
  auto local_c = LoadControllerFile(local->trained_file);
  ASSERT_TRUE(remote_c.ok() && local_c.ok());
  const NamedTensors rw = PolicyWeights(*remote_c->policy), lw = PolicyWeights(*local_c->policy);
  ASSERT_EQ(rw.size(), lw.size());
  for (size_t i = 0; i < rw.size(); ++i)
    EXPECT_TRUE(torch::equal(rw[i].second, lw[i].second)) << rw[i].first;
  EXPECT_EQ(remote_c->file.mean_reward(), local_c->file.mean_reward());
  // metrics.csv but its timings; yardstick.csv (versions 0, 2 and the last,
  // 3) but its seconds.
  const std::string dir = c.dir() + "/learner/jobs/" + id;
  EXPECT_EQ(CsvWithoutLast(lopt::ReadFile(dir + "/metrics.csv").value_or("r"), 2),
            CsvWithoutLast(lopt::ReadFile(opt.out_dir + "/metrics.csv").value_or("l"), 2));
  const std::string sticks = lopt::ReadFile(opt.out_dir + "/yardstick.csv").value_or("");
  std::vector<std::string> rows = absl::StrSplit(sticks, '\n', absl::SkipEmpty());
  ASSERT_EQ(rows.size(), 4u) << sticks;
  EXPECT_EQ(std::atoi(rows[1].c_str()), 0);
  EXPECT_EQ(std::atoi(rows[2].c_str()), 2);
  EXPECT_EQ(std::atoi(rows[3].c_str()), 3);
  EXPECT_EQ(CsvWithoutLast(lopt::ReadFile(dir + "/yardstick.csv").value_or("r"), 1),
            CsvWithoutLast(sticks, 1));
}

TEST(Services, LoptctlReportsBadJobFilesAndUnknownJobsClearly) {
  Cluster c("badinput");
  c.StartLearner();
  std::string path = c.dir() + "/bad.textproto";
  WriteFile(path, "name: \"x\"\npes { truncation_length: -3 }\n");
  auto [code, out] = RunCommand(c.Ctl("submit " + path));
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  EXPECT_NE(out.find(path + ": pes.truncation_length must be > 0, got -3"), std::string::npos) << out;
  WriteFile(path, "name: \"x\"\npes { truncation_lenght: 3 }\n");
  std::tie(code, out) = RunCommand(c.Ctl("submit " + path));
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find(path + ":2:"), std::string::npos) << out;
  std::tie(code, out) = RunCommand(c.Ctl("status no-such-job"));
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
  // Nothing crashed.
  std::tie(code, out) = RunCommand(c.Ctl("health"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(c.learner().running());
}

}  // namespace
}  // namespace lopt
