#include "common/lhopt/lhopt_policy.h"

#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "common/lhopt/lhopt_actions.h"
#include "common/lhopt/lhopt_features.h"
#include "common/tasks/task.h"

namespace lopt {
namespace {

LhoptPolicyOptions SmallOptions() {
  LhoptPolicyOptions o;
  o.input_size = kNumLhoptFeatures;
  o.hidden_size = 32;
  o.value_extra_size = 5;
  return o;
}

TEST(LhoptPolicy, DefaultShapes) {
  torch::manual_seed(0);
  LhoptPolicy policy(LhoptPolicyOptions{});  // 256 hidden, the paper's size
  const int64_t B = 3;
  auto [out, state] =
      policy->Step(torch::randn({B, kNumLhoptFeatures}), torch::Tensor(), policy->InitialState(B));
  ASSERT_EQ(out.logits.size(), static_cast<size_t>(kNumActionHeads));
  for (int k = 0; k < kNumActionHeads; ++k)
    EXPECT_EQ(out.logits[k].sizes(), torch::IntArrayRef({B, ActionHeadSizes()[k]}));
  EXPECT_EQ(out.value.sizes(), torch::IntArrayRef({B}));
  EXPECT_EQ(state.h.sizes(), torch::IntArrayRef({B, 256}));
  // Near-uniform at initialisation: every head's entropy close to log n.
  double max_entropy = 0;
  for (int64_t n : ActionHeadSizes()) max_entropy += std::log(static_cast<double>(n));
  EXPECT_NEAR(PolicyEntropy(out.logits).mean().item<double>(), max_entropy, 0.05);
}

// Acting one decision at a time gives what the whole-sequence forward gives,
// including an episode that ends mid-sequence in one lane (its state resets).
TEST(LhoptPolicy, SteppingEqualsWholeSequence) {
  torch::manual_seed(1);
  LhoptPolicy policy(SmallOptions());
  const int64_t T = 6, B = 3;
  torch::Tensor x = torch::randn({T, B, kNumLhoptFeatures});
  torch::Tensor extra = torch::randn({T, B, 5});
  torch::Tensor starts = torch::zeros({T, B});
  starts[3][1] = 1;
  // A non-zero initial state, as a segment that continues an episode has.
  PolicyState init{torch::randn({B, 32}) * 0.5, torch::randn({B, 32}) * 0.5};

  PolicyState final_seq;
  PolicyOutput seq = policy->Forward(x, extra, starts, init, &final_seq);
  ASSERT_EQ(seq.value.sizes(), torch::IntArrayRef({T, B}));
  ASSERT_EQ(seq.logits[0].sizes(), torch::IntArrayRef({T, B, 7}));

  PolicyState st = init;
  for (int64_t t = 0; t < T; ++t) {
    if (t == 3) {  // lane 1 starts a new episode
      PolicyState fresh = policy->InitialState(B);
      st.h = st.h.clone();
      st.c = st.c.clone();
      st.h[1] = fresh.h[1];
      st.c[1] = fresh.c[1];
    }
    auto [out, next] = policy->Step(x[t], extra[t], st);
    st = next;
    for (int k = 0; k < kNumActionHeads; ++k)
      EXPECT_TRUE(torch::allclose(out.logits[k], seq.logits[k][t], 1e-5, 1e-6)) << t << " " << k;
    EXPECT_TRUE(torch::allclose(out.value, seq.value[t], 1e-5, 1e-6)) << t;
  }
  EXPECT_TRUE(torch::allclose(st.h, final_seq.h, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(st.c, final_seq.c, 1e-5, 1e-6));

  // The reset matters: without it lane 1 differs from step 3 on.
  PolicyOutput no_reset = policy->Forward(x, extra, torch::Tensor(), init);
  EXPECT_FALSE(torch::allclose(no_reset.value[4][1], seq.value[4][1]));
  EXPECT_TRUE(torch::allclose(no_reset.value[4][0], seq.value[4][0]));
}

// The value head sees the extra inputs; the policy heads do not.
TEST(LhoptPolicy, ValueHeadTakesExtraInputs) {
  torch::manual_seed(2);
  LhoptPolicy policy(SmallOptions());
  torch::Tensor x = torch::randn({2, kNumLhoptFeatures});
  auto a = policy->Step(x, torch::zeros({2, 5}), policy->InitialState(2)).first;
  auto b = policy->Step(x, torch::ones({2, 5}) * 3, policy->InitialState(2)).first;
  EXPECT_FALSE(torch::allclose(a.value, b.value));
  EXPECT_TRUE(torch::equal(a.logits[0], b.logits[0]));
}

// The layer-normed cell against the formula in lhopt_policy.h, from its own
// weights (gains 1, biases 0 and forget bias 1 at initialisation).
TEST(LhoptPolicy, LayerNormLstmCellFollowsItsFormula) {
  torch::manual_seed(3);
  LayerNormLstmCell cell(4, 3);
  torch::Tensor x = torch::randn({2, 4}), h = torch::randn({2, 3}), c = torch::randn({2, 3});
  auto [h1, c1] = cell(x, h, c);
  auto params = cell->named_parameters();
  torch::Tensor wx = params["w_x.weight"], wh = params["w_h.weight"];
  auto ln = [](const torch::Tensor& z) {
    torch::Tensor mu = z.mean(-1, true);
    torch::Tensor var = (z - mu).pow(2).mean(-1, true);
    return (z - mu) / torch::sqrt(var + 1e-5);
  };
  torch::Tensor zx = torch::matmul(x, wx.t()).view({2, 4, 3});
  torch::Tensor zh = torch::matmul(h, wh.t()).view({2, 4, 3});
  torch::Tensor gates = ln(zx) + ln(zh);
  gates.select(1, 1).add_(1.0);
  torch::Tensor c_ref = torch::sigmoid(gates.select(1, 1)) * c +
                        torch::sigmoid(gates.select(1, 0)) * torch::tanh(gates.select(1, 2));
  torch::Tensor h_ref = torch::sigmoid(gates.select(1, 3)) * torch::tanh(ln(c_ref));
  EXPECT_TRUE(torch::allclose(c1, c_ref, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(h1, h_ref, 1e-5, 1e-6));
}

TEST(LhoptPolicy, LogProbAndSampling) {
  std::vector<torch::Tensor> logits = {torch::log(torch::tensor({{0.2, 0.8}, {0.5, 0.5}})),
                                       torch::log(torch::tensor({{0.1, 0.6, 0.3}, {1.0, 0.0, 0.0}}))};
  torch::Tensor a = torch::tensor({{1, 2}, {0, 0}}, torch::kInt64);
  torch::Tensor lp = ActionLogProb(logits, a);
  EXPECT_NEAR(lp[0].item<double>(), std::log(0.8 * 0.3), 1e-6);
  EXPECT_NEAR(lp[1].item<double>(), std::log(0.5), 1e-6);
  torch::Generator gen = MakeGenerator(4, 0, 0);
  torch::Tensor counts = torch::zeros({2});
  for (int i = 0; i < 2000; ++i) {
    torch::Tensor s = SampleActions(logits, gen);
    ASSERT_EQ(s.sizes(), torch::IntArrayRef({2, 2}));
    EXPECT_EQ(s[1][1].item<int64_t>(), 0);  // probability 1
    counts[s[0][0].item<int64_t>()] += 1;
  }
  EXPECT_NEAR(counts[1].item<double>() / 2000, 0.8, 0.03);
  EXPECT_EQ(GreedyActions(logits)[0][1].item<int64_t>(), 1);
}

TEST(LhoptPolicy, PolyakAveragesWeights) {
  torch::manual_seed(5);
  LhoptPolicy ema(SmallOptions()), online(SmallOptions());
  std::vector<torch::Tensor> before;
  for (const auto& p : ema->parameters()) before.push_back(p.detach().clone());
  PolyakUpdate(*ema, *online, 0.99);
  auto e = ema->parameters(), o = online->parameters();
  ASSERT_EQ(e.size(), o.size());
  for (size_t i = 0; i < e.size(); ++i)
    EXPECT_TRUE(torch::allclose(e[i], 0.99 * before[i] + 0.01 * o[i], 1e-6, 1e-7)) << i;
}

}  // namespace
}  // namespace lopt
