// Particle batching must compute, for every particle, exactly what a
// separate LibTorch model would.
#include "common/tasks/task.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/tasks/idx_dataset.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

const char kData[] = "/usr/share/datasets/fashion-mnist";

v1::TaskSpec Spec(const std::string& text) {
  auto job = JobFromText(text, "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return job->task();
}

TEST(IdxDataset, ReadsFashionMnistAndResizes) {
  auto ds = LoadImageDataset(kData, 8);
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ((*ds)->train_x.sizes(), (std::vector<int64_t>{60000, 64}));
  EXPECT_EQ((*ds)->test_x.sizes(), (std::vector<int64_t>{10000, 64}));
  EXPECT_EQ((*ds)->num_classes, 10);
  EXPECT_GE((*ds)->train_x.min().item<float>(), 0.f);
  EXPECT_LE((*ds)->train_x.max().item<float>(), 1.f);
  EXPECT_GT((*ds)->train_x.mean().item<float>(), 0.1f);  // real images, not zeros
  auto full = LoadImageDataset(kData, 28);
  ASSERT_TRUE(full.ok());
  // The 8x8 image is the area average of the 28x28 one.
  torch::Tensor img = (*full)->train_x[0].view({1, 1, 28, 28});
  EXPECT_TRUE(torch::allclose(torch::adaptive_avg_pool2d(img, {8, 8}).flatten(),
                              (*ds)->train_x[0]));
}

TEST(IdxDataset, MissingOrCorruptDataIsAClearError) {
  auto ds = LoadImageDataset("/nonexistent", 8);
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(ds.status().message()).find("dataset-fashion-mnist"), std::string::npos);
  std::string dir = ::testing::TempDir() + "/bad_idx";
  std::system(("mkdir -p " + dir + " && head -c 100 /dev/urandom > " + dir +
               "/train-images-idx3-ubyte").c_str());
  ds = LoadImageDataset(dir, 8);
  EXPECT_EQ(ds.status().code(), absl::StatusCode::kDataLoss);
}

class FmnistMlpGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(FmnistMlpGradients, BatchedGradientsEqualSeparateModels) {
  const std::string act = GetParam();
  auto task = MakeTask(Spec("task { fmnist_mlp { image_size: 8 hidden_sizes: 16 activation: " + act + " batch_size: 32 } }"), 0).value();
  torch::Generator gen = MakeGenerator(1, 0, 0);
  TaskState st = task->Init(3, 2, gen);  // 6 particles; pairs share their start
  ASSERT_EQ(st.num_particles(), 6);
  EXPECT_TRUE(torch::equal(st.params[0][1], st.params[0][4]));
  EXPECT_FALSE(torch::equal(st.params[0][1], st.params[0][2]));
  for (auto& p : st.params) p.add_(0.01 * torch::randn(p.sizes(), gen));  // make pairs differ
  Batch b = task->SampleBatch(3, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(st, b, &grads);
  ASSERT_EQ(loss.sizes(), (std::vector<int64_t>{6}));
  for (int64_t p = 0; p < 6; ++p) {
    int64_t g = p % 3;  // particle r * G + g sees group g's data
    torch::Tensor w1 = st.params[0][p].clone().requires_grad_(true);
    torch::Tensor b1 = st.params[1][p].clone().requires_grad_(true);
    torch::Tensor w2 = st.params[2][p].clone().requires_grad_(true);
    torch::Tensor b2 = st.params[3][p].clone().requires_grad_(true);
    torch::Tensor pre = torch::addmm(b1, b.x[g], w1);
    torch::Tensor h = act == "TANH" ? torch::tanh(pre)
                    : act == "RELU" ? torch::relu(pre)
                    : act == "SIGMOID" ? torch::sigmoid(pre) : torch::gelu(pre);
    torch::Tensor l = torch::nn::functional::cross_entropy(torch::addmm(b2, h, w2), b.y[g]);
    l.backward();
    EXPECT_NEAR(loss[p].item<double>(), l.item<double>(), 1e-5);
    EXPECT_TRUE(torch::allclose(grads[0][p], w1.grad(), 1e-4, 1e-6));
    EXPECT_TRUE(torch::allclose(grads[1][p], b1.grad(), 1e-4, 1e-6));
    EXPECT_TRUE(torch::allclose(grads[2][p], w2.grad(), 1e-4, 1e-6));
    EXPECT_TRUE(torch::allclose(grads[3][p], b2.grad(), 1e-4, 1e-6));
  }
  EvalResult ev = task->Evaluate(st);
  EXPECT_GT(ev.loss.min().item<double>(), 1.5);  // untrained: about ln 10
  EXPECT_LT(ev.accuracy.max().item<double>(), 0.5);
  EXPECT_NEAR(task->MaxMetaLoss(), 1.5 * std::log(10.0), 1e-9);
}
INSTANTIATE_TEST_SUITE_P(Activations, FmnistMlpGradients,
                         ::testing::Values("TANH", "RELU", "SIGMOID", "GELU"));

TEST(FmnistCnn, GroupedConvolutionEqualsSeparateModels) {
  auto task = MakeTask(Spec("task { fmnist_cnn { image_size: 14 channels: 4 channels: 6 batch_size: 8 } }"), 0).value();
  torch::Generator gen = MakeGenerator(2, 0, 0);
  TaskState st = task->Init(3, 1, gen);
  ASSERT_EQ(st.params[0].sizes(), (std::vector<int64_t>{3, 4, 1, 3, 3}));
  Batch b = task->SampleBatch(3, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(st, b, &grads);
  for (int64_t p = 0; p < 3; ++p) {
    std::vector<torch::Tensor> w;
    for (auto& t : st.params) w.push_back(t[p].clone().requires_grad_(true));
    torch::Tensor h = b.x[p].view({8, 1, 14, 14});
    h = torch::relu(torch::conv2d(h, w[0], w[1], 2, 1));
    h = torch::relu(torch::conv2d(h, w[2], w[3], 2, 1));
    torch::Tensor logits = torch::addmm(w[5], h.mean({2, 3}), w[4]);
    torch::Tensor l = torch::nn::functional::cross_entropy(logits, b.y[p]);
    l.backward();
    EXPECT_NEAR(loss[p].item<double>(), l.item<double>(), 1e-5);
    for (size_t j = 0; j < w.size(); ++j)
      EXPECT_TRUE(torch::allclose(grads[j][p], w[j].grad(), 1e-4, 1e-6)) << "tensor " << j;
  }
}

TEST(NoisyQuadratic, GradientIsAnalyticAndDimensionIsDrawn) {
  auto task = MakeTask(Spec("task { noisy_quadratic { min_dim: 5 max_dim: 40 noise_stddev: 0.0 } }"), 3).value();
  torch::Generator gen = MakeGenerator(3, 0, 0);
  TaskState st = task->Init(4, 1, gen);
  int64_t d = st.params[0].size(1);
  EXPECT_GE(d, 5);
  EXPECT_LE(d, 40);
  torch::Tensor h = st.aux[0];
  EXPECT_GT(h.max().item<double>(), 0.0);
  EXPECT_LE(h.max().item<double>(), 1.0);
  Batch b = task->SampleBatch(4, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(st, b, &grads);
  // Finite differences on one coordinate of particle 2.
  TaskState plus = st;
  plus.params = {st.params[0].clone()};
  plus.params[0][2][1] += 1e-2;
  torch::Tensor lp = task->LossAndGrad(plus, b, nullptr);
  EXPECT_NEAR((lp[2] - loss[2]).item<double>() / 1e-2, grads[0][2][1].item<double>(),
              1e-2 * std::abs(grads[0][2][1].item<double>()) + 1e-4);
}

TEST(ParamScale, OptimizerSeesScaledParametersButTheLossIsUnchanged) {
  auto plain = MakeTask(Spec("task { fmnist_mlp { batch_size: 16 } }"), 0).value();
  auto scaled = MakeTask(Spec("task { fmnist_mlp { batch_size: 16 } param_scale { enabled: true min_scale: 0.01 max_scale: 100 } }"), 0).value();
  torch::Generator g1 = MakeGenerator(4, 0, 0), g2 = MakeGenerator(4, 0, 0);
  TaskState a = plain->Init(2, 1, g1), s = scaled->Init(2, 1, g2);
  ASSERT_EQ(s.aux.size(), 1u);
  torch::Tensor scales = s.aux[0];  // [P, tensors]
  EXPECT_FALSE(torch::allclose(scales, torch::ones_like(scales)));
  for (size_t j = 0; j < a.params.size(); ++j)
    for (int p = 0; p < 2; ++p)
      EXPECT_TRUE(torch::allclose(s.params[j][p] * scales[p][j], a.params[j][p], 1e-5, 1e-7));
  Batch b = plain->SampleBatch(2, g1);
  std::vector<torch::Tensor> ga, gs;
  torch::Tensor la = plain->LossAndGrad(a, b, &ga), ls = scaled->LossAndGrad(s, b, &gs);
  EXPECT_TRUE(torch::allclose(la, ls, 1e-5));
  for (size_t j = 0; j < ga.size(); ++j)
    for (int p = 0; p < 2; ++p)
      EXPECT_TRUE(torch::allclose(gs[j][p], ga[j][p] * scales[p][j], 1e-4, 1e-6));
}

TEST(MetaLoss, NormaliserClipsAndMapsNanToMax) {
  torch::Tensor l = torch::tensor({0.5f, 10.f, NAN, INFINITY});
  torch::Tensor n = NormalizeMetaLoss(l, 3.0);
  EXPECT_TRUE(torch::allclose(n, torch::tensor({0.5f, 3.f, 3.f, 3.f})));
}

}  // namespace
}  // namespace lopt
