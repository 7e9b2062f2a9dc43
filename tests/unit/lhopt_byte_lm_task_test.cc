#include "common/tasks/byte_lm_task.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <torch/torch.h>

#include "common/lhopt/ciao.h"
#include "common/tasks/task.h"
#include "common/util/remove_tree.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

namespace fs = std::filesystem;

fs::path TextDirPath() {
  return fs::temp_directory_path() / ("lopt_byte_lm_" + std::to_string(::getpid()));
}

// Removes the test's text directory when the test binary exits.
struct RemoveTextDir : public ::testing::Environment {
  void TearDown() override { lopt::RemoveTree(TextDirPath()).IgnoreError(); }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new RemoveTextDir);

// A directory of text: two files, a binary file (skipped) and a symlink
// (skipped, it would duplicate text).
std::string MakeTextDir() {
  fs::path dir = TextDirPath();
  fs::create_directories(dir);
  std::string a, b;
  for (int i = 0; i < 60; ++i) a += "the quick brown fox jumps over the lazy dog. ";
  for (int i = 0; i < 60; ++i) b += "ça va? très bien, merci. ";
  std::ofstream(dir / "a.txt") << a;
  std::ofstream(dir / "b.txt") << b;
  std::ofstream bin(dir / "c.dat", std::ios::binary);
  bin.write("\0\1\2\3", 4);
  bin.close();
  std::error_code ec;
  fs::create_symlink(dir / "a.txt", dir / "d.u8", ec);
  return dir.string();
}

v1::ByteLmSpec SmallSpec(const std::string& path) {
  v1::ByteLmSpec s;
  s.set_data_path(path);
  s.set_context_length(16);
  s.set_model_dim(16);
  s.set_num_heads(2);
  s.set_num_layers(2);
  s.set_batch_size(4);
  return s;
}

TEST(ByteLm, LoadsTextAndSkipsBinaryAndSymlinks) {
  std::string dir = MakeTextDir();
  auto corpus = LoadByteCorpus(dir, 18);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  const int64_t expected = 60 * 45 + 60 * std::string("ça va? très bien, merci. ").size();
  EXPECT_EQ(corpus->train.size(0) + corpus->test.size(0), expected);
  EXPECT_EQ(corpus->test.size(0), static_cast<int64_t>(std::floor(expected * 0.1)));
  EXPECT_EQ(corpus->train[0].item<uint8_t>(), 't');
  EXPECT_EQ(LoadByteCorpus(dir + "/missing", 18).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadByteCorpus(dir, 1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ByteLm, SpecValidation) {
  v1::JobSpec job;
  FillJobDefaults(&job);
  *job.mutable_task()->mutable_byte_lm() = SmallSpec("/tmp");
  EXPECT_TRUE(ValidateJob(job).ok()) << ValidateJob(job);
  job.mutable_task()->mutable_byte_lm()->set_num_heads(3);
  EXPECT_NE(ValidateJob(job).message().find("task.byte_lm.num_heads"), std::string::npos);
  job.mutable_task()->mutable_byte_lm()->set_num_heads(2);
  job.mutable_task()->mutable_byte_lm()->set_context_length(0);
  EXPECT_NE(ValidateJob(job).message().find("task.byte_lm.context_length"), std::string::npos);
}

// Each particle computes what it computes alone: losses and gradients of a
// P = 3 batch equal those of each particle run with P = 1.
TEST(ByteLm, ParticlesAreIndependent) {
  v1::TaskSpec spec;
  *spec.mutable_byte_lm() = SmallSpec(MakeTextDir());
  auto task = MakeTask(spec, 1);
  ASSERT_TRUE(task.ok()) << task.status();
  torch::Generator gen = MakeGenerator(3, 0, 0);
  TaskState s = (*task)->Init(3, 1, gen);
  ASSERT_EQ(s.params.size(), (*task)->param_shapes().size());
  for (size_t i = 0; i < s.params.size(); ++i)
    EXPECT_EQ(s.params[i].sizes().slice(1), torch::IntArrayRef((*task)->param_shapes()[i]));
  Batch batch = (*task)->SampleBatch(3, gen);
  ASSERT_EQ(batch.x.sizes(), torch::IntArrayRef({3, 4, 17}));
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = (*task)->LossAndGrad(s, batch, &grads);
  ASSERT_EQ(loss.sizes(), torch::IntArrayRef({3}));
  // An untrained model is near uniform over 256 bytes.
  EXPECT_NEAR(loss.mean().item<double>(), std::log(256.0), 0.5);
  for (int64_t i = 0; i < 3; ++i) {
    TaskState one;
    for (const auto& p : s.params) one.params.push_back(p.slice(0, i, i + 1));
    Batch b1{batch.x.slice(0, i, i + 1), {}};
    std::vector<torch::Tensor> g1;
    torch::Tensor l1 = (*task)->LossAndGrad(one, b1, &g1);
    EXPECT_NEAR(l1.item<double>(), loss[i].item<double>(), 1e-5);
    for (size_t k = 0; k < g1.size(); ++k)
      EXPECT_TRUE(torch::allclose(g1[k][0], grads[k][i], 1e-4, 1e-6)) << i << " " << k;
  }
}

// 60 CIAO steps on repetitive text cut the test loss by more than a nat.
TEST(ByteLm, CiaoTrainsIt) {
  v1::TaskSpec spec;
  *spec.mutable_byte_lm() = SmallSpec(MakeTextDir());
  auto task = MakeTask(spec, 1);
  ASSERT_TRUE(task.ok());
  torch::Generator gen = MakeGenerator(4, 0, 0);
  TaskState s = (*task)->Init(2, 1, gen);
  EvalResult before = (*task)->Evaluate(s);
  CiaoState st = InitCiaoState(s.params);
  CiaoHyperparameters h;
  h.lr = 1e-2;
  CiaoHparamTensors hp = CiaoHparamTensors::Fill(2, h);
  for (int step = 0; step < 60; ++step) {
    Batch b = (*task)->SampleBatch(2, gen);
    std::vector<torch::Tensor> g;
    (*task)->LossAndGrad(s, b, &g);
    CiaoStepResult r = CiaoStep(s.params, g, &st, hp);
    for (size_t k = 0; k < s.params.size(); ++k) s.params[k] = s.params[k] - r.updates[k];
  }
  EvalResult after = (*task)->Evaluate(s);
  EXPECT_LT(after.loss.max().item<double>(), before.loss.min().item<double>() - 1.0)
      << before.loss << after.loss;
  EXPECT_GT(after.accuracy.min().item<double>(), before.accuracy.max().item<double>());
}

// The default spec reads Debian's fortunes (package `fortunes`).
TEST(ByteLm, DefaultCorpusIsFortunes) {
  v1::TaskSpec spec;
  spec.mutable_byte_lm();
  if (!fs::exists(spec.byte_lm().data_path()))
    GTEST_SKIP() << spec.byte_lm().data_path() << " missing: apt-get install fortunes";
  auto task = MakeTask(spec, 1);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->name(), "byte_lm_d32_l1_ctx32");
  torch::Generator gen = MakeGenerator(5, 0, 0);
  TaskState s = (*task)->Init(2, 1, gen);
  torch::Tensor loss = (*task)->LossAndGrad(s, (*task)->SampleBatch(2, gen), nullptr);
  EXPECT_NEAR(loss.mean().item<double>(), std::log(256.0), 0.5);
}

}  // namespace
}  // namespace lopt
