// The fmnist_resnet family: its particle batch must compute, for every
// particle, what a plain one-particle ResNet written with torch ops computes,
// and Adam on it must learn.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/tasks/adam.h"
#include "common/tasks/task.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

v1::TaskSpec Spec(const std::string& text) {
  auto job = JobFromText(text, "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return job->task();
}

// Group norm written out: statistics over each sample's group of channels
// and all their pixels, then a per-channel scale and shift.
torch::Tensor GroupNorm(const torch::Tensor& y, int64_t groups, const torch::Tensor& scale,
                        const torch::Tensor& shift) {
  const int64_t B = y.size(0), C = y.size(1);
  torch::Tensor g = y.reshape({B, groups, -1});
  torch::Tensor mean = g.mean(-1, /*keepdim=*/true);
  torch::Tensor var = (g - mean).square().mean(-1, /*keepdim=*/true);
  torch::Tensor n = ((g - mean) / (var + 1e-5).sqrt()).view(y.sizes());
  return n * scale.view({1, C, 1, 1}) + shift.view({1, C, 1, 1});
}

// One particle's ResNet with plain (ungrouped) convolutions: w holds its
// tensors in the task's order; x is [B, S*S].
torch::Tensor PlainResnetLogits(const std::vector<torch::Tensor>& w, const torch::Tensor& x,
                                int64_t S, const std::map<int64_t, int64_t>& groups,
                                const std::function<torch::Tensor(torch::Tensor)>& act) {
  size_t k = 0;
  auto conv_norm = [&](const torch::Tensor& in, int64_t stride) {
    const torch::Tensor& cw = w[k];
    torch::Tensor y = torch::conv2d(in, cw, {}, stride, cw.size(2) / 2);
    y = GroupNorm(y, groups.at(cw.size(0)), w[k + 1], w[k + 2]);
    k += 3;
    return y;
  };
  torch::Tensor h = act(conv_norm(x.view({-1, 1, S, S}), 1));
  for (int s = 0; k + 2 < w.size(); ++s) {
    torch::Tensor main = conv_norm(act(conv_norm(h, s == 0 ? 1 : 2)), 1);
    torch::Tensor shortcut = s == 0 ? h : conv_norm(h, 2);
    h = act(main + shortcut);
  }
  return torch::addmm(w.back(), h.mean({2, 3}), w[w.size() - 2]);
}

class ResnetTaskGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(ResnetTaskGradients, EqualAutogradOfAPlainModel) {
  const std::string act = GetParam();
  // 12 channels make 4 groups of 3, 16 make 8 groups of 2.
  auto task = MakeTask(Spec("task { fmnist_resnet { image_size: 8 channels: 12 channels: 16 "
                            "batch_size: 6 activation: " + act + " } }"), 0).value();
  EXPECT_EQ(task->name(), "fmnist_resnet_8");
  const std::vector<std::vector<int64_t>> shapes = {
      {12, 1, 3, 3}, {12}, {12},                                 // stem
      {12, 12, 3, 3}, {12}, {12}, {12, 12, 3, 3}, {12}, {12},    // stage 1
      {16, 12, 3, 3}, {16}, {16}, {16, 16, 3, 3}, {16}, {16},    // stage 2
      {16, 12, 1, 1}, {16}, {16},                                // its shortcut
      {16, 10}, {10}};                                           // head
  ASSERT_EQ(task->param_shapes(), shapes);
  torch::Generator gen = MakeGenerator(11, 0, 0);
  TaskState st = task->Init(3, 1, gen);
  ASSERT_EQ(st.params[0].sizes(), (std::vector<int64_t>{3, 12, 1, 3, 3}));
  EXPECT_TRUE(torch::equal(st.params[1], torch::ones({3, 12})));  // norm scale
  EXPECT_TRUE(torch::equal(st.params[2], torch::zeros({3, 12})));  // norm shift
  // Scales and shifts that differ by particle and by channel.
  for (auto& p : st.params) p.add_(0.2 * torch::randn(p.sizes(), gen));
  Batch b = task->SampleBatch(3, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(st, b, &grads);
  ASSERT_EQ(loss.sizes(), (std::vector<int64_t>{3}));
  ASSERT_EQ(grads.size(), shapes.size());
  auto f = [&](torch::Tensor t) {
    return act == "RELU" ? torch::relu(t) : act == "TANH" ? torch::tanh(t) : torch::gelu(t);
  };
  for (int64_t p = 0; p < 3; ++p) {
    std::vector<torch::Tensor> w;
    for (auto& t : st.params) w.push_back(t[p].clone().requires_grad_(true));
    torch::Tensor l = torch::nn::functional::cross_entropy(
        PlainResnetLogits(w, b.x[p], 8, {{12, 4}, {16, 8}}, f), b.y[p]);
    l.backward();
    EXPECT_NEAR(loss[p].item<double>(), l.item<double>(), 1e-5);
    for (size_t j = 0; j < w.size(); ++j) {
      EXPECT_GT(w[j].grad().abs().max().item<double>(), 0) << "tensor " << j;
      EXPECT_TRUE(torch::allclose(grads[j][p], w[j].grad(), 1e-3, 1e-5))
          << "tensor " << j << " particle " << p << " max diff "
          << (grads[j][p] - w[j].grad()).abs().max().item<double>();
    }
  }
  EXPECT_NEAR(task->MaxMetaLoss(), 1.5 * std::log(10.0), 1e-9);
}
INSTANTIATE_TEST_SUITE_P(Activations, ResnetTaskGradients, ::testing::Values("RELU", "TANH", "GELU"));

TEST(ResnetTask, ParticleBatchEqualsEachParticleAlone) {
  auto task = MakeTask(Spec("task { fmnist_resnet { image_size: 8 channels: 4 channels: 8 "
                            "channels: 8 batch_size: 5 } }"), 0).value();
  torch::Generator gen = MakeGenerator(12, 0, 0);
  TaskState st = task->Init(3, 1, gen);
  for (auto& p : st.params) p.add_(0.2 * torch::randn(p.sizes(), gen));
  Batch b = task->SampleBatch(3, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(st, b, &grads);
  EvalResult ev = task->Evaluate(st);
  for (int64_t p = 0; p < 3; ++p) {
    TaskState one;
    for (auto& t : st.params) one.params.push_back(t.narrow(0, p, 1).clone());
    Batch bp{b.x.narrow(0, p, 1), b.y.narrow(0, p, 1)};
    std::vector<torch::Tensor> g1;
    torch::Tensor l1 = task->LossAndGrad(one, bp, &g1);
    EXPECT_NEAR(loss[p].item<double>(), l1[0].item<double>(), 1e-5);
    for (size_t j = 0; j < g1.size(); ++j)
      EXPECT_TRUE(torch::allclose(grads[j][p], g1[j][0], 1e-4, 1e-6)) << "tensor " << j;
    EvalResult e1 = task->Evaluate(one);
    EXPECT_NEAR(ev.loss[p].item<double>(), e1.loss[0].item<double>(), 1e-4);
    EXPECT_NEAR(ev.accuracy[p].item<double>(), e1.accuracy[0].item<double>(), 1e-4);
  }
  // The particles do differ: a batch that mixed them would hide that.
  EXPECT_GT((loss.max() - loss.min()).item<double>(), 1e-3);
  // Replicas share their group's batch: Init(1, 3) and one group of data.
  torch::Generator g2 = MakeGenerator(13, 0, 0);
  TaskState rep = task->Init(1, 3, g2);
  for (size_t j = 0; j < rep.params.size(); ++j)
    EXPECT_TRUE(torch::equal(rep.params[j][0], rep.params[j][2]));
  torch::Tensor lr = task->LossAndGrad(rep, task->SampleBatch(1, g2), nullptr);
  EXPECT_NEAR(lr[0].item<double>(), lr[2].item<double>(), 1e-6);
}

TEST(ResnetTask, AdamReducesTheLoss) {
  auto task = MakeTask(Spec("task { fmnist_resnet { image_size: 8 channels: 8 channels: 16 "
                            "batch_size: 32 } }"), 0).value();
  torch::Generator gen = MakeGenerator(14, 0, 0);
  TaskState st = task->Init(2, 1, gen);
  AdamState adam = InitAdamState(st.params);
  const torch::Tensor lr = torch::full({2}, 1e-2);
  std::vector<torch::Tensor> grads;
  double first = 0, last = 0;
  const int kSteps = 60;
  for (int step = 0; step < kSteps; ++step) {
    torch::Tensor loss = task->LossAndGrad(st, task->SampleBatch(2, gen), &grads);
    if (step < 5) first += loss.mean().item<double>() / 5;
    if (step >= kSteps - 5) last += loss.mean().item<double>() / 5;
    auto u = AdamUpdates(st.params, grads, &adam, lr, torch::full({2}, double(step)), {});
    for (size_t j = 0; j < u.size(); ++j) st.params[j].sub_(u[j]);
  }
  EXPECT_GT(first, 1.8);  // about ln 10 at the start
  EXPECT_LT(last, 0.65 * first) << "first " << first << " last " << last;
  EvalResult ev = task->Evaluate(st);
  // Measured: 2.31 -> 1.20, 54% test accuracy; the CNN of the same widths
  // reaches 1.58 and 37%.
  EXPECT_GT(ev.accuracy.min().item<double>(), 0.45);
}

}  // namespace
}  // namespace lopt
