// `lopt eval-large`'s training (cli/large_eval.h) on the CPU: it trains,
// it refuses bad input, and its data-parallel arithmetic is right: two ranks
// that each see half of every batch and average their gradients (here through
// an in-process all-reduce between two threads, standing in for NCCL) must
// follow the one-rank run step for step.
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "cli/large_eval.h"

namespace lopt {
namespace {

std::string OptimizerFile() {
  const char* src = std::getenv("LOPT_SOURCE_DIR");
  return std::string(src ? src : ".") + "/models/fmnist8_elo.lopt";
}

LargeEvalConfig SmallConfig() {
  LargeEvalConfig c;
  c.optimizer_path = OptimizerFile();
  c.hidden = {32};
  c.batch = 64;
  c.steps = 40;
  c.record_every = 10;
  c.adamw_lrs = {1e-3};
  return c;
}

// A blocking all-reduce (mean) between `world` threads.
class ThreadAllReduce {
 public:
  explicit ThreadAllReduce(int world) : world_(world) {}
  absl::Status Average(const std::vector<torch::Tensor>& t) {
    std::unique_lock<std::mutex> lock(mu_);
    const int64_t round = round_;
    for (size_t i = 0; i < t.size(); ++i) {
      if (arrived_ == 0) {
        sum_.push_back(t[i].detach().clone());
      } else {
        // Ranks that train on different halves of the batch send different
        // gradients; ranks that (wrongly) both used the whole batch would not.
        if (round == 0 && !torch::equal(sum_[i], t[i])) first_round_differs_ = true;
        sum_[i] += t[i];
      }
    }
    if (++arrived_ == world_) {
      // The mean goes to `result_`; the next round sums into a fresh `sum_`.
      // A thread still to copy this round's result cannot miss it: the next
      // round completes only once every thread, it included, has arrived.
      result_ = std::move(sum_);
      sum_.clear();
      for (auto& s : result_) s /= double(world_);
      arrived_ = 0;
      ++round_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return round_ != round; });
    }
    for (size_t i = 0; i < t.size(); ++i) t[i].copy_(result_[i]);
    return absl::OkStatus();
  }
  bool first_round_differs() const { return first_round_differs_; }

 private:
  const int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t round_ = 0;
  bool first_round_differs_ = false;
  std::vector<torch::Tensor> sum_, result_;
};

TEST(LargeEval, TrainsBothOptimizersAndReportsThem) {
  auto r = RunLargeEval(SmallConfig(), torch::kCPU, Collectives{});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->parameters, 784 * 32 + 32 + 32 * 10 + 10);
  ASSERT_EQ(r->arms.size(), 2u);
  EXPECT_EQ(r->arms[0].name, "lopt");
  EXPECT_EQ(r->arms[1].name, "adamw lr=0.001");
  for (const auto& a : r->arms) {
    ASSERT_EQ(a.curve_steps, (std::vector<int64_t>{10, 20, 30, 40})) << a.name;
    EXPECT_FALSE(a.diverged) << a.name;
    EXPECT_LT(a.curve_loss.back(), a.curve_loss.front()) << a.name;  // it learns
    EXPECT_GT(a.test_accuracy, 0.3) << a.name;                       // chance is 0.1
    EXPECT_DOUBLE_EQ(a.final_train_loss, a.curve_loss.back());       // last 10% = last record
  }
  std::string table = FormatLargeEvalTable(*r);
  EXPECT_NE(table.find("(best AdamW)"), std::string::npos) << table;
}

TEST(LargeEval, TwoRanksWithAveragedGradientsFollowOneRank) {
  LargeEvalConfig c = SmallConfig();
  c.steps = 20;
  auto one = RunLargeEval(c, torch::kCPU, Collectives{});
  ASSERT_TRUE(one.ok()) << one.status();
  ThreadAllReduce reduce(2);
  std::vector<absl::StatusOr<LargeEvalReport>> two(2, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&, rank] {
      Collectives col;
      col.rank = rank;
      col.world = 2;
      col.average = [&](const std::vector<torch::Tensor>& t) { return reduce.Average(t); };
      two[rank] = RunLargeEval(c, torch::kCPU, col);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(reduce.first_round_differs()) << "both ranks computed the same gradient";
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_TRUE(two[rank].ok()) << two[rank].status();
    ASSERT_EQ(two[rank]->arms.size(), one->arms.size());
    for (size_t a = 0; a < one->arms.size(); ++a) {
      const auto& x = two[rank]->arms[a];
      const auto& y = one->arms[a];
      ASSERT_EQ(x.curve_loss.size(), y.curve_loss.size());
      for (size_t i = 0; i < y.curve_loss.size(); ++i)
        EXPECT_NEAR(x.curve_loss[i], y.curve_loss[i], 1e-4 * (1 + std::abs(y.curve_loss[i])))
            << "rank " << rank << " " << y.name << " record " << i;
      EXPECT_NEAR(x.test_loss, y.test_loss, 1e-3) << y.name;
    }
  }
}

TEST(LargeEval, RefusesBadInput) {
  LargeEvalConfig c = SmallConfig();
  Collectives two;
  two.world = 2;
  two.average = [](const std::vector<torch::Tensor>&) { return absl::OkStatus(); };
  c.batch = 63;
  EXPECT_EQ(RunLargeEval(c, torch::kCPU, two).status().code(),
            absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.hidden = {0};
  EXPECT_EQ(RunLargeEval(c, torch::kCPU, {}).status().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.optimizer_path = "/nonexistent/optimizer.lopt";
  EXPECT_FALSE(RunLargeEval(c, torch::kCPU, {}).ok());
}

}  // namespace
}  // namespace lopt
