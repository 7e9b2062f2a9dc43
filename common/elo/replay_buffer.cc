#include "common/elo/replay_buffer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace lopt {

absl::StatusOr<torch::Tensor> Find(const NamedTensors& item, const std::string& name) {
  for (const auto& [k, v] : item)
    if (k == name) return v;
  return absl::NotFoundError(absl::StrCat("no tensor named '", name, "' in the item"));
}

absl::Status InMemoryReplayBuffer::Put(const std::string& table, int64_t capacity,
                                       NamedTensors item) {
  if (capacity <= 0)
    return absl::InvalidArgumentError(absl::StrCat("capacity must be > 0, got ", capacity));
  std::lock_guard<std::mutex> lock(mu_);
  auto& items = tables_[table];
  items.push_back(std::move(item));
  while (int64_t(items.size()) > capacity) items.erase(items.begin());
  return absl::OkStatus();
}

absl::StatusOr<NamedTensors> InMemoryReplayBuffer::Sample(const std::string& table, double u) {
  if (!(u >= 0 && u < 1))
    return absl::InvalidArgumentError(absl::StrCat("u must be in [0, 1), got ", u));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(table);
  if (it == tables_.end() || it->second.empty())
    return absl::NotFoundError(absl::StrCat("table '", table, "' is empty"));
  size_t i = std::min(it->second.size() - 1, size_t(std::floor(u * it->second.size())));
  return it->second[i];
}

absl::StatusOr<int64_t> InMemoryReplayBuffer::Size(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(table);
  return it == tables_.end() ? 0 : int64_t(it->second.size());
}

absl::StatusOr<std::vector<NamedTensors>> InMemoryReplayBuffer::Items(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tables_.find(table);
  if (it == tables_.end()) return std::vector<NamedTensors>{};
  return it->second;
}

absl::Status InMemoryReplayBuffer::DeleteTable(const std::string& table) {
  std::lock_guard<std::mutex> lock(mu_);
  tables_.erase(table);
  return absl::OkStatus();
}

}  // namespace lopt
