#include "learner/ppo.h"

#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "common/lhopt/lhopt_actions.h"
#include "common/tasks/task.h"

namespace lopt {
namespace {

// Lane 0, gamma 1, lambda 0.95, an episode ending after step 1:
//   t=2: delta = 3 + 2.0 - 1.5 = 3.5                 A = 3.5
//   t=1: done, delta = 2 - 1.0 = 1.0                 A = 1.0 (nothing flows back)
//   t=0: delta = 1 + 1.0 - 0.5 = 1.5                 A = 1.5 + 0.95 * 1.0 = 2.45
// Lane 1, no boundary, a single reward at the end:
//   A = (0.9025, 0.95, 1)
TEST(LhoptPpo, GaeByHandWithAnEpisodeBoundary) {
  torch::Tensor rewards = torch::tensor({{1.0, 0.0}, {2.0, 0.0}, {3.0, 1.0}});
  torch::Tensor values = torch::tensor({{0.5, 0.0}, {1.0, 0.0}, {1.5, 0.0}});
  torch::Tensor dones = torch::tensor({{0.0, 0.0}, {1.0, 0.0}, {0.0, 0.0}});
  torch::Tensor boot = torch::tensor({2.0, 0.0});
  GaeResult g = ComputeGae(rewards, values, dones, boot, 1.0, 0.95);
  torch::Tensor adv = torch::tensor({{2.45, 0.9025}, {1.0, 0.95}, {3.5, 1.0}});
  EXPECT_TRUE(torch::allclose(g.advantages, adv, 1e-6, 1e-6)) << g.advantages;
  EXPECT_TRUE(torch::allclose(g.returns, adv + values, 1e-6, 1e-6));
  // Done at the last step: the bootstrap value is ignored.
  dones[2][0] = 1;
  g = ComputeGae(rewards, values, dones, boot, 1.0, 0.95);
  EXPECT_NEAR(g.advantages[2][0].item<double>(), 1.5, 1e-6);
}

// d loss / d log pi for one sample with old log pi = 0 (ratio = exp(logp)).
double ClipLossGrad(double ratio, double advantage) {
  torch::Tensor logp = torch::tensor({std::log(ratio)}).requires_grad_(true);
  torch::Tensor loss = PpoClipLoss(logp, torch::zeros({1}), torch::tensor({advantage}), 0.2);
  loss.backward();
  return logp.grad().item<double>();
}

TEST(LhoptPpo, ClippedSurrogateGradient) {
  // Inside the trust region the gradient pushes log pi up for A > 0 and
  // down for A < 0: d/dlogp (-rho A) = -rho A.
  EXPECT_NEAR(ClipLossGrad(1.0, 1.0), -1.0, 1e-6);
  EXPECT_NEAR(ClipLossGrad(1.0, -2.0), 2.0, 1e-6);
  EXPECT_NEAR(ClipLossGrad(1.1, 1.0), -1.1, 1e-6);
  // Beyond 1 + eps with A > 0, or below 1 - eps with A < 0: clipped, no gradient.
  EXPECT_EQ(ClipLossGrad(1.5, 1.0), 0.0);
  EXPECT_EQ(ClipLossGrad(0.5, -1.0), 0.0);
  // On the other side the min keeps the unclipped term: the gradient stays.
  EXPECT_NEAR(ClipLossGrad(0.5, 1.0), -0.5, 1e-6);
  EXPECT_NEAR(ClipLossGrad(1.5, -1.0), 1.5, 1e-6);
}

PpoSegment MakeSegment(int64_t T, int64_t version, int64_t hidden) {
  PpoSegment s;
  s.features = torch::randn({T, 70});
  s.actions = KeepActions(T);
  s.log_probs = torch::zeros({T});
  s.values = torch::zeros({T});
  s.rewards = torch::zeros({T});
  s.dones = torch::zeros({T});
  s.bootstrap_value = torch::zeros({});
  s.initial_state = {torch::zeros({hidden}), torch::zeros({hidden})};
  s.policy_version = version;
  return s;
}

TEST(LhoptPpo, StalenessFilter) {
  std::vector<PpoSegment> segs;
  for (int64_t v : {10, 9, 6, 5, 2, 11}) segs.push_back(MakeSegment(2, v, 8));
  int64_t dropped = 0;
  auto kept = DropStaleSegments(segs, 10, 4, &dropped);
  ASSERT_EQ(kept.size(), 3u);  // 10, 9, 6: 5 and 2 too old, 11 from the future
  EXPECT_EQ(dropped, 3);
  EXPECT_EQ(kept[2].policy_version, 6);
}

// A bandit in PPO's clothes: choice 6 of the lr head earns reward 1, all
// else 0. Acting, then updating, raises that choice's probability; the
// update reports finite losses, a positive KL and the stale drop count.
TEST(LhoptPpo, UpdateLearnsABandit) {
  torch::manual_seed(11);
  LhoptPolicyOptions po;
  po.hidden_size = 32;
  LhoptPolicy policy(po);
  PpoOptions opt;
  opt.lr = 3e-3;  // the machinery, not the paper's tuning, is under test
  opt.minibatch_segments = 8;
  PpoTrainer trainer(policy, opt);
  torch::Generator gen = MakeGenerator(5, 0, 0);
  const int64_t T = 4, B = 16;
  torch::Tensor x = torch::randn({T, B, 70});
  auto prob_of_6 = [&]() {
    torch::NoGradGuard ng;
    PolicyOutput out = policy->Forward(x, torch::Tensor(), torch::Tensor(), policy->InitialState(B));
    return torch::softmax(out.logits[kHeadLr], -1).select(-1, 6).mean().item<double>();
  };
  const double p0 = prob_of_6();
  EXPECT_NEAR(p0, 1.0 / 7, 0.02);
  PpoStats last;
  for (int64_t version = 0; version < 15; ++version) {
    std::vector<PpoSegment> segs;
    torch::Tensor actions, logp, values;
    {
      torch::NoGradGuard ng;
      PolicyOutput out =
          policy->Forward(x, torch::Tensor(), torch::Tensor(), policy->InitialState(B));
      actions = SampleActions(out.logits, gen);  // [T, B, H]
      logp = ActionLogProb(out.logits, actions);
      values = out.value;
    }
    for (int64_t b = 0; b < B; ++b) {
      PpoSegment s = MakeSegment(T, version, 32);
      s.features = x.select(1, b);
      s.actions = actions.select(1, b);
      s.log_probs = logp.select(1, b);
      s.values = values.select(1, b);
      s.rewards = (s.actions.select(1, kHeadLr) == 6).to(torch::kFloat32);
      s.dones = torch::tensor({0.0f, 1.0f, 0.0f, 1.0f});  // two episodes a lane
      segs.push_back(s);
    }
    segs.push_back(MakeSegment(T, version - 5, 32));  // stale: dropped
    last = trainer.Update(segs, version);
    EXPECT_EQ(last.segments_used, B);
    EXPECT_EQ(last.segments_dropped_stale, 1);
    EXPECT_EQ(last.gradient_steps, 4 * 2);  // 4 epochs x 2 minibatches
    EXPECT_TRUE(std::isfinite(last.policy_loss) && std::isfinite(last.value_loss));
    EXPECT_GE(last.approx_kl, 0);
  }
  EXPECT_GT(last.approx_kl, 0);
  EXPECT_GT(last.entropy, 0);
  EXPECT_GT(prob_of_6(), 2 * p0);
}

TEST(LhoptPpo, SampleReuseIsCapped) {
  torch::manual_seed(12);
  LhoptPolicyOptions po;
  po.hidden_size = 16;
  PpoOptions opt;
  opt.epochs = 10;  // asks for more than max_sample_reuse = 4
  opt.minibatch_segments = 2;
  PpoTrainer trainer(LhoptPolicy(po), opt);
  std::vector<PpoSegment> segs;
  for (int i = 0; i < 4; ++i) segs.push_back(MakeSegment(3, 0, 16));
  EXPECT_EQ(trainer.Update(segs, 0).gradient_steps, 4 * 2);
}

}  // namespace
}  // namespace lopt
