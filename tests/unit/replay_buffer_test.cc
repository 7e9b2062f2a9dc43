#include "common/elo/replay_buffer.h"

#include <gtest/gtest.h>

#include <torch/torch.h>

namespace lopt {
namespace {

NamedTensors Item(int64_t v) { return {{"step", torch::tensor(v)}}; }
int64_t StepOf(const NamedTensors& item) { return Find(item, "step").value().item<int64_t>(); }

TEST(InMemoryReplayBuffer, FifoWithCapacity) {
  InMemoryReplayBuffer b;
  for (int64_t i = 0; i < 6; ++i) ASSERT_TRUE(b.Put("t", 4, Item(i)).ok());
  EXPECT_EQ(b.Size("t").value(), 4);
  auto items = b.Items("t").value();
  ASSERT_EQ(items.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(StepOf(items[i]), i + 2);  // 0 and 1 evicted
  EXPECT_EQ(b.Size("other").value(), 0);
}

TEST(InMemoryReplayBuffer, SamplesUniformly) {
  InMemoryReplayBuffer b;
  for (int64_t i = 0; i < 4; ++i) ASSERT_TRUE(b.Put("t", 4, Item(i)).ok());
  std::vector<int> counts(4);
  for (int k = 0; k < 4000; ++k) counts[StepOf(b.Sample("t", (k + 0.5) / 4000).value())]++;
  for (int c : counts) EXPECT_EQ(c, 1000);
}

TEST(InMemoryReplayBuffer, ErrorsAreClear) {
  InMemoryReplayBuffer b;
  EXPECT_EQ(b.Sample("empty", 0.5).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(b.Put("t", 0, Item(1)).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(b.Put("t", 2, Item(1)).ok());
  EXPECT_EQ(b.Sample("t", 1.0).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(b.DeleteTable("t").ok());
  EXPECT_EQ(b.Size("t").value(), 0);
  EXPECT_EQ(Find(Item(1), "nope").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lopt
