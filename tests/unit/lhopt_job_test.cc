// The LHOPT learner core (LhoptJob), its checkpoints through local mode,
// the controller file, and the lhopt section of the job spec.
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "cli/lhopt_mode.h"
#include "kinds/lhopt/lhopt_kind.h"
#include "kinds/local_driver.h"
#include "kinds/run_clock.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/util/checkpoint.h"

namespace lopt {
namespace {

constexpr char kJob[] = R"(
    name: "lhopt_job_test" seed: 2
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } weight: 2 }
      tasks { task { noisy_quadratic { min_dim: 20 max_dim: 30 } } weight: 1 }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 6
      particles: 2 episodes_per_iteration: 4 iterations: 2 hidden_size: 16
      curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 2
      checkpoint_every: 1
    })";

v1::JobSpec Job(const std::string& extra = "") {
  auto job = JobFromText(std::string(kJob) + extra, "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

// Names and values equal, bit for bit (`skip`: a name left out).
::testing::AssertionResult SameWeights(const NamedTensors& a, const NamedTensors& b,
                                       const std::set<std::string>& skip = {}) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << a.size() << " tensors vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first)
      return ::testing::AssertionFailure() << a[i].first << " vs " << b[i].first;
    if (!skip.count(a[i].first) && !torch::equal(a[i].second, b[i].second))
      return ::testing::AssertionFailure() << "differs at " << a[i].first;
  }
  return ::testing::AssertionSuccess();
}

TEST(LhoptJob, AcceptsFreshUnitsUpdatesAndDropsStaleOnes) {
  // Asynchronous hand-out (cluster.max_staleness > 0), PPO staleness 1.
  v1::JobSpec spec = Job();
  spec.mutable_cluster()->set_max_staleness(8);
  spec.mutable_lhopt()->set_iterations(3);
  spec.mutable_lhopt()->mutable_ppo()->set_max_staleness(1);
  LhoptJob job(spec);
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(spec, &buffer, "t");
  EXPECT_EQ(job.units_per_iteration(), 2);
  NamedTensors initial = job.ShippedPolicy();
  NamedTensors ema0 = PolicyWeights(*job.baseline_policy());

  std::vector<LhoptUnitResult> v0;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(job.CanStart());
    auto r = runner.Run(job.Start());
    ASSERT_TRUE(r.ok()) << r.status();
    v0.push_back(*r);
  }
  // Malformed results change nothing.
  LhoptUnitResult bad = v0[0];
  bad.segments[0].features = torch::zeros({3, 5});
  EXPECT_EQ(job.Accept(bad).status().code(), absl::StatusCode::kInvalidArgument);
  LhoptUnitResult future = v0[0];
  future.policy_version = 7;
  EXPECT_EQ(job.Accept(future).status().code(), absl::StatusCode::kInvalidArgument);
  LhoptUnitResult unknown = v0[0];
  unknown.unit_id = 99;
  EXPECT_EQ(job.Accept(unknown).status().code(), absl::StatusCode::kInvalidArgument);

  LhoptIterationRecord rec;
  EXPECT_EQ(job.Accept(v0[0], &rec).value(), LhoptAcceptOutcome::kAccepted);
  EXPECT_EQ(job.Accept(v0[1], &rec).value(), LhoptAcceptOutcome::kUpdated);
  EXPECT_EQ(job.version(), 1);
  EXPECT_EQ(rec.episodes, 4);
  EXPECT_GT(rec.ppo.gradient_steps, 0);
  double expected_reward =
      (v0[0].episode_rewards.sum().item<double>() + v0[1].episode_rewards.sum().item<double>()) / 4;
  EXPECT_NEAR(rec.mean_reward, expected_reward, 1e-5);
  EXPECT_FALSE(SameWeights(job.ShippedPolicy(), initial));  // PPO moved the policy
  // The EMA moved by 1 - 0.99 of the way: ema = 0.99 ema0 + 0.01 policy.
  NamedTensors ema1 = PolicyWeights(*job.baseline_policy());
  NamedTensors pol1 = PolicyWeights(*job.policy());
  for (size_t i = 0; i < ema1.size(); ++i)
    EXPECT_TRUE(torch::allclose(ema1[i].second, 0.99 * ema0[i].second + 0.01 * pol1[i].second,
                                1e-5, 1e-6))
        << ema1[i].first;

  // v0[2] (version 0) is one version old: still accepted.
  EXPECT_EQ(job.Accept(v0[2]).value(), LhoptAcceptOutcome::kAccepted);
  auto r3 = runner.Run(job.Start());
  ASSERT_TRUE(r3.ok());
  EXPECT_EQ(r3->policy_version, 1);
  EXPECT_EQ(job.Accept(*r3, &rec).value(), LhoptAcceptOutcome::kUpdated);
  EXPECT_EQ(job.version(), 2);
  // A unit of version 0 is now two versions old: dropped, counted, and the
  // next iteration does not see it.
  auto late = runner.Run(job.Start());
  ASSERT_TRUE(late.ok());
  LhoptUnitResult stale = v0[2];
  EXPECT_EQ(job.Accept(stale).value(), LhoptAcceptOutcome::kDroppedStale);
  EXPECT_EQ(job.Accept(*late).value(), LhoptAcceptOutcome::kAccepted);
  auto last = runner.Run(job.Start());
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(job.Accept(*last, &rec).value(), LhoptAcceptOutcome::kUpdated);
  EXPECT_EQ(rec.dropped_stale, 2);
  EXPECT_EQ(rec.episodes, 4);
  EXPECT_TRUE(job.done());
  EXPECT_FALSE(job.CanStart());
}

TEST(LhoptJob, SynchronousModeHandsOutOneIterationAtATime) {
  LhoptJob job(Job());
  ASSERT_TRUE(job.CanStart());
  LhoptUnit a = job.Start();
  ASSERT_TRUE(job.CanStart());
  LhoptUnit b = job.Start();
  EXPECT_FALSE(job.CanStart());  // two units fill the iteration
  job.Abandon(b.unit_id);
  EXPECT_TRUE(job.CanStart());
  EXPECT_EQ(a.particles, 2);
  EXPECT_GE(a.decisions, 2);
  EXPECT_LE(a.decisions, 6);
  EXPECT_LT(a.decisions, a.inner_steps);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// metrics.csv without its timing columns (the last two).
std::string MetricsWithoutTimes(const std::string& path) {
  std::stringstream in(ReadAll(path)), out;
  std::string line;
  while (std::getline(in, line)) {
    for (int k = 0; k < 2; ++k) line = line.substr(0, line.rfind(','));
    out << line << "\n";
  }
  return out.str();
}

TEST(LhoptJob, CheckpointResumeIsBitIdentical) {
  // Three iterations, stopped after the first: the two updates after the
  // resume use the restored Adam moments, EMA, normaliser and counters.
  v1::JobSpec spec = Job();
  spec.mutable_lhopt()->set_iterations(3);
  const std::string dir = ::testing::TempDir() + "/lhopt_resume";
  LocalTrainOptions straight;
  straight.out_dir = dir + "/straight";
  straight.progress = false;
  straight.fresh = true;
  auto a = RunLocal(LhoptKind(), spec, straight);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->steps, 3);

  LocalTrainOptions first = straight;
  first.out_dir = dir + "/resumed";
  first.stop_after = 1;
  auto b1 = RunLocal(LhoptKind(), spec, first);
  ASSERT_TRUE(b1.ok()) << b1.status();
  EXPECT_EQ(b1->steps, 1);
  LocalTrainOptions second = first;
  second.fresh = false;
  second.stop_after = -1;
  auto b2 = RunLocal(LhoptKind(), spec, second);
  ASSERT_TRUE(b2.ok()) << b2.status();
  EXPECT_EQ(b2->resumed_from, 1);
  EXPECT_EQ(b2->steps, 3);

  auto ca = LoadControllerFile(a->trained_file);
  auto cb = LoadControllerFile(b2->trained_file);
  ASSERT_TRUE(ca.ok() && cb.ok());
  EXPECT_TRUE(SameWeights(PolicyWeights(*ca->policy), PolicyWeights(*cb->policy)));
  for (size_t i = 0; i < 3; ++i)
    EXPECT_TRUE(torch::equal(ca->normalizer->state()[i], cb->normalizer->state()[i]));
  EXPECT_EQ(ca->file.mean_reward(), cb->file.mean_reward());
  // The whole learner state: EMA, baseline snapshot, counters, baseline
  // curves. (The Adam archive's bytes name parameters by address; its
  // moments showed themselves equal in the updates after the resume.)
  auto sa = DeserializeTensors(ReadFile(straight.out_dir + "/checkpoint.pt").value()).value();
  auto sb = DeserializeTensors(ReadFile(first.out_dir + "/checkpoint.pt").value()).value();
  // run/wall_seconds: the run's time, which only counts on over the resume.
  EXPECT_TRUE(SameWeights(sa, sb, {"learner/lhopt/adam", kRunWallSecondsKey}));
  EXPECT_GE(Find(sb, kRunWallSecondsKey).value().item<double>(), b1->total_wall_seconds);
  EXPECT_DOUBLE_EQ(b2->total_wall_seconds, b1->total_wall_seconds + b2->wall_seconds);
  EXPECT_EQ(MetricsWithoutTimes(straight.out_dir + "/metrics.csv"),
            MetricsWithoutTimes(first.out_dir + "/metrics.csv"));
}

TEST(LhoptJob, ControllerFileRoundTripsAndRefusesOthers) {
  v1::JobSpec spec = Job();
  LhoptJob job(spec);
  auto file = job.MakeControllerFile();
  ASSERT_TRUE(file.ok());
  const std::string path = ::testing::TempDir() + "/c.lhopt";
  ASSERT_TRUE(SaveControllerFile(path, *file).ok());
  auto c = LoadControllerFile(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(SameWeights(PolicyWeights(*c->policy), PolicyWeights(*job.policy())));
  EXPECT_EQ(c->file.job().name(), "lhopt_job_test");
  EXPECT_EQ(c->file.hidden_size(), 16);
  v1::LhoptControllerFile newer = *file;
  newer.set_format_version(kControllerFormatVersion + 1);
  ASSERT_TRUE(SaveControllerFile(path, newer).ok());
  EXPECT_EQ(LoadControllerFile(path).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(WriteFileAtomically(path, "not a controller").ok());
  EXPECT_EQ(LoadControllerFile(path).status().code(), absl::StatusCode::kDataLoss);
}

TEST(LhoptJobSpec, ValidationNamesTheField) {
  auto err = [](const std::string& text) {
    auto j = JobFromText(text, "job.textproto");
    return j.ok() ? std::string("ok") : std::string(j.status().message());
  };
  const std::string head = R"(lhopt { tasks { task { noisy_quadratic {} } } )";
  EXPECT_EQ(err(head + "}"), "ok");
  EXPECT_EQ(err("lhopt { }"),
            "job.textproto: lhopt.tasks must name at least one task of the mixture");
  EXPECT_EQ(err(R"(lhopt { tasks { task { noisy_quadratic {} } }
                   tasks { task { fmnist_mlp { image_size: 12 } } } })"),
            "job.textproto: lhopt.tasks[1].task.fmnist_mlp.image_size must be 8, 14 or 28, got 12");
  EXPECT_EQ(err(head + "particles: 3 episodes_per_iteration: 10 }"),
            "job.textproto: lhopt.episodes_per_iteration must be a multiple of lhopt.particles (3), got 10");
  EXPECT_EQ(err(head + "min_decisions: 8 max_decisions: 4 }"),
            "job.textproto: lhopt.max_decisions must be >= lhopt.min_decisions (8), got 4");
  EXPECT_EQ(err(head + "ppo { clip: 1.5 } }"),
            "job.textproto: lhopt.ppo.clip must be in (0, 1), got 1.5");
  EXPECT_EQ(err(head + "baseline_polyak: 1.2 }"),
            "job.textproto: lhopt.baseline_polyak must be in [0, 1], got 1.2");
  EXPECT_EQ(err(R"(lhopt { tasks { task { noisy_quadratic {} } random_activation: true } })"),
            "job.textproto: lhopt.tasks[0].random_activation applies to fmnist_mlp and fmnist_cnn only");
  EXPECT_EQ(err(head + "yardstick { every: -1 } }"),
            "job.textproto: lhopt.yardstick.every must be in [0, 100000], got -1");
  EXPECT_EQ(err(head + "yardstick { every: 5 instances_per_task: 0 } }"),
            "job.textproto: lhopt.yardstick.instances_per_task must be in [1, 1024], got 0");
  EXPECT_EQ(err(head + "yardstick { every: 5 particles: 0 } }"),
            "job.textproto: lhopt.yardstick.particles must be in [1, 4096], got 0");
  EXPECT_EQ(err(head + "yardstick { every: 5 perturbed_start: true } }"), "ok");
  // The defaults are REFERENCE.md section 4's.
  auto j = JobFromText(head + "}", "x").value();
  EXPECT_FLOAT_EQ(j.lhopt().ppo().clip(), 0.2f);
  EXPECT_FLOAT_EQ(j.lhopt().ppo().entropy_coef(), 0.01f);
  EXPECT_FLOAT_EQ(j.lhopt().ppo().lr(), 2e-4f);
  EXPECT_FLOAT_EQ(j.lhopt().ppo().gae_lambda(), 0.95f);
  EXPECT_EQ(j.lhopt().ppo().max_staleness(), 4);
  EXPECT_EQ(j.lhopt().yardstick().every(), 0);  // off unless asked for
  EXPECT_EQ(j.lhopt().min_decisions(), 2);
  EXPECT_EQ(j.lhopt().max_decisions(), 128);
  EXPECT_FLOAT_EQ(j.lhopt().baseline_polyak(), 0.99f);
  EXPECT_FLOAT_EQ(j.lhopt().reward_clip(), 3.0f);
  EXPECT_TRUE(IsLhoptJob(j));
  EXPECT_FALSE(IsLhoptJob(JobFromText("", "x").value()));
}

}  // namespace
}  // namespace lopt
