#include "common/lhopt/lhopt_actions.h"

#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "common/tasks/task.h"

namespace lopt {
namespace {

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double Logit(double p) { return std::log(p / (1 - p)); }

const torch::Tensor& Field(const CiaoHparamTensors& h, int head) {
  switch (head) {
    case kHeadLr: return h.lr;
    case kHeadWeightDecay: return h.weight_decay;
    case kHeadEps: return h.eps;
    case kHeadOneMinusBeta2: return h.one_minus_beta2;
    case kHeadOneMinusBeta1: return h.one_minus_beta1;
    default: return h.clip_fraction;
  }
}

TEST(LhoptActions, HeadsMatchThePaper) {
  EXPECT_EQ(ActionHeadSizes(), (std::vector<int64_t>{7, 3, 3, 3, 3, 5, 10}));
  EXPECT_EQ(TotalActionChoices(), 34);
  for (const auto& h : ActionHeads()) {
    if (h.name == "registers") continue;
    const double keep = h.name == "clip_fraction" ? 0.0 : 1.0;
    EXPECT_EQ(h.choices[h.keep_choice], keep) << h.name;
  }
}

// Every choice of every head changes its own hyperparameter by its factor
// (or logit shift) and nothing else.
TEST(LhoptActions, EachChoiceScalesOnlyItsHyperparameter) {
  CiaoHyperparameters base;
  base.lr = 1e-3;
  base.one_minus_beta2 = 1e-2;
  for (int head = 0; head < kNumHparamHeads; ++head) {
    const ActionHead& spec = ActionHeads()[head];
    for (int64_t c = 0; c < spec.num_choices; ++c) {
      CiaoHparamTensors h = CiaoHparamTensors::Fill(1, base);
      torch::Tensor a = KeepActions(1);
      a[0][head] = c;
      CiaoHparamTensors out = ApplyActions(h, a);
      for (int other = 0; other < kNumHparamHeads; ++other) {
        double before = Field(h, other).item<double>(), after = Field(out, other).item<double>();
        if (other != head) {
          EXPECT_DOUBLE_EQ(after, before) << spec.name << " choice " << c << " moved " << other;
        } else if (head == kHeadClipFraction) {
          EXPECT_NEAR(after, Sigmoid(Logit(before) + spec.choices[c]), 1e-12);
        } else {
          EXPECT_NEAR(after, before * spec.choices[c], 1e-15) << spec.name << " " << c;
        }
      }
    }
  }
}

TEST(LhoptActions, BoundsHold) {
  CiaoHparamTensors h = CiaoHparamTensors::Fill(2, {});
  h.lr = torch::tensor({0.9, 1.5e-8}, torch::kFloat64);
  h.one_minus_beta2 = torch::tensor({0.08, 1.5e-5}, torch::kFloat64);
  h.one_minus_beta1 = torch::tensor({0.9, 1.5e-5}, torch::kFloat64);
  h.weight_decay = torch::tensor({0.9, 1.5e-8}, torch::kFloat64);
  h.eps = torch::tensor({0.9, 1.5e-8}, torch::kFloat64);
  h.clip_fraction = torch::tensor({1 - 2e-6, 2e-6}, torch::kFloat64);
  // Particle 0 pushes every head up, particle 1 down, three times over.
  torch::Tensor a = torch::tensor({{6, 2, 2, 2, 2, 4, 0}, {0, 0, 0, 0, 0, 0, 0}}, torch::kInt64);
  for (int i = 0; i < 3; ++i) h = ApplyActions(h, a);
  EXPECT_DOUBLE_EQ(h.lr[0].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(h.lr[1].item<double>(), 1e-8);
  EXPECT_DOUBLE_EQ(h.one_minus_beta2[0].item<double>(), 0.1);
  EXPECT_DOUBLE_EQ(h.one_minus_beta2[1].item<double>(), 1e-5);
  EXPECT_DOUBLE_EQ(h.one_minus_beta1[0].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(h.one_minus_beta1[1].item<double>(), 1e-5);
  EXPECT_DOUBLE_EQ(h.weight_decay[0].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(h.eps[1].item<double>(), 1e-8);
  EXPECT_DOUBLE_EQ(h.clip_fraction[0].item<double>(), 1 - 1e-6);
  EXPECT_DOUBLE_EQ(h.clip_fraction[1].item<double>(), 1e-6);
  EXPECT_THROW(ApplyActions(h, torch::tensor({{7, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}})),
               c10::Error);
}

TEST(LhoptActions, RandomInitialHparamsSpanTheirRangesDeterministically) {
  const int64_t n = 4000;
  torch::Generator g1 = MakeGenerator(1, 2, 3), g2 = MakeGenerator(1, 2, 3),
                   g3 = MakeGenerator(1, 2, 4);
  CiaoHparamTensors a = RandomInitialHparams(n, g1), b = RandomInitialHparams(n, g2),
                    c = RandomInitialHparams(n, g3);
  EXPECT_TRUE(torch::equal(a.lr, b.lr));
  EXPECT_TRUE(torch::equal(a.clip_fraction, b.clip_fraction));
  EXPECT_FALSE(torch::equal(a.lr, c.lr));
  CiaoHyperparameters d;
  torch::Tensor log_lr = torch::log(a.lr / d.lr);
  EXPECT_GE(log_lr.min().item<double>(), std::log(1e-2) - 1e-9);
  EXPECT_LE(log_lr.max().item<double>(), std::log(1e2) + 1e-9);
  EXPECT_LT(log_lr.min().item<double>(), std::log(1e-2) + 0.05);  // spans the range
  EXPECT_GT(log_lr.max().item<double>(), std::log(1e2) - 0.05);
  EXPECT_NEAR(log_lr.mean().item<double>(), 0, 0.15);  // log-uniform: centred
  torch::Tensor log_wd = torch::log(a.weight_decay / d.weight_decay);
  EXPECT_GE(log_wd.min().item<double>(), std::log(0.1) - 1e-9);
  EXPECT_LE(log_wd.max().item<double>(), std::log(10.0) + 1e-9);
  EXPECT_GT(log_wd.max().item<double>(), std::log(10.0) - 0.05);
  EXPECT_LE(a.one_minus_beta2.max().item<double>(), 0.1);
  // From 1 - beta2 = 0.05, x [0.1, 10] runs into the upper bound 0.1 for
  // factors >= 2: log(10 / 2) / log(100), about 35% of the draws.
  CiaoHyperparameters high;
  high.one_minus_beta2 = 0.05;
  torch::Generator g4 = MakeGenerator(1, 2, 5);
  torch::Tensor omb2 = RandomInitialHparams(n, g4, high).one_minus_beta2;
  EXPECT_DOUBLE_EQ(omb2.max().item<double>(), 0.1);
  EXPECT_NEAR((omb2 == 0.1).to(torch::kFloat64).mean().item<double>(),
              1 - (std::log(2.0) + std::log(10.0)) / std::log(100.0), 0.03);
  torch::Tensor shift = torch::log(a.clip_fraction / (1 - a.clip_fraction)) - Logit(0.8);
  EXPECT_GE(shift.min().item<double>(), -1 - 1e-9);
  EXPECT_LE(shift.max().item<double>(), 1 + 1e-9);
}

TEST(LhoptActions, RegisterEncodingRoundTrips) {
  for (int64_t c = 0; c < ActionHeads()[kHeadRegisters].num_choices; ++c)
    EXPECT_EQ(EncodeRegisterAction(DecodeRegisterAction(c)), c);
  EXPECT_EQ(DecodeRegisterAction(0).op, RegisterOp::kNone);
  RegisterAction a = DecodeRegisterAction(1 + 3 * 2 + 1);
  EXPECT_EQ(a.op, RegisterOp::kLoad);
  EXPECT_EQ(a.reg, 2);
}

TEST(LhoptActions, SaveThenLoadReturnsTheSavedId) {
  RestartRegisters regs;
  RegisterCommand load_empty = regs.Apply({RegisterOp::kLoad, 0}, 1, 3.0, 0.2);
  EXPECT_FALSE(load_empty.applied);
  EXPECT_FALSE(load_empty.load_id.has_value());

  RegisterCommand save = regs.Apply({RegisterOp::kSave, 0}, 11, 3.0, 0.2);
  EXPECT_TRUE(save.applied);
  EXPECT_EQ(save.store_id, 11);
  EXPECT_FALSE(save.release_id.has_value());
  EXPECT_TRUE(regs.entry(0).filled);
  EXPECT_EQ(regs.entry(0).state_id, 11);

  RegisterCommand load = regs.Apply({RegisterOp::kLoad, 0}, 12, 9.0, 0.6);
  EXPECT_EQ(load.load_id, 11);
  EXPECT_FALSE(load.store_id.has_value());
  EXPECT_DOUBLE_EQ(load.loaded_loss, 3.0);
  EXPECT_DOUBLE_EQ(load.loaded_progress, 0.2);
  EXPECT_EQ(regs.entry(0).state_id, 11);  // still there: loadable again
  EXPECT_EQ(regs.Apply({RegisterOp::kLoad, 0}, 13, 9.0, 0.7).load_id, 11);

  // Saving over register 0 releases 11; saving the same id in two
  // registers releases nothing until neither holds it.
  EXPECT_EQ(regs.Apply({RegisterOp::kSave, 0}, 14, 2.0, 0.8).release_id, 11);
  regs.Apply({RegisterOp::kSave, 1}, 14, 2.0, 0.8);
  EXPECT_FALSE(regs.Apply({RegisterOp::kSave, 0}, 15, 1.0, 0.9).release_id.has_value());
  EXPECT_EQ(regs.Apply({RegisterOp::kSave, 1}, 16, 1.0, 0.9).release_id, 14);
  EXPECT_EQ(regs.LiveStateIds(), (std::vector<int64_t>{15, 16}));
}

TEST(LhoptActions, SwapExchangesCurrentAndRegister) {
  RestartRegisters regs;
  // Swap on an empty register stores the current state: a save.
  RegisterCommand first = regs.Apply({RegisterOp::kSwap, 2}, 21, 5.0, 0.3);
  EXPECT_TRUE(first.applied);
  EXPECT_EQ(first.store_id, 21);
  EXPECT_FALSE(first.load_id.has_value());
  // Swap again: the current state (stored as 22) goes in, 21 comes out,
  // and 21 is released after the load since no register holds it.
  RegisterCommand swap = regs.Apply({RegisterOp::kSwap, 2}, 22, 4.0, 0.5);
  EXPECT_EQ(swap.store_id, 22);
  EXPECT_EQ(swap.load_id, 21);
  EXPECT_EQ(swap.release_id, 21);
  EXPECT_DOUBLE_EQ(swap.loaded_loss, 5.0);
  EXPECT_DOUBLE_EQ(swap.loaded_progress, 0.3);
  EXPECT_EQ(regs.entry(2).state_id, 22);
  EXPECT_DOUBLE_EQ(regs.entry(2).loss, 4.0);
  EXPECT_DOUBLE_EQ(regs.entry(2).progress, 0.5);
  EXPECT_FALSE(regs.entry(0).filled);
  EXPECT_FALSE(regs.Apply({RegisterOp::kNone, -1}, 23, 1.0, 0.6).applied);
}

}  // namespace
}  // namespace lopt
