// ELO's additions: the replay buffer's start decisions and push steps, the
// alpha_t schedule, the behaviour-cloning loss and the mixed trajectory.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/elo/elo_unroller.h"
#include "common/elo/replay_buffer.h"
#include "common/tasks/task.h"
#include "kinds/job_door.h"
#include "learner/elo_learner.h"

namespace lopt {
namespace {

// A 4-dimensional noiseless quadratic job, with `extra` merged over it.
v1::JobSpec QuadraticJob(const std::string& extra) {
  v1::JobSpec job = ParseJobText(
      "task { noisy_quadratic { min_dim: 4 max_dim: 4 noise_stddev: 0 } }\n"
      "pes { random_initial_offset: false unroll_length_distribution: UNIFORM }\n", "base").value();
  auto more = ParseJobText(extra, "extra");
  EXPECT_TRUE(more.ok()) << more.status();
  job.MergeFrom(*more);
  FillJobDefaults(&job);
  absl::Status st = ValidateJob(job);
  EXPECT_TRUE(st.ok()) << st;
  return job;
}

struct Counts {
  int64_t fresh = 0, restored = 0;
  std::vector<UnrollStart> starts;
};

Counts RunMany(const v1::JobSpec& job, int64_t truncations, ReplayBuffer* buffer) {
  auto task = MakeTask(job.task(), job.seed()).value();
  EloUnroller u(job, task.get(), buffer, "t", 1);
  torch::Generator gen = MakeGenerator(0, 0, 0);
  torch::Tensor theta = SmallFcLopt(job.lopt()).InitTheta(gen);
  Counts c;
  for (int64_t s = 0; s < truncations; ++s) {
    TruncationResult r = u.RunTruncation(theta, 1.0, s);
    c.fresh += r.fresh_starts;
    c.restored += r.restores;
    c.starts.insert(c.starts.end(), r.unroll_starts.begin(), r.unroll_starts.end());
  }
  return c;
}

TEST(EloBuffer, StartsFreshWithProbabilityPth) {
  for (double p_th : {0.2, 0.6}) {
    v1::JobSpec job = QuadraticJob(absl::StrCat(
        "pes { num_tasks: 64 truncation_length: 2 min_unroll_length: 2 max_unroll_length: 2 }\n"
        "elo { behavior_cloning { enabled: false } buffer { capacity: 4 fresh_start_probability: ",
        p_th, " } }"));
    InMemoryReplayBuffer buffer;
    Counts c = RunMany(job, 40, &buffer);
    ASSERT_EQ(c.fresh + c.restored, 64 * 39);  // every task restarts every truncation after the first
    double frac = double(c.fresh) / double(c.fresh + c.restored);
    EXPECT_NEAR(frac, p_th, 0.03) << "P_th " << p_th;
    EXPECT_EQ(buffer.Size("t").value(), 4);
  }
}

TEST(EloBuffer, DisabledBufferAlwaysStartsFresh) {
  v1::JobSpec job = QuadraticJob(
      "pes { num_tasks: 8 truncation_length: 2 min_unroll_length: 2 max_unroll_length: 2 }\n"
      "elo { buffer { enabled: false } }");
  InMemoryReplayBuffer buffer;
  Counts c = RunMany(job, 10, &buffer);
  EXPECT_EQ(c.restored, 0);
  EXPECT_EQ(c.fresh, 8 * 9);
  EXPECT_EQ(buffer.Size("t").value(), 0);
  for (const auto& s : c.starts) EXPECT_EQ(s.push_step, -1);
}

TEST(EloBuffer, PushStepIsUniformInStartToStartPlusN) {
  v1::JobSpec job = QuadraticJob(
      "pes { num_tasks: 32 truncation_length: 5 min_unroll_length: 5 max_unroll_length: 12 }\n"
      "elo { buffer { capacity: 4 fresh_start_probability: 0.5 } }");
  InMemoryReplayBuffer buffer;
  Counts c = RunMany(job, 60, &buffer);
  ASSERT_GT(c.starts.size(), 500u);
  int64_t low = 0, at_start = 0, at_end = 0, restored_later = 0;
  for (const auto& s : c.starts) {
    EXPECT_GE(s.length, 5);
    EXPECT_LE(s.length, 12);
    EXPECT_GE(s.push_step, s.start_step);
    EXPECT_LE(s.push_step, s.start_step + s.length);
    low += (s.push_step - s.start_step) * 2 < s.length;
    at_start += s.push_step == s.start_step;
    at_end += s.push_step == s.start_step + s.length;
    if (s.restored) {
      restored_later += s.start_step > 0;
    } else {
      EXPECT_EQ(s.start_step, 0);
    }
  }
  EXPECT_NEAR(double(low) / c.starts.size(), 0.5, 0.07);
  EXPECT_GT(at_start, 0);  // both ends of [K, K + N] are reachable
  EXPECT_GT(at_end, 0);
  EXPECT_GT(restored_later, 0);  // restored unrolls continue from their buffered step
  std::vector<NamedTensors> items = buffer.Items("t").value();
  for (const auto& item : items) {
    EXPECT_GE(Find(item, "step").value().item<int64_t>(), 0);
    EXPECT_EQ(Find(item, "params/0").value().size(0), 2);  // the antithetic pair
    EXPECT_EQ(Find(item, "xi").value().numel(), 2402);
  }
}

TEST(EloSchedule, AlphaIsTOverTMinusOne) {
  v1::JobSpec job = QuadraticJob("budget { outer_steps: 11 }");
  EloLearner learner(job);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(0), 0.0);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(5), 0.5);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(10), 1.0);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(3), 0.3);
  job.mutable_elo()->mutable_behavior_cloning()->set_enabled(false);
  EXPECT_DOUBLE_EQ(EloLearner(job).AlphaAt(0), 1.0);
}

TEST(EloSchedule, AlphaRampFractionReachesOneEarlyAndStays) {
  v1::JobSpec job = QuadraticJob(
      "budget { outer_steps: 11 } elo { behavior_cloning { alpha_ramp_fraction: 0.5 } }");
  EloLearner learner(job);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(0), 0.0);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(1), 0.2);  // t / ((T-1) * 0.5) = 1/5
  EXPECT_DOUBLE_EQ(learner.AlphaAt(5), 1.0);
  EXPECT_DOUBLE_EQ(learner.AlphaAt(8), 1.0);
  for (float bad : {0.0f, -0.5f, 1.5f}) {
    job.mutable_elo()->mutable_behavior_cloning()->set_alpha_ramp_fraction(bad);
    absl::Status s = ValidateJob(job);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("alpha_ramp_fraction"), std::string::npos) << s;
  }
}

// With theta = 0 the learned optimizer proposes no update, so the BC loss of
// the first step is |Adam's first update|^2 = d * lr^2 (Adam's first step is
// lr * sign(g)).
TEST(EloBehaviorCloning, BcLossIsSquaredDistanceToAdam) {
  v1::JobSpec job = QuadraticJob(
      "pes { num_tasks: 4 truncation_length: 1 min_unroll_length: 5 max_unroll_length: 5 }\n"
      "elo { buffer { enabled: false } behavior_cloning { teacher_lr: 0.001 } }");
  auto task = MakeTask(job.task(), job.seed()).value();
  EloUnroller u(job, task.get(), nullptr, "t", 1);
  TruncationResult r = u.RunTruncation(torch::zeros({2402}), 0.0, 0);
  EXPECT_NEAR(r.bc_loss, 4 * 1e-6, 4e-8);
  EXPECT_NEAR(r.meta_loss, r.bc_loss, 1e-12);  // alpha = 0: the meta-loss is the BC loss
}

TEST(EloBehaviorCloning, MetaLossMixesBcAndTaskLoss) {
  v1::JobSpec job = QuadraticJob(
      "pes { num_tasks: 4 truncation_length: 5 min_unroll_length: 5 max_unroll_length: 5 }");
  auto task = MakeTask(job.task(), job.seed()).value();
  InMemoryReplayBuffer buffer;
  EloUnroller u(job, task.get(), &buffer, "t", 1);
  torch::Generator gen = MakeGenerator(0, 0, 0);
  torch::Tensor theta = SmallFcLopt(job.lopt()).InitTheta(gen);
  for (double alpha : {0.3, 0.8}) {
    TruncationResult r = u.RunTruncation(theta, alpha, 0);
    EXPECT_GT(r.bc_loss, 0);
    EXPECT_NEAR(r.meta_loss, (1 - alpha) * r.bc_loss + alpha * r.task_loss, 1e-6);
  }
}

// At alpha = 0 the trajectory is Adam's whatever theta is; at alpha = 1 it
// is the learned optimizer's.
TEST(EloBehaviorCloning, TrajectoryFollowsTeacherAtAlphaZero) {
  v1::JobSpec job = QuadraticJob(
      "pes { num_tasks: 2 truncation_length: 6 min_unroll_length: 50 max_unroll_length: 50 }\n"
      "elo { buffer { enabled: false } }");
  auto task = MakeTask(job.task(), job.seed()).value();
  torch::Generator gen = MakeGenerator(0, 0, 0);
  SmallFcLopt lo(job.lopt());
  torch::Tensor theta_a = lo.InitTheta(gen), theta_b = lo.InitTheta(gen);
  auto params_after = [&](const torch::Tensor& theta, double alpha) {
    EloUnroller u(job, task.get(), nullptr, "t", 1);
    u.RunTruncation(theta, alpha, 0);
    return Find(u.SaveState(), "params/0").value().clone();
  };
  torch::Tensor a0 = params_after(theta_a, 0.0), b0 = params_after(theta_b, 0.0);
  // The PES perturbations differ per particle but cannot matter at alpha = 0.
  EXPECT_TRUE(torch::allclose(a0, b0, 0, 1e-7));
  torch::Tensor a1 = params_after(theta_a, 1.0), b1 = params_after(theta_b, 1.0);
  EXPECT_FALSE(torch::allclose(a1, b1, 0, 1e-7));
  EXPECT_FALSE(torch::allclose(a0, a1, 0, 1e-7));
}

// The rows [i, T + i] (task i's antithetic pair) of every state tensor.
NamedTensors PairRows(const NamedTensors& state, int64_t i, int64_t T) {
  NamedTensors out;
  torch::Tensor idx = torch::tensor({i, T + i}, torch::kInt64);
  for (const auto& [k, v] : state)
    if (k.rfind("params/", 0) == 0 || k.rfind("aux/", 0) == 0 || k.rfind("adam_", 0) == 0 ||
        k.rfind("lopt/", 0) == 0)
      out.emplace_back(k, v.index_select(0, idx));
  return out;
}

// Four tasks on the quadratic, truncations of one step, unrolls of two, BC
// off, a buffer of one state; after its first truncation.
struct OneStepBufferedUnroller {
  explicit OneStepBufferedUnroller(double fresh_start_probability,
                                   const std::string& buffer_options = "")
      : job(QuadraticJob(absl::StrCat(
            "pes { num_tasks: 4 truncation_length: 1 min_unroll_length: 2 max_unroll_length: 2 }\n"
            "elo { behavior_cloning { enabled: false } buffer { capacity: 1 "
            "fresh_start_probability: ", fresh_start_probability, " ", buffer_options, " } }"))),
        task(MakeTask(job.task(), job.seed()).value()),
        unroller(job, task.get(), &buffer, "t", 3) {
    torch::Generator gen = MakeGenerator(0, 0, 0);
    theta = SmallFcLopt(job.lopt()).InitTheta(gen);
    unroller.RunTruncation(theta, 1.0, 0);
  }
  v1::JobSpec job;
  std::unique_ptr<Task> task;
  InMemoryReplayBuffer buffer;
  EloUnroller unroller;
  torch::Tensor theta;
};

// A push stores exactly one task's rows of the state as it was when the push
// fell due (with truncations of one step: the state before the truncation),
// every tensor under its own name, the rows of one antithetic pair (i, T + i).
TEST(EloBuffer, PushStoresExactlyOneTasksRows) {
  OneStepBufferedUnroller f(/*fresh_start_probability=*/1);
  EloUnroller& u = f.unroller;
  int checked = 0;
  for (int64_t s = 1; s < 60 && checked < 5; ++s) {
    NamedTensors before = u.SaveState();
    for (auto& [k, v] : before) v = v.clone();  // on the CPU SaveState aliases the live state
    TruncationResult r = u.RunTruncation(f.theta, 1.0, s);
    if (r.pushes != 1) continue;
    NamedTensors item = f.buffer.Items("t").value().at(0);
    torch::Tensor steps = Find(before, "step").value();
    int matches = 0;
    for (int64_t i = 0; i < 4; ++i) {
      bool all = Find(item, "step").value().item<int64_t>() == steps[i].item<int64_t>();
      for (const auto& [k, v] : PairRows(before, i, 4)) {
        auto got = Find(item, k);
        ASSERT_TRUE(got.ok()) << k;
        all = all && torch::equal(*got, v);
      }
      matches += all;
    }
    EXPECT_EQ(matches, 1) << "outer step " << s;
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

// A restore writes the sampled item into the restoring task's rows: with BC
// off the teacher's moments are not stepped, so they must read back exactly;
// the parameters move by one small learned-optimizer step; the step counter
// continues from the item's.
TEST(EloBuffer, RestoreWritesTheItemIntoTheTasksRows) {
  OneStepBufferedUnroller f(/*fresh_start_probability=*/0);
  EloUnroller& u = f.unroller;
  // A recognisable state, shaped as a pair's rows.
  NamedTensors crafted;
  for (const auto& [k, v] : PairRows(u.SaveState(), 0, 4)) {
    double fill = k.rfind("params/", 0) == 0 ? 7 : k.rfind("adam_m/", 0) == 0 ? 5
                  : k.rfind("adam_v/", 0) == 0 ? 6 : 3;
    crafted.emplace_back(k, torch::full_like(v, fill));
  }
  crafted.emplace_back("step", torch::tensor(int64_t(10)));
  crafted.emplace_back("xi", torch::zeros({f.theta.numel()}));
  int checked = 0;
  for (int64_t s = 1; s < 60 && checked < 5; ++s) {
    ASSERT_TRUE(f.buffer.Put("t", 1, crafted).ok());
    TruncationResult r = u.RunTruncation(f.theta, 1.0, s);
    if (r.pushes != 0 || r.restores == 0) continue;  // a push would replace the crafted item
    NamedTensors after = u.SaveState();
    for (const UnrollStart& start : r.unroll_starts) {
      ASSERT_TRUE(start.restored);
      EXPECT_EQ(start.start_step, 10);
      EXPECT_EQ(Find(after, "step").value()[start.task].item<int64_t>(), 11);
      for (const auto& [k, v] : PairRows(after, start.task, 4)) {
        if (k.rfind("adam_m/", 0) == 0) EXPECT_TRUE(torch::equal(v, torch::full_like(v, 5))) << k;
        if (k.rfind("adam_v/", 0) == 0) EXPECT_TRUE(torch::equal(v, torch::full_like(v, 6))) << k;
        if (k.rfind("params/", 0) == 0)
          EXPECT_LT((v - 7).abs().max().item<double>(), 0.1) << k;
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 3);
}

// The restored task's PES accumulator after its truncation: the item's xi
// plus this truncation's eps (sigma 0.01) when the buffer restores xi (the
// paper's item), eps alone when restore_pes_accumulator is false.
double RestoredXiMean(bool restore_xi) {
  OneStepBufferedUnroller f(/*fresh_start_probability=*/0,
                            restore_xi ? "" : "restore_pes_accumulator: false");
  EloUnroller& u = f.unroller;
  NamedTensors crafted;
  for (const auto& [k, v] : PairRows(u.SaveState(), 0, 4)) crafted.emplace_back(k, v.clone());
  crafted.emplace_back("step", torch::tensor(int64_t(10)));
  crafted.emplace_back("xi", torch::full({f.theta.numel()}, 0.5));
  for (int64_t s = 1; s < 60; ++s) {
    EXPECT_TRUE(f.buffer.Put("t", 1, crafted).ok());
    TruncationResult r = u.RunTruncation(f.theta, 1.0, s);
    if (r.pushes != 0 || r.restores == 0) continue;
    torch::Tensor xi = Find(u.SaveState(), "xi").value();
    return xi[r.unroll_starts.at(0).task].mean().item<double>();
  }
  ADD_FAILURE() << "no restore without a push in 60 truncations";
  return 0;
}

TEST(EloBuffer, RestoreCarriesTheItemsPesAccumulatorUnlessTurnedOff) {
  EXPECT_NEAR(RestoredXiMean(true), 0.5, 0.01);
  EXPECT_NEAR(RestoredXiMean(false), 0.0, 0.01);
}

TEST(EloUnroller, SaveAndLoadContinueBitIdentically) {
  v1::JobSpec job = QuadraticJob(
      "pes { num_tasks: 4 truncation_length: 3 min_unroll_length: 3 max_unroll_length: 9 }");
  auto task = MakeTask(job.task(), job.seed()).value();
  torch::Generator gen = MakeGenerator(0, 0, 0);
  torch::Tensor theta = SmallFcLopt(job.lopt()).InitTheta(gen);
  InMemoryReplayBuffer buf_a;
  EloUnroller a(job, task.get(), &buf_a, "t", 7);
  for (int s = 0; s < 4; ++s) a.RunTruncation(theta, 0.5, s);
  NamedTensors saved = a.SaveState();
  InMemoryReplayBuffer buf_b;
  std::vector<NamedTensors> items = buf_a.Items("t").value();
  for (auto& item : items) ASSERT_TRUE(buf_b.Put("t", 4, item).ok());
  EloUnroller b(job, task.get(), &buf_b, "t", 7);
  ASSERT_TRUE(b.LoadState(saved).ok());
  for (int s = 4; s < 8; ++s) {
    TruncationResult ra = a.RunTruncation(theta, 0.5, s), rb = b.RunTruncation(theta, 0.5, s);
    EXPECT_TRUE(torch::equal(ra.grad, rb.grad)) << "outer step " << s;
    EXPECT_EQ(ra.meta_loss, rb.meta_loss);
  }
  // A state of the wrong shape is refused with a clear error.
  NamedTensors bad = saved;
  for (auto& [k, v] : bad)
    if (k == "params/0") v = torch::zeros({3, 3});
  EloUnroller c(job, task.get(), &buf_b, "t", 7);
  absl::Status st = c.LoadState(bad);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("params/0"), std::string::npos);
}

}  // namespace
}  // namespace lopt
