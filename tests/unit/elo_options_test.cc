// The ELO study's options: small_fc_lopt's rms constant, ELO's inference
// schedule of the step multiplier and weight decay, the unroll-length
// curriculum, task distributions (EloShard) and muP (muLO).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include <torch/torch.h>

#include "common/elo/elo_shard.h"
#include "common/elo/elo_unroller.h"
#include "common/elo/evaluation.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/learned_optimizer.h"
#include "common/elo/replay_buffer.h"
#include "common/elo/small_fc_lopt.h"
#include "common/rpc/buffer_client.h"
#include "common/tasks/task.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

v1::JobSpec Job(const std::string& text) {
  auto job = ParseJobText(text, "test");
  EXPECT_TRUE(job.ok()) << job.status();
  FillJobDefaults(&*job);
  absl::Status st = ValidateJob(*job);
  EXPECT_TRUE(st.ok()) << st;
  return *job;
}

// The reference (learned_optimization) weights g^2 by 1 - float32(0.999),
// not float32(1 - 0.999): 1.3e-5 apart, relatively, on every element.
TEST(SmallFcLopt, RmsWeightIsOneMinusFloatDecay) {
  const float expected = 1.0f - 0.999f;
  ASSERT_NE(expected, float(1.0 - 0.999));
  SmallFcLopt lopt(v1::LearnedOptimizerSpec{});
  for (bool op_path : {false, true}) {
    LoptState st = lopt.InitState({torch::zeros({1, 3})});
    torch::Tensor g = torch::ones({1, 3});
    if (op_path) {  // autograd on the gradient takes the tensor-op path
      torch::AutoGradMode on(true);
      g.requires_grad_(true);
      SmallFcLopt::Accumulate(g, &st[0]);
    } else {
      SmallFcLopt::Accumulate(g, &st[0]);  // the fused CPU loop
    }
    EXPECT_EQ(st[0].rms.flatten()[0].item<float>(), expected) << "op path " << op_path;
  }
}

// A learned optimizer that leads until late in a meta-test and then climbs
// back (ELO s4 of the 19th session: from about step 6,000 of 10,000 on 7 of
// 16 seeds) moves the mean over seeds little; the table names it.
TEST(MetaTestReport, TheTableNamesAnArmWhoseLossClimbsBack) {
  auto run = [](const std::string& opt, int64_t seed, std::vector<float> curve, double final_loss) {
    MetaTestRun r;
    r.optimizer = opt;
    r.seed = seed;
    r.curve = std::move(curve);
    r.final_train_loss = final_loss;
    r.test_loss = final_loss;
    r.test_accuracy = 0.5;
    return r;
  };
  MetaTestReport report;
  report.task = "toy";
  report.steps = 60;
  report.record_every = 10;
  report.final_window = 10;
  // lopt: seed 0 falls steadily; seed 1 is lowest at step 30 (0.4), then ends at 1.0; seed 2
  // ends at 0.55 against its lowest 0.4 (not 1.5x: noise, not a climb); seed 3 diverged.
  report.runs.push_back(run("lopt", 0, {2.0, 1.0, 0.6, 0.5, 0.45, 0.4}, 0.4));
  report.runs.push_back(run("lopt", 1, {2.0, 1.0, 0.4, 0.5, 0.8, 1.0}, 1.0));
  report.runs.push_back(run("lopt", 2, {2.0, 1.0, 0.4, 0.5, 0.5, 0.55}, 0.55));
  MetaTestRun gone = run("lopt", 3, {2.0, 1.0, 0.4, 9.0, NAN, NAN}, INFINITY);
  gone.diverged = true;
  report.runs.push_back(gone);
  // An optimizer that never trains drifts up from where it started: not a climb back.
  report.runs.push_back(run("lopt_untrained", 0, {2.3, 2.2, 2.25, 2.3, 2.4, 2.5}, 2.5));
  for (int64_t s = 0; s < 4; ++s) {
    report.runs.push_back(run("adamw", s, {2.0, 1.0, 0.8, 0.7, 0.6, 0.5}, 0.5));
    report.runs.back().lr = 1e-3;
  }

  std::vector<const MetaTestRun*> lopt;
  for (int i = 0; i < 4; ++i) lopt.push_back(&report.runs[i]);
  const ClimbBack c = ClimbedBack(lopt, report.record_every);
  EXPECT_EQ(c.climbed, 1);
  EXPECT_EQ(c.lowest_step, 30);  // the third window ends at step 30
  EXPECT_EQ(ClimbedBack(lopt, report.record_every, 1.3).climbed, 2) << "seed 2 at a lower bar";

  auto table = WriteMetaTestReport(report, ::testing::TempDir() + "/climb_back_report");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_NE(table->find("lopt: the training loss climbed back on 1 of 4 seeds (final above 1.5x "
                        "the run's lowest, reached near step 30): not stable over 60 steps"),
            std::string::npos)
      << *table;
  EXPECT_EQ(table->find("adamw lr=0.001: the training loss climbed back"), std::string::npos)
      << *table;
  EXPECT_EQ(table->find("lopt_untrained: the training loss"), std::string::npos) << *table;
  std::vector<const MetaTestRun*> untrained = {&report.runs[4]};
  EXPECT_EQ(ClimbedBack(untrained, report.record_every).climbed, 0) << "it never fell by 1.5x";
}

TEST(StepMultSchedule, WarmupThenConstantOrCosine) {
  v1::LearnedOptimizerSpec spec;
  EXPECT_FALSE(HasStepMultSchedule(spec));
  EXPECT_EQ(StepMultFactor(spec, 0, 1000), 1.0);  // plain small_fc_lopt
  spec.set_warmup_fraction(0.05);
  EXPECT_TRUE(HasStepMultSchedule(spec));
  EXPECT_EQ(StepMultFactor(spec, 0, 1000), 0.0);  // from 0, as ELO's code
  EXPECT_DOUBLE_EQ(StepMultFactor(spec, 25, 1000), 0.5);
  EXPECT_EQ(StepMultFactor(spec, 50, 1000), 1.0);
  EXPECT_EQ(StepMultFactor(spec, 999, 1000), 1.0);
  EXPECT_EQ(StepMultFactor(spec, 10, 0), 1.0);  // no run length: no schedule
  spec.set_step_mult_schedule(v1::COSINE);
  spec.set_min_step_mult(1e-4);  // step_mult 1e-3: decays to 0.1 of it
  EXPECT_NEAR(StepMultFactor(spec, 999, 1000), 0.1, 1e-6);
  EXPECT_NEAR(StepMultFactor(spec, 500, 1000),
              (1e-4 + 9e-4 * 0.5 * (1 + std::cos(M_PI * 500.0 / 999.0))) / 1e-3, 1e-6);
  // Decoupled weight decay, scaled by the schedule: u' = f * (u + step_mult * wd * p).
  spec.set_weight_decay(0.1);
  std::vector<torch::Tensor> p = {torch::full({2}, 3.0)}, u = {torch::full({2}, 1e-3)};
  ApplyStepMultSchedule(spec, 0.5, p, &u);
  EXPECT_NEAR(u[0][0].item<double>(), 0.5 * (1e-3 + 1e-3 * 0.1 * 3.0), 1e-9);
}

TEST(StepMultSchedule, LearnedOptimizerFollowsIt) {
  // With warm-up over the whole run the first step does nothing and the
  // second moves by half of what an unscheduled optimizer moves.
  v1::LearnedOptimizerSpec plain, warm;
  warm.set_warmup_fraction(1.0);
  torch::Generator gen = MakeGenerator(1, 0, 0);
  torch::Tensor theta = SmallFcLopt(plain).InitTheta(gen);
  const torch::Tensor g = torch::arange(12, torch::kFloat32).view({4, 3});  // d/dw of (w * g).sum()
  auto run = [&](const v1::LearnedOptimizerSpec& spec, int steps) {
    torch::Tensor w = torch::ones({4, 3}).requires_grad_(true);
    LearnedOptimizer opt({w}, spec, theta);
    opt.set_total_steps(4);
    std::vector<torch::Tensor> after;
    for (int s = 0; s < steps; ++s) {
      opt.zero_grad();
      (w * g).sum().backward();
      opt.step();
      after.push_back(w.detach().clone());
    }
    return after;
  };
  auto p = run(plain, 2), s = run(warm, 2);
  EXPECT_TRUE(torch::equal(s[0], torch::ones({4, 3})));  // factor 0 at step 0
  EXPECT_FALSE(torch::equal(p[0], torch::ones({4, 3})));
  // Step 1 is a quarter (1/4 of a 4-step warm-up) of small_fc_lopt's update
  // from the same parameters and accumulators.
  SmallFcLopt lopt(plain);
  torch::Tensor w = torch::ones({1, 4, 3});
  LoptState st = lopt.InitState({w});
  lopt.Step({w}, {g.unsqueeze(0)}, &st, torch::zeros({1}, torch::kInt64), theta);
  std::vector<torch::Tensor> u =
      lopt.Step({w}, {g.unsqueeze(0)}, &st, torch::ones({1}, torch::kInt64), theta);
  EXPECT_TRUE(torch::allclose(s[1], (w - 0.25 * u[0]).squeeze(0), 1e-6, 1e-9));
}

// The meta-test's scheduled AdamW: each grid lr is the peak of a 5% warm-up
// from 0 and a cosine to 0.1x; the same optimizees, batches and grid as the
// constant arm, reported under "adamw_cosine".
TEST(MetaTestAdamWCosine, WarmsUpFromZeroThenDecaysToATenth) {
  EXPECT_EQ(AdamWCosineFactor(0, 100), 0.0);
  EXPECT_DOUBLE_EQ(AdamWCosineFactor(2, 100), 0.4);  // 2 of 5 warm-up steps
  EXPECT_NEAR(AdamWCosineFactor(5, 100), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 5 / 99.0)), 1e-7);
  EXPECT_NEAR(AdamWCosineFactor(99, 100), 0.1, 1e-7);  // min_step_mult is a float

  v1::TaskSpec spec;
  spec.mutable_noisy_quadratic()->set_min_dim(6);
  spec.mutable_noisy_quadratic()->set_max_dim(6);
  spec.mutable_noisy_quadratic()->set_noise_stddev(0);
  auto task = MakeTask(spec, 5).value();
  MetaTestConfig c;
  c.steps = 40;
  c.seeds = 2;
  c.record_every = 1;
  c.adamw_lrs = {0.1f, 0.01f};
  c.adamw_cosine = true;
  MetaTestReport r = RunMetaTest(*task, c, {});
  std::map<std::pair<std::string, double>, std::vector<const MetaTestRun*>> arms;
  for (const auto& run : r.runs) arms[{run.optimizer, run.lr}].push_back(&run);
  ASSERT_EQ(arms.size(), 4u);  // {adamw, adamw_cosine} x {0.1, 0.01}
  for (float lr : c.adamw_lrs) {
    const auto& con = arms[{"adamw", double(lr)}];
    const auto& cos = arms[{"adamw_cosine", double(lr)}];
    ASSERT_EQ(con.size(), 2u);
    ASSERT_EQ(cos.size(), 2u);
    for (int s = 0; s < 2; ++s) {
      // Same optimizee and loss at step 0; the warm-up's step 0 moves nothing.
      EXPECT_EQ(cos[s]->curve[0], con[s]->curve[0]);
      EXPECT_EQ(cos[s]->curve[1], cos[s]->curve[0]);
      EXPECT_LT(con[s]->curve[1], con[s]->curve[0]);
      EXPECT_NE(cos[s]->final_train_loss, con[s]->final_train_loss);
    }
  }
}

TEST(Curriculum, MaxUnrollLengthGrowsOverMetaTraining) {
  v1::JobSpec job = Job(
      "task { noisy_quadratic { min_dim: 4 max_dim: 4 } }\n"
      "pes { max_unroll_length: 1000 curriculum_final_max_unroll_length: 10000 }\n"
      "budget { outer_steps: 101 }");
  EXPECT_EQ(MaxUnrollLengthAt(job, 0), 1000);
  EXPECT_EQ(MaxUnrollLengthAt(job, 50), 5500);
  EXPECT_EQ(MaxUnrollLengthAt(job, 100), 10000);
  EXPECT_EQ(MetaTrainingHorizon(job), 10000);
  v1::JobSpec fixed = Job("task { noisy_quadratic { } }");
  EXPECT_EQ(MaxUnrollLengthAt(fixed, 500), fixed.pes().max_unroll_length());
  // A final maximum below the start is refused at the door.
  v1::JobSpec bad = fixed;
  bad.mutable_pes()->set_curriculum_final_max_unroll_length(10);
  EXPECT_NE(std::string(ValidateJob(bad).message()).find("curriculum_final_max_unroll_length"),
            std::string::npos);
}

TEST(Curriculum, UnrollerDrawsLengthsUpToTheCurrentMaximum) {
  v1::JobSpec job = Job(
      "task { noisy_quadratic { min_dim: 4 max_dim: 4 noise_stddev: 0 } }\n"
      "pes { num_tasks: 16 truncation_length: 2 min_unroll_length: 2 max_unroll_length: 2 "
      "curriculum_final_max_unroll_length: 40 random_initial_offset: false }\n"
      "elo { buffer { enabled: false } behavior_cloning { enabled: false } }\n"
      "budget { outer_steps: 30 }");
  auto task = MakeTask(job.task(), job.seed()).value();
  EloUnroller u(job, task.get(), nullptr, "t", 3);
  torch::Generator gen = MakeGenerator(0, 0, 0);
  torch::Tensor theta = SmallFcLopt(job.lopt()).InitTheta(gen);
  int64_t longest = 0;
  for (int64_t s = 0; s < 30; ++s) {
    TruncationResult r = u.RunTruncation(theta, 1.0, s);
    for (const UnrollStart& st : r.unroll_starts) {
      EXPECT_LE(st.length, MaxUnrollLengthAt(job, s)) << "outer step " << s;
      longest = std::max(longest, st.length);
    }
  }
  EXPECT_GT(longest, 20);  // without the curriculum every unroll is 2 long
}

TEST(TaskDistribution, PesTasksSplitInProportionToWeights) {
  auto counts = [](const std::string& weights, int tasks) {
    std::string text = absl::StrCat("pes { num_tasks: ", tasks, " }\nelo {\n");
    for (char w : weights)
      absl::StrAppend(&text, " tasks { task { noisy_quadratic { } } weight: ", std::string(1, w),
                      " }\n");
    return MixtureTaskCounts(Job(text + "}"));
  };
  EXPECT_EQ(counts("11", 8), (std::vector<int32_t>{4, 4}));
  EXPECT_EQ(counts("31", 8), (std::vector<int32_t>{6, 2}));
  EXPECT_EQ(counts("111", 4), (std::vector<int32_t>{2, 1, 1}));
  EXPECT_EQ(counts("91", 4), (std::vector<int32_t>{3, 1}));  // every entry gets one
  EXPECT_EQ(counts("1", 5), (std::vector<int32_t>{5}));
  // Draw frequencies over many splits: beyond the one task each entry is
  // given, each entry's share of the rest is its weight's share of it to
  // within one task.
  for (int T : {7, 16, 64})
    for (const std::string w : {"12", "123", "5111"}) {
      auto c = counts(w, T);
      double total = 0;
      for (char x : w) total += x - '0';
      int sum = 0;
      for (size_t i = 0; i < w.size(); ++i) {
        EXPECT_NEAR(c[i] - 1, (T - double(w.size())) * (w[i] - '0') / total, 1.0 + 1e-9)
            << w << " T=" << T;
        sum += c[i];
      }
      EXPECT_EQ(sum, T);
    }
  // More entries than PES tasks is refused at the door.
  v1::JobSpec job = Job(
      "pes { num_tasks: 2 }\n"
      "elo { tasks { task { noisy_quadratic { } } } tasks { task { noisy_quadratic { } } } }");
  job.mutable_pes()->set_num_tasks(1);
  EXPECT_NE(std::string(ValidateJob(job).message()).find("at least one PES task"),
            std::string::npos);
}

TEST(TaskDistribution, ShardGradientIsTheWeightedMeanOfItsGroups) {
  v1::JobSpec job = Job(
      "pes { num_tasks: 8 truncation_length: 3 min_unroll_length: 3 max_unroll_length: 9 }\n"
      "elo { buffer { capacity: 2 }\n"
      "  tasks { task { noisy_quadratic { min_dim: 4 max_dim: 4 } } weight: 3 }\n"
      "  tasks { task { noisy_quadratic { min_dim: 7 max_dim: 7 } } weight: 1 } }");
  EXPECT_EQ(job.task().noisy_quadratic().min_dim(), 4);  // the meta-test task: the first entry's
  TaskFactory factory = [](const v1::TaskSpec& t, uint64_t seed)
      -> absl::StatusOr<std::shared_ptr<const Task>> {
    auto task = MakeTask(t, seed);
    if (!task.ok()) return task.status();
    return std::shared_ptr<const Task>(std::move(*task));
  };
  InMemoryReplayBuffer buffer;
  auto shard = EloShard::Create(job, factory, &buffer, "j/", 11).value();
  ASSERT_EQ(shard->num_groups(), 2);
  EXPECT_EQ(shard->unroller(0).num_tasks(), 6);
  EXPECT_EQ(shard->unroller(1).num_tasks(), 2);
  EXPECT_EQ(shard->task(1).param_shapes()[0], (std::vector<int64_t>{7}));
  EXPECT_NE(shard->buffer_tables()[0], shard->buffer_tables()[1]);
  // The same groups built alone, from the same seeds.
  std::vector<std::unique_ptr<EloUnroller>> alone;
  std::vector<std::shared_ptr<const Task>> tasks;
  InMemoryReplayBuffer buffer2;
  for (int k = 0; k < 2; ++k) {
    v1::JobSpec sub = job;
    *sub.mutable_task() = job.elo().tasks(k).task();
    sub.mutable_elo()->clear_tasks();
    sub.mutable_pes()->set_num_tasks(k == 0 ? 6 : 2);
    tasks.push_back(factory(sub.task(), GroupSeed(job.seed(), k)).value());
    alone.push_back(std::make_unique<EloUnroller>(sub, tasks.back().get(), &buffer2,
                                                  shard->buffer_tables()[k], GroupSeed(11, k)));
  }
  torch::Generator gen = MakeGenerator(0, 0, 0);
  torch::Tensor theta = SmallFcLopt(job.lopt()).InitTheta(gen);
  for (int64_t s = 0; s < 5; ++s) {
    TruncationResult r = shard->RunTruncation(theta, 0.5, s);
    TruncationResult a = alone[0]->RunTruncation(theta, 0.5, s);
    TruncationResult b = alone[1]->RunTruncation(theta, 0.5, s);
    EXPECT_TRUE(torch::allclose(r.grad, 0.75 * a.grad + 0.25 * b.grad, 1e-6, 1e-9));
    EXPECT_NEAR(r.meta_loss, 0.75 * a.meta_loss + 0.25 * b.meta_loss, 1e-9);
    EXPECT_EQ(r.particle_steps, a.particle_steps + b.particle_steps);
    EXPECT_EQ(r.pushes, a.pushes + b.pushes);
  }
  // Its state round-trips: a shard loaded from it continues bit for bit.
  NamedTensors saved = shard->SaveState();
  InMemoryReplayBuffer buffer3;
  for (const auto& table : shard->buffer_tables()) {
    std::vector<NamedTensors> items = buffer.Items(table).value();
    for (auto& item : items) ASSERT_TRUE(buffer3.Put(table, 2, item).ok());
  }
  auto copy = EloShard::Create(job, factory, &buffer3, "j/", 11).value();
  ASSERT_TRUE(copy->LoadState(saved).ok());
  for (int64_t s = 5; s < 8; ++s)
    EXPECT_TRUE(torch::equal(shard->RunTruncation(theta, 0.5, s).grad,
                             copy->RunTruncation(theta, 0.5, s).grad));
}

v1::TaskSpec MlpSpec(int64_t width, bool mup, int64_t base = 128) {
  v1::TaskSpec t;
  auto* m = t.mutable_fmnist_mlp();
  m->set_image_size(8);
  m->add_hidden_sizes(width);
  m->add_hidden_sizes(width);
  m->set_batch_size(64);
  if (mup) t.set_parameterization(v1::MUP);
  t.set_mup_base_width(base);
  return t;
}

TEST(Mup, AtTheBaseWidthItIsTheStandardMlp) {
  auto sp = MakeTask(MlpSpec(32, false), 0).value();
  auto mup = MakeTask(MlpSpec(32, true, 32), 0).value();
  torch::Generator g1 = MakeGenerator(5, 0, 0), g2 = MakeGenerator(5, 0, 0);
  TaskState a = sp->Init(2, 1, g1), b = mup->Init(2, 1, g2);
  for (size_t i = 0; i < a.params.size(); ++i) EXPECT_TRUE(torch::equal(a.params[i], b.params[i]));
  torch::Generator d = MakeGenerator(6, 0, 0);
  Batch batch = sp->SampleBatch(2, d);
  std::vector<torch::Tensor> ga, gb;
  EXPECT_TRUE(torch::allclose(sp->LossAndGrad(a, batch, &ga), mup->LossAndGrad(b, batch, &gb)));
  for (size_t i = 0; i < ga.size(); ++i) EXPECT_TRUE(torch::allclose(ga[i], gb[i]));
  for (double s : mup->UpdateScales()) EXPECT_EQ(s, 1.0);
}

// What muP is for: the first-order effect on the loss of one Adam-like step
// (sign(g), each tensor scaled by the task's update scale) does not grow with
// width, whereas the standard parameterisation's grows roughly as width^1.5.
double FirstOrderDecrease(const Task& task) {
  torch::Generator g = MakeGenerator(9, 0, 0), d = MakeGenerator(10, 0, 0);
  TaskState s = task.Init(4, 1, g);
  Batch batch = task.SampleBatch(4, d);
  std::vector<torch::Tensor> grads;
  task.LossAndGrad(s, batch, &grads);
  std::vector<double> scales = task.UpdateScales();
  double sum = 0;
  for (size_t i = 0; i < grads.size(); ++i)
    sum += (i < scales.size() ? scales[i] : 1.0) * grads[i].abs().sum().item<double>() / 4;
  return sum;
}

TEST(Mup, UpdateEffectIsWidthIndependent) {
  const double mup_ratio = FirstOrderDecrease(*MakeTask(MlpSpec(1024, true), 0).value()) /
                           FirstOrderDecrease(*MakeTask(MlpSpec(64, true), 0).value());
  const double sp_ratio = FirstOrderDecrease(*MakeTask(MlpSpec(1024, false), 0).value()) /
                          FirstOrderDecrease(*MakeTask(MlpSpec(64, false), 0).value());
  EXPECT_GT(mup_ratio, 0.5);
  EXPECT_LT(mup_ratio, 2.0);
  EXPECT_GT(sp_ratio, 8.0);
  // The hidden matrix's scale is 1 / (width / base); the others 1.
  auto task = MakeTask(MlpSpec(512, true), 0).value();
  std::vector<double> scales = task->UpdateScales();
  ASSERT_EQ(scales.size(), 6u);
  EXPECT_EQ(scales[2], 0.25);
  for (int i : {0, 1, 3, 4, 5}) EXPECT_EQ(scales[i], 1.0) << i;
}

TEST(Mup, JobsMustAgreeOnTheParameterization) {
  v1::JobSpec job = Job("task { fmnist_mlp { image_size: 8 } parameterization: MUP }\n"
                        "lopt { parameterization: MUP }");
  job.mutable_lopt()->set_parameterization(v1::STANDARD);
  EXPECT_NE(std::string(ValidateJob(job).message()).find("must match lopt.parameterization"),
            std::string::npos);
  v1::JobSpec cnn = Job("task { fmnist_cnn { } }");
  cnn.mutable_task()->set_parameterization(v1::MUP);
  EXPECT_NE(std::string(ValidateJob(cnn).message()).find("fmnist_mlp only"), std::string::npos);
}

}  // namespace
}  // namespace lopt

namespace lopt {
namespace {

// A worker whose buffer server is unreachable runs on (fresh starts), but
// says so: its results count the failed calls and carry the error, and no
// push is counted that was not stored.
TEST(EloBufferFailures, UnreachableBufferIsCountedNotHidden) {
  v1::JobSpec job = Job(
      "task { noisy_quadratic { min_dim: 4 max_dim: 4 noise_stddev: 0 } }\n"
      "pes { num_tasks: 4 truncation_length: 3 min_unroll_length: 3 max_unroll_length: 6 }\n"
      "elo { buffer { capacity: 2 fresh_start_probability: 0 } }");
  auto task = MakeTask(job.task(), job.seed()).value();
  ClientConfig cfg;
  cfg.target = "127.0.0.1:1";  // nothing listens on port 1
  cfg.timeout_ms = 200;
  RemoteReplayBufferOptions opts;
  opts.max_attempts = 1;
  RemoteReplayBuffer dead(cfg, opts);
  EloUnroller u(job, task.get(), &dead, "t", 3);
  torch::Generator gen = MakeGenerator(0, 0, 0);
  torch::Tensor theta = SmallFcLopt(job.lopt()).InitTheta(gen);
  int64_t failures = 0, pushes = 0, restores = 0;
  std::string error;
  for (int64_t s = 0; s < 6; ++s) {
    TruncationResult r = u.RunTruncation(theta, 1.0, s);
    failures += r.buffer_failures;
    pushes += r.pushes;
    restores += r.restores;
    if (!r.buffer_error.empty()) error = r.buffer_error;
  }
  EXPECT_GT(failures, 0);
  EXPECT_EQ(pushes, 0);
  EXPECT_EQ(restores, 0);
  EXPECT_NE(error.find("table t"), std::string::npos) << error;
  EXPECT_NE(error.find("UNAVAILABLE"), std::string::npos) << error;
}

}  // namespace
}  // namespace lopt

namespace lopt {
namespace {

TEST(StepMultSchedule, LoptOptionsMergeIntoTheFilesAndAreCheckedAtTheDoor) {
  v1::LearnedOptimizerSpec base;
  base.set_step_mult(0.002f);
  auto merged = MergeLoptOptions(base, "warmup_fraction: 0.05 step_mult_schedule: COSINE");
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_FLOAT_EQ(merged->warmup_fraction(), 0.05f);
  EXPECT_EQ(merged->step_mult_schedule(), v1::COSINE);
  EXPECT_FLOAT_EQ(merged->step_mult(), 0.002f);  // the file's, kept
  auto bad = MergeLoptOptions(base, "bogus: 1");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(bad.status().message()).find("--lopt-options:1:"), std::string::npos)
      << bad.status();
  EXPECT_NE(std::string(MergeLoptOptions(base, "warmup_fraction: 2").status().message())
                .find("lopt.warmup_fraction"),
            std::string::npos);
  EXPECT_FALSE(MergeLoptOptions(base, "hidden_size: 7").ok());
}

// A muLO's file (lopt.parameterization MUP) takes inference options too: the
// study's `lopt eval` and `lopt eval-large` of the muLO failed here once,
// because the options were checked against a task muP does not apply to.
TEST(StepMultSchedule, LoptOptionsMergeIntoAMuLoFile) {
  v1::LearnedOptimizerSpec base;
  base.set_parameterization(v1::MUP);
  auto merged = MergeLoptOptions(base, "warmup_fraction: 0.05");
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->parameterization(), v1::MUP);
  EXPECT_FLOAT_EQ(merged->warmup_fraction(), 0.05f);
  EXPECT_FALSE(MergeLoptOptions(base, "warmup_fraction: 2").ok());
}

}  // namespace
}  // namespace lopt
