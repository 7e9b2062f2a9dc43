// Image augmentation: what it does to hand-made images (mirrors, shifts with
// zeros shifted in, never wraps around), that a seed fixes it, and that the
// tasks apply it to training batches only.
#include "common/tasks/image_augmentation.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>

#include <torch/torch.h>

#include "common/tasks/task.h"
#include "kinds/job_door.h"

namespace lopt {
namespace {

v1::TaskSpec Spec(const std::string& text) {
  auto job = JobFromText(text, "test");
  EXPECT_TRUE(job.ok()) << job.status();
  return job->task();
}

v1::ImageAugmentation Options(bool flip, int crop_padding, int max_translation) {
  v1::ImageAugmentation a;
  a.set_enabled(true);
  a.set_horizontal_flip(flip);
  a.set_crop_padding(crop_padding);
  a.set_max_translation(max_translation);
  return a;
}

// N copies of an S x S image that is 0 but for a 1 at (r, c), flattened.
torch::Tensor OnePixel(int64_t N, int64_t S, int64_t r, int64_t c) {
  torch::Tensor x = torch::zeros({N, S, S});
  x.select(1, r).select(1, c).fill_(1);
  return x.view({N, S * S});
}

// The (row, column) of each image's single 1, or (-1, -1) where the image is
// all 0; fails the test where an image holds anything else.
std::vector<std::pair<int64_t, int64_t>> PixelPositions(const torch::Tensor& y, int64_t S) {
  std::vector<std::pair<int64_t, int64_t>> at;
  torch::Tensor img = y.view({-1, S * S});
  for (int64_t n = 0; n < img.size(0); ++n) {
    torch::Tensor nz = img[n].nonzero();
    EXPECT_LE(nz.size(0), 1) << "image " << n << " has more than one bright pixel";
    if (nz.size(0) == 0) {
      at.push_back({-1, -1});
      continue;
    }
    int64_t i = nz[0][0].item<int64_t>();
    EXPECT_FLOAT_EQ(img[n][i].item<float>(), 1.f) << "the pixel's value changed";
    at.push_back({i / S, i % S});
  }
  return at;
}

TEST(AugmentationTask, FlipMirrorsEachImageOrLeavesIt) {
  const int64_t S = 6, N = 64;
  torch::Tensor img = torch::arange(S * S, torch::kFloat32).view({S, S});  // no symmetry
  torch::Tensor x = img.flatten().expand({2, N / 2, S * S}).contiguous();
  torch::Generator gen = MakeGenerator(1, 0, 0);
  torch::Tensor y = AugmentImages(x, S, Options(true, 0, 0), gen);
  ASSERT_EQ(y.sizes(), x.sizes());
  torch::Tensor mirror = img.flip({1});  // column j <- column S - 1 - j
  EXPECT_FLOAT_EQ(mirror[2][0].item<float>(), img[2][S - 1].item<float>());
  int flipped = 0, kept = 0;
  torch::Tensor out = y.view({N, S, S});
  for (int64_t n = 0; n < N; ++n) {
    if (torch::equal(out[n], mirror)) ++flipped;
    else if (torch::equal(out[n], img)) ++kept;
    else ADD_FAILURE() << "image " << n << " is neither the image nor its mirror";
  }
  EXPECT_EQ(flipped + kept, N);
  EXPECT_GT(flipped, 10);  // p = 1/2 each: 10 of 64 is 5 sigma away
  EXPECT_GT(kept, 10);
}

TEST(AugmentationTask, CropWithPaddingShiftsThePixelByAtMostThePadding) {
  const int64_t S = 8, N = 2000, p = 2;
  torch::Generator gen = MakeGenerator(2, 0, 0);
  torch::Tensor y = AugmentImages(OnePixel(N, S, 3, 4), S, Options(false, p, 0), gen);
  std::set<std::pair<int64_t, int64_t>> offsets;
  for (auto [r, c] : PixelPositions(y, S)) {
    ASSERT_NE(r, -1) << "a pixel 3 from the border cannot leave the frame";
    EXPECT_LE(std::abs(r - 3), p);
    EXPECT_LE(std::abs(c - 4), p);
    offsets.insert({r - 3, c - 4});
  }
  // Every one of the (2p + 1)^2 crops occurs.
  EXPECT_EQ(offsets.size(), size_t((2 * p + 1) * (2 * p + 1)));
}

TEST(AugmentationTask, TranslationShiftsInZerosAndNeverWrapsAround) {
  const int64_t S = 8, N = 2000, t = 3;
  torch::Generator gen = MakeGenerator(3, 0, 0);
  // A pixel in the corner: a shift towards it pushes it out of the frame.
  torch::Tensor y = AugmentImages(OnePixel(N, S, 0, 0), S, Options(false, 0, t), gen);
  int64_t gone = 0;
  std::set<std::pair<int64_t, int64_t>> seen;
  for (auto [r, c] : PixelPositions(y, S)) {
    if (r == -1) {
      ++gone;
      continue;
    }
    EXPECT_LE(r, t) << "wrapped around";
    EXPECT_LE(c, t) << "wrapped around";
    seen.insert({r, c});
  }
  EXPECT_EQ(seen.size(), size_t((t + 1) * (t + 1)));
  // P(visible) = (4/7)^2 = 0.33.
  EXPECT_NEAR(double(N - gone) / N, 16.0 / 49.0, 0.05);
}

TEST(AugmentationTask, CropThenTranslationComposeAndKeepContent) {
  const int64_t S = 28, N = 4000;
  torch::Generator gen = MakeGenerator(4, 0, 0);
  torch::Tensor y = AugmentImages(OnePixel(N, S, 14, 14), S, Options(true, 2, 3), gen);
  int64_t min_r = S, max_r = -1;
  std::set<int64_t> cols;
  for (auto [r, c] : PixelPositions(y, S)) {
    ASSERT_NE(r, -1);
    min_r = std::min(min_r, r);
    max_r = std::max(max_r, r);
    cols.insert(c);
  }
  // Row offsets add up to [-5, 5]; flips map column 14 to 13 before shifting.
  EXPECT_EQ(min_r, 9);
  EXPECT_EQ(max_r, 19);
  EXPECT_EQ(*cols.begin(), 8);
  EXPECT_EQ(*cols.rbegin(), 19);
}

TEST(AugmentationTask, SeedFixesTheDraws) {
  torch::Tensor x = torch::rand({3, 40, 64});
  auto opt = Options(true, 2, 1);
  torch::Generator a = MakeGenerator(5, 0, 0), b = MakeGenerator(5, 0, 0),
                   c = MakeGenerator(6, 0, 0);
  torch::Tensor ya = AugmentImages(x, 8, opt, a);
  EXPECT_TRUE(torch::equal(ya, AugmentImages(x, 8, opt, b)));
  EXPECT_FALSE(torch::equal(ya, AugmentImages(x, 8, opt, c)));
  EXPECT_FALSE(torch::equal(ya, x));
}

// Through MakeTask: training batches of every image family are augmented,
// from the batch's generator; the labels, the test split and the loss of a
// given batch are the plain task's.
class AugmentedTaskFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(AugmentedTaskFamily, AugmentsTrainingBatchesOnly) {
  const std::string family = GetParam();
  auto plain = MakeTask(Spec("task { " + family + " }"), 0).value();
  const std::string aug = "task { " + family + " augmentation { enabled: true crop_padding: 2 } }";
  auto task = MakeTask(Spec(aug), 0).value();
  auto again = MakeTask(Spec(aug), 0).value();
  EXPECT_EQ(task->name(), plain->name() + "_augmented");

  torch::Generator g0 = MakeGenerator(7, 0, 0), g1 = MakeGenerator(7, 0, 0),
                   g2 = MakeGenerator(7, 0, 0), g3 = MakeGenerator(8, 0, 0);
  Batch p = plain->SampleBatch(3, g0), a = task->SampleBatch(3, g1), b = again->SampleBatch(3, g2),
        c = task->SampleBatch(3, g3);
  ASSERT_EQ(a.x.sizes(), p.x.sizes());
  ASSERT_EQ(a.x.size(0), 3);
  EXPECT_TRUE(torch::equal(a.y, p.y));  // the same images, drawn first
  EXPECT_TRUE(torch::equal(a.x, b.x));
  EXPECT_FALSE(torch::equal(a.x, p.x));
  EXPECT_FALSE(torch::equal(a.x, c.x));
  // Pixels only move or fall out of the frame: no image gains brightness.
  EXPECT_TRUE((a.x.sum(-1) <= p.x.sum(-1) + 1e-3).all().item<bool>());

  torch::Generator gi = MakeGenerator(9, 0, 0), gj = MakeGenerator(9, 0, 0);
  TaskState s = plain->Init(2, 1, gi), t = task->Init(2, 1, gj);
  for (size_t i = 0; i < s.params.size(); ++i) EXPECT_TRUE(torch::equal(s.params[i], t.params[i]));
  EvalResult ep = plain->Evaluate(s), ea = task->Evaluate(s);
  EXPECT_TRUE(torch::equal(ep.loss, ea.loss));
  EXPECT_TRUE(torch::equal(ep.accuracy, ea.accuracy));
  Batch two{a.x.narrow(0, 0, 2), a.y.narrow(0, 0, 2)};
  EXPECT_TRUE(torch::equal(plain->LossAndGrad(s, two, nullptr), task->LossAndGrad(s, two, nullptr)));
}
INSTANTIATE_TEST_SUITE_P(
    ImageFamilies, AugmentedTaskFamily,
    ::testing::Values("fmnist_mlp { image_size: 8 batch_size: 16 }",
                      "fmnist_cnn { image_size: 14 channels: 4 batch_size: 16 }",
                      "fmnist_resnet { image_size: 8 channels: 4 batch_size: 16 }"));

}  // namespace
}  // namespace lopt
