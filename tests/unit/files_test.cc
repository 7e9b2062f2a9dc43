// The trained-optimizer file and its use as a torch::optim::Optimizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include <torch/torch.h>

#include "common/elo/learned_optimizer.h"
#include "common/elo/optimizer_file.h"
#include "common/tasks/task.h"
#include "common/util/checkpoint.h"
#include "common/util/files.h"
#include "common/util/remove_tree.h"
#include "common/util/runtime.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

TEST(OptimizerFile, RoundTripsThetaOptionsAndProvenance) {
  v1::OptimizerFile f;
  f.mutable_options()->set_step_mult(0.002f);
  auto job = JobFromText(DefaultJobText(), "d").value();
  *f.mutable_job() = job;
  f.set_outer_step(123);
  f.set_meta_loss(0.5);
  torch::Tensor theta = torch::randn({2402});
  std::string path = TempPath("opt.lopt");
  ASSERT_TRUE(SaveOptimizerFile(path, f, theta).ok());
  auto loaded = LoadOptimizerFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(torch::equal(loaded->theta, theta));
  EXPECT_EQ(loaded->file.format_version(), kOptimizerFormatVersion);
  EXPECT_EQ(loaded->file.architecture(), "small_fc_lopt");
  EXPECT_FLOAT_EQ(loaded->file.options().step_mult(), 0.002f);
  EXPECT_EQ(loaded->file.outer_step(), 123);
  EXPECT_EQ(loaded->file.job().name(), job.name());
  EXPECT_FALSE(loaded->file.created_at().empty());
}

TEST(OptimizerFile, BadFilesAreRefusedClearly) {
  EXPECT_EQ(LoadOptimizerFile(TempPath("missing.lopt")).status().code(),
            absl::StatusCode::kNotFound);
  std::string junk = TempPath("junk.lopt");
  std::ofstream(junk) << "this is not a proto \xff\xff\xff";
  EXPECT_EQ(LoadOptimizerFile(junk).status().code(), absl::StatusCode::kDataLoss);
  v1::OptimizerFile f;
  std::string newer = TempPath("newer.lopt");
  ASSERT_TRUE(SaveOptimizerFile(newer, f, torch::zeros({2402})).ok());
  auto raw = ReadFile(newer).value();
  v1::OptimizerFile parsed;
  parsed.ParseFromString(raw);
  parsed.set_format_version(kOptimizerFormatVersion + 1);
  ASSERT_TRUE(WriteFileAtomically(newer, parsed.SerializeAsString()).ok());
  EXPECT_EQ(LoadOptimizerFile(newer).status().code(), absl::StatusCode::kFailedPrecondition);
  std::string wrong = TempPath("wrong.lopt");
  ASSERT_TRUE(SaveOptimizerFile(wrong, f, torch::zeros({100})).ok());
  EXPECT_EQ(LoadOptimizerFile(wrong).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(OptimizerFile, ThetaWithNanOrInfinityIsRefused) {
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    torch::Tensor theta = torch::randn({2402});
    theta[7] = bad;
    const std::string path = TempPath("nonfinite.lopt");
    ASSERT_TRUE(SaveOptimizerFile(path, v1::OptimizerFile(), theta).ok());
    auto loaded = LoadOptimizerFile(path);
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << bad;
    EXPECT_NE(loaded.status().message().find("theta[7] is "), std::string::npos)
        << loaded.status();
  }
}

TEST(Checkpoint, TensorsRoundTripAndGarbageIsDataLoss) {
  NamedTensors t = {{"a", torch::randn({3, 4})}, {"b/c", torch::tensor({1, 2}, torch::kInt64)},
                    {"s", StringTensor("hello\nworld")}};
  auto bytes = SerializeTensors(t);
  ASSERT_TRUE(bytes.ok());
  std::string path = TempPath("ckpt.pt");
  ASSERT_TRUE(WriteFileAtomically(path, *bytes).ok());
  auto back = DeserializeTensors(ReadFile(path).value());
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 3u);
  EXPECT_EQ((*back)[1].first, "b/c");
  EXPECT_TRUE(torch::equal((*back)[0].second, t[0].second));
  EXPECT_EQ(TensorString((*back)[2].second), "hello\nworld");
  EXPECT_EQ(DeserializeTensors("garbage").status().code(), absl::StatusCode::kDataLoss);
}

// lopt::LearnedOptimizer in an ordinary LibTorch loop applies exactly the
// batched small_fc_lopt step with one particle.
TEST(LearnedOptimizer, MatchesBatchedStepInATorchLoop) {
  torch::manual_seed(0);
  torch::nn::Linear model(6, 3);
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(1, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen);
  std::vector<torch::Tensor> ref = {model->weight.detach().clone().unsqueeze(0),
                                    model->bias.detach().clone().unsqueeze(0)};
  LoptState ref_state = lo.InitState(ref);
  LearnedOptimizer opt(model->parameters(), lo.spec(), theta);
  for (int s = 0; s < 5; ++s) {
    torch::Tensor x = torch::randn({8, 6}), y = torch::randn({8, 3});
    opt.zero_grad();
    torch::Tensor loss = (model->forward(x) - y).square().mean();
    loss.backward();
    std::vector<torch::Tensor> grads = {model->weight.grad().unsqueeze(0),
                                        model->bias.grad().unsqueeze(0)};
    auto u = lo.Step(ref, grads, &ref_state, torch::full({1}, s, torch::kInt64), theta);
    ref[0] -= u[0];
    ref[1] -= u[1];
    opt.step();
  }
  EXPECT_EQ(opt.iteration(), 5);
  EXPECT_TRUE(torch::allclose(model->weight.detach(), ref[0][0], 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(model->bias.detach(), ref[1][0], 1e-6, 1e-7));
}

TEST(LearnedOptimizer, SaveLoadResumesItsState) {
  torch::manual_seed(1);
  torch::nn::Linear m1(4, 2), m2(4, 2);
  m2->weight.data().copy_(m1->weight.detach());
  m2->bias.data().copy_(m1->bias.detach());
  SmallFcLopt lo((v1::LearnedOptimizerSpec()));
  torch::Generator gen = MakeGenerator(2, 0, 0);
  torch::Tensor theta = lo.InitTheta(gen);
  LearnedOptimizer o1(m1->parameters(), lo.spec(), theta);
  auto step = [](torch::nn::Linear& m, torch::optim::Optimizer& o, int seed) {
    torch::manual_seed(seed);
    o.zero_grad();
    m->forward(torch::randn({5, 4})).square().sum().backward();
    o.step();
  };
  for (int s = 0; s < 3; ++s) step(m1, o1, s);
  std::string path = TempPath("opt_state.pt");
  torch::save(o1, path);
  m2->weight.data().copy_(m1->weight.detach());
  m2->bias.data().copy_(m1->bias.detach());
  LearnedOptimizer o2(m2->parameters(), lo.spec(), torch::zeros({2402}));
  torch::load(o2, path);
  EXPECT_EQ(o2.iteration(), 3);
  step(m1, o1, 10);
  step(m2, o2, 10);
  EXPECT_TRUE(torch::allclose(m1->weight.detach(), m2->weight.detach()));
}

}  // namespace
}  // namespace lopt

// Without --threads, a process on the CPU takes a thread a core, and one whose
// tensors live on a GPU at most a few: eight evals on a 16-core GPU host with
// 16 threads each crowded the cores until none finished in time.
TEST(Runtime, AGpuProcessTakesAFewThreadsByDefault) {
  EXPECT_EQ(lopt::DefaultThreadCount(/*on_gpu=*/false, 16), 16);
  EXPECT_EQ(lopt::DefaultThreadCount(/*on_gpu=*/true, 16), lopt::kGpuProcessThreads);
  EXPECT_LT(lopt::kGpuProcessThreads, 16);
  EXPECT_EQ(lopt::DefaultThreadCount(/*on_gpu=*/true, 2), 2);
  EXPECT_EQ(lopt::DefaultThreadCount(/*on_gpu=*/false, 0), 1);  // hardware_concurrency unknown
  EXPECT_EQ(lopt::DefaultThreadCount(/*on_gpu=*/true, 0), 1);
}

// rm -rf without following links: what a link points to survives, and a
// missing path is not an error.
TEST(Files, RemoveTreeRemovesEverythingBelowButNoLinkTarget) {
  const std::string root = ::testing::TempDir() + "/remove_tree_" + std::to_string(::getpid());
  const std::string outside = root + "_outside";
  ASSERT_TRUE(lopt::MakeDirs(root + "/a/b/c").ok());
  ASSERT_TRUE(lopt::MakeDirs(outside).ok());
  ASSERT_TRUE(lopt::WriteFileAtomically(root + "/a/b/c/deep.txt", "x").ok());
  ASSERT_TRUE(lopt::WriteFileAtomically(root + "/top.txt", "y").ok());
  ASSERT_TRUE(lopt::WriteFileAtomically(outside + "/kept.txt", "z").ok());
  ASSERT_EQ(::symlink(outside.c_str(), (root + "/a/link").c_str()), 0);
  ASSERT_TRUE(lopt::RemoveTree(root).ok());
  EXPECT_FALSE(lopt::FileExists(root));
  EXPECT_TRUE(lopt::FileExists(outside + "/kept.txt"));
  EXPECT_TRUE(lopt::RemoveTree(root).ok());  // gone already
  ASSERT_TRUE(lopt::RemoveTree(outside + "/kept.txt").ok());  // a plain file
  EXPECT_FALSE(lopt::FileExists(outside + "/kept.txt"));
  ASSERT_TRUE(lopt::RemoveTree(outside).ok());
}
