// The LHOPT worker side: episode runner, rewards, baseline cache, restart
// registers, and schedule export/replay.
#include "common/lhopt/lhopt_episode.h"

#include <gtest/gtest.h>

#include <cstdio>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/lhopt/lhopt_actions.h"
#include "common/lhopt/lhopt_eval.h"
#include "common/lhopt/lhopt_schedule.h"
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

v1::JobSpec TestJob() {
  auto job = JobFromText(R"(
    name: "lhopt_test" seed: 5
    task { noisy_quadratic { min_dim: 5 max_dim: 10 } }
    lhopt {
      tasks { task { noisy_quadratic { min_dim: 5 max_dim: 10 } } }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 6
      particles: 3 episodes_per_iteration: 6 iterations: 2 hidden_size: 16
      curve_points: 4 baseline_refresh_iterations: 1 instances_per_task: 1
    })",
                         "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return *job;
}

// A policy that greedily picks `choice[k]` on head k (a large bias).
void ForceGreedy(LhoptPolicyImpl& policy, const std::vector<int64_t>& choice) {
  torch::NoGradGuard no_grad;
  auto params = policy.named_parameters();
  for (int k = 0; k < kNumActionHeads; ++k) {
    torch::Tensor b = params[absl::StrCat("head", k, ".bias")];
    b.zero_();
    b[choice[k]] = 100.0;
  }
}

std::vector<int64_t> KeepAll() {
  std::vector<int64_t> c;
  for (const auto& h : ActionHeads()) c.push_back(h.keep_choice);
  return c;
}

TEST(LhoptEpisode, SegmentsHaveTheRightShapesAndRewardsSumToRunReward) {
  v1::JobSpec spec = TestJob();
  LhoptJob job(spec);
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(spec, &buffer, "t");
  LhoptUnit unit = job.Start();
  auto r = runner.Run(unit);
  ASSERT_TRUE(r.ok()) << r.status();
  const int64_t P = 3, D = unit.decisions, C = 4;
  ASSERT_GE(D, 2);
  ASSERT_EQ(int64_t(r->segments.size()), P);
  EXPECT_EQ(r->raw_features.sizes(), (std::vector<int64_t>{D * P, kNumLhoptFeatures}));
  EXPECT_EQ(r->curve.sizes(), (std::vector<int64_t>{C, P}));
  EXPECT_EQ(r->curve_steps, CurveSteps(unit.inner_steps, C));
  EXPECT_TRUE(r->baseline_computed);
  // The fits the rewards used: the memoised ones now.
  auto fits = runner.BaselineFits(unit);
  ASSERT_TRUE(fits.ok());
  std::vector<double> t(r->curve_steps.begin(), r->curve_steps.end());
  for (int64_t p = 0; p < P; ++p) {
    const PpoSegment& s = r->segments[p];
    EXPECT_EQ(s.features.sizes(), (std::vector<int64_t>{D, kNumLhoptFeatures}));
    EXPECT_EQ(s.value_extra.sizes(), (std::vector<int64_t>{D, kLhoptValueExtraSize}));
    EXPECT_EQ(s.actions.sizes(), (std::vector<int64_t>{D, kNumActionHeads}));
    EXPECT_EQ(s.log_probs.sizes(), (std::vector<int64_t>{D}));
    EXPECT_EQ(s.values.sizes(), (std::vector<int64_t>{D}));
    EXPECT_EQ(s.rewards.sizes(), (std::vector<int64_t>{D}));
    EXPECT_TRUE((s.log_probs <= 0).all().item<bool>());
    EXPECT_EQ(s.dones[D - 1].item<float>(), 1.0f);
    EXPECT_EQ(s.dones.sum().item<float>(), 1.0f);
    EXPECT_EQ(s.policy_version, 0);
    // Features are the normalised ones: clipped at 2.
    EXPECT_LE(s.features.abs().max().item<float>(), 2.0f);
    torch::Tensor col = r->curve.select(1, p).contiguous();
    std::vector<double> loss(col.data_ptr<double>(), col.data_ptr<double>() + C);
    double expected = RunReward((*fits)[p], t, loss, 3.0);
    EXPECT_NEAR(s.rewards.sum().item<double>(), expected, 1e-5);
    EXPECT_NEAR(r->episode_rewards[p].item<double>(), expected, 1e-9);
    EXPECT_LE(std::abs(expected), 3.0);
  }
  // Not every reward of the first decisions is zero and not all identical:
  // the curve really is scored point by point.
  EXPECT_GT(torch::cat({r->segments[0].rewards, r->segments[1].rewards}).abs().sum().item<double>(), 0);
}

TEST(LhoptEpisode, BaselineFitIsCachedInMemoryAndInTheBufferAndUsed) {
  v1::JobSpec spec = TestJob();
  LhoptJob job(spec);
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(spec, &buffer, "t");
  LhoptUnit a = job.Start();
  LhoptUnit b = job.Start();  // one instance a task: the same task key
  ASSERT_EQ(a.task_key, b.task_key);
  ASSERT_NE(a.unit_id, b.unit_id);
  auto ra = runner.Run(a);
  auto rb = runner.Run(b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_TRUE(ra->baseline_computed);
  EXPECT_FALSE(rb->baseline_computed);
  EXPECT_EQ(runner.baseline_runs(), 1);
  EXPECT_EQ(runner.baseline_memo_hits(), 1);
  EXPECT_TRUE(torch::equal(ra->baseline_curve, rb->baseline_curve));
  EXPECT_EQ(buffer.Size(runner.BaselineTable(a.task_key)).value(), 1);

  // A second worker (a fresh runner) on the same buffer reads the curve
  // instead of running the baseline.
  LhoptEpisodeRunner other(spec, &buffer, "t");
  auto rc = other.Run(b);
  ASSERT_TRUE(rc.ok());
  EXPECT_EQ(other.baseline_runs(), 0);
  EXPECT_EQ(other.baseline_buffer_hits(), 1);
  EXPECT_TRUE(torch::equal(rc->segments[0].rewards, rb->segments[0].rewards));

  // The rewards are those of the cached fit: a runner whose buffer holds a
  // baseline curve twice as high scores the same episodes differently.
  InMemoryReplayBuffer doctored;
  auto item = buffer.Sample(runner.BaselineTable(a.task_key), 0).value();
  for (auto& [k, v] : item)
    if (k == "curve") v = v * 2;
  ASSERT_TRUE(doctored.Put(runner.BaselineTable(a.task_key), 1, item).ok());
  LhoptEpisodeRunner third(spec, &doctored, "t");
  auto rd = third.Run(b);
  ASSERT_TRUE(rd.ok());
  EXPECT_EQ(third.baseline_runs(), 0);
  EXPECT_TRUE(torch::equal(rd->curve, rb->curve));  // the same episodes...
  EXPECT_GT(rd->episode_rewards.sum().item<double>(),  // ...beat a worse baseline
            rb->episode_rewards.sum().item<double>());
}

TEST(LhoptEpisode, RestartRegisterLoadRestoresTheSavedInnerState) {
  v1::JobSpec spec = TestJob();
  auto task = MakeTask(spec.task(), 11).value();
  LhoptPolicy policy(LhoptPolicyOptionsFor(spec));
  // Every decision: swap register 0. Decision 0 saves (the register is
  // empty), decision 1 loads decision 0's state and saves the current one,
  // decision 2 loads decision 1's.
  std::vector<int64_t> choice = KeepAll();
  choice[kHeadRegisters] = EncodeRegisterAction({RegisterOp::kSwap, 0});
  ForceGreedy(*policy, choice);
  EwmaNormalizer norm(kNumLhoptFeatures);
  ControlledRunConfig c;
  c.groups = 2;
  c.inner_steps = 30;
  c.decisions = 3;
  c.task_seed = 4;
  c.mode = ActMode::kGreedy;
  std::vector<std::vector<torch::Tensor>> params_after, m_after;
  std::vector<torch::Tensor> bc1_after;
  c.on_decision = [&](int64_t, const TaskState& s, const CiaoState& cs) {
    std::vector<torch::Tensor> p, m;
    for (const auto& t : s.params) p.push_back(t.clone());
    for (const auto& t : cs.m) m.push_back(t.clone());
    params_after.push_back(p);
    m_after.push_back(m);
    bc1_after.push_back(cs.bias_correction1.clone());
  };
  InMemoryReplayBuffer buffer;
  RegisterStore store(&buffer, "regs");
  auto run = RunControlled(*task, c, policy.get(), &norm, nullptr, &store);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->register_saves, 3 * 2);
  EXPECT_EQ(run->register_loads, 2 * 2);
  ASSERT_EQ(params_after.size(), 3u);
  // The load at decision 1 put decision 0's state back, bit for bit,
  // for both particles (weights, moments, bias corrections).
  EXPECT_TRUE(torch::equal(params_after[1][0], params_after[0][0]));
  EXPECT_TRUE(torch::equal(m_after[1][0], m_after[0][0]));
  EXPECT_TRUE(torch::equal(bc1_after[1], bc1_after[0]));
  // Decision 2 loads what decision 1 saved: the state trained from step
  // s0 to s1, which training moved away from decision 0's.
  EXPECT_FALSE(torch::equal(params_after[2][0], params_after[0][0]));
  // One state is held at the end (register 0's), in its own buffer table.
  ASSERT_EQ(store.live().size(), 2u);
  for (int64_t id : store.live()) EXPECT_EQ(buffer.Size(store.Table(id)).value(), 1);
  ASSERT_TRUE(store.ReleaseAll().ok());
  for (int64_t id = 0; id < 6; ++id) EXPECT_EQ(buffer.Size(store.Table(id)).value(), 0);
}

TEST(LhoptSchedule, ExportThenReplayGivesTheSameHyperparametersAndTheSameRun) {
  v1::JobSpec spec = TestJob();
  auto task = MakeTask(spec.task(), 3).value();
  LhoptPolicy policy(LhoptPolicyOptionsFor(spec));
  std::vector<int64_t> choice = KeepAll();
  choice[kHeadLr] = 6;             // lr x 2 every decision
  choice[kHeadOneMinusBeta2] = 0;  // 1 - beta2 x 0.5
  choice[kHeadClipFraction] = 4;   // logit + 1
  ForceGreedy(*policy, choice);
  EwmaNormalizer norm(kNumLhoptFeatures);
  const int64_t steps = 50;
  ControlledRunResult run;
  auto sched = RecordSchedule(*task, *policy, norm, steps, 5, /*seed=*/9, &run);
  ASSERT_TRUE(sched.ok()) << sched.status();
  ASSERT_EQ(sched->points_size(), 6);
  const std::string path = ::testing::TempDir() + "/lhopt_schedule.json";
  ASSERT_TRUE(SaveScheduleJson(path, *sched).ok());
  auto loaded = LoadScheduleJson(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_NEAR(loaded->points(5).lr(), 1e-3 * 32, 1e-15);

  // At each decision's progress, the schedule gives what the controller set.
  for (size_t d = 0; d < run.decision_steps.size(); ++d) {
    CiaoHyperparameters h = ScheduleAt(*loaded, double(run.decision_steps[d]) / steps);
    EXPECT_EQ(h.lr, run.hparams[d][0][0].item<double>());
    EXPECT_EQ(h.one_minus_beta2, run.hparams[d][0][2].item<double>());
    EXPECT_EQ(h.clip_fraction, run.hparams[d][0][5].item<double>());
  }
  // Replayed step by step on the same optimizee, every inner step uses the
  // hyperparameters the controller's run used, and the run is the same.
  std::vector<double> controller_lr, replay_lr;
  ControlledRunConfig rc;
  rc.inner_steps = steps;
  rc.decisions = 5;
  rc.task_seed = 9;
  rc.mode = ActMode::kGreedy;
  rc.random_initial_hparams = false;
  rc.on_step = [&](int64_t, const CiaoHparamTensors& h) { controller_lr.push_back(h.lr[0].item<double>()); };
  auto again = RunControlled(*task, rc, policy.get(), &norm, nullptr, nullptr);
  ASSERT_TRUE(again.ok());
  ControlledRunConfig fixed;
  fixed.inner_steps = steps;
  fixed.task_seed = 9;
  fixed.random_initial_hparams = false;
  fixed.schedule = [&](int64_t step) {
    return CiaoHparamTensors::Fill(1, ScheduleAt(*loaded, double(step) / steps));
  };
  fixed.on_step = [&](int64_t, const CiaoHparamTensors& h) { replay_lr.push_back(h.lr[0].item<double>()); };
  auto replay = RunControlled(*task, fixed, nullptr, nullptr, nullptr, nullptr);
  ASSERT_TRUE(replay.ok());
  ASSERT_EQ(replay_lr.size(), size_t(steps));
  EXPECT_EQ(replay_lr, controller_lr);
  EXPECT_GT(controller_lr.back(), controller_lr.front());
  EXPECT_TRUE(torch::equal(replay->test_loss, again->test_loss)) << replay->test_loss << again->test_loss;
}

TEST(LhoptSchedule, PeakArmsReplayTheShapeScaledToEachGridLr) {
  // lr 2e-3 for the first half, then its peak 8e-3; the grid holds the peak
  // itself and half of it.
  v1::LhoptSchedule s;
  CiaoHyperparameters h;
  h.lr = 2e-3;
  *s.add_points() = SchedulePoint(0, h);
  h.lr = 8e-3;
  h.one_minus_beta1 = 0.2;
  *s.add_points() = SchedulePoint(0.5, h);
  ASSERT_TRUE(ValidateSchedule(s).ok());
  auto task = MakeTask(TestJob().task(), 3).value();
  HparamEvalConfig c;
  c.steps = 40;
  c.seeds = 2;
  c.record_every = 10;
  c.seed = 4;
  c.adamw_lrs = {8e-3f, 4e-3f};
  auto report = RunHparamEval(*task, c, {}, &s);
  ASSERT_TRUE(report.ok()) << report.status();
  std::vector<std::string> names;
  for (const auto& a : report->arms) names.push_back(absl::StrCat(a.name, "@", a.lr));
  const std::vector<std::string> want = {"schedule@0", "schedule_peak@0.008", "schedule_peak@0.004",
                                         "ciao_default@0", "adamw@0.008", "adamw@0.004",
                                         "adamw_cosine@0.008", "adamw_cosine@0.004"};
  ASSERT_EQ(names, want);
  const auto& absolute = report->arms[0];
  const auto& at_peak = report->arms[1];  // grid lr = the schedule's peak: the same values
  const auto& half = report->arms[2];
  EXPECT_TRUE(torch::allclose(at_peak.train_curve, absolute.train_curve, 1e-9, 0));
  EXPECT_TRUE(torch::allclose(at_peak.test_loss, absolute.test_loss, 1e-9, 0));
  EXPECT_FALSE(torch::allclose(half.train_curve, absolute.train_curve, 1e-6, 0));
}

TEST(LhoptSchedule, RejectsMalformedSchedules) {
  v1::LhoptSchedule s;
  EXPECT_FALSE(ValidateSchedule(s).ok());
  *s.add_points() = SchedulePoint(0, CiaoHyperparameters());
  *s.add_points() = SchedulePoint(0.5, CiaoHyperparameters());
  EXPECT_TRUE(ValidateSchedule(s).ok());
  s.mutable_points(1)->set_progress(0);
  EXPECT_NE(std::string(ValidateSchedule(s).message()).find("points[1].progress"), std::string::npos);
  s.mutable_points(1)->set_progress(0.5);
  s.mutable_points(1)->set_lr(-1);
  EXPECT_NE(std::string(ValidateSchedule(s).message()).find("points[1].lr"), std::string::npos);
}

}  // namespace
}  // namespace lopt
