#include "common/elo/elo_shard.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "common/spec/job_spec.h"

namespace lopt {

uint64_t GroupSeed(uint64_t seed, int64_t group) {
  if (group == 0) return seed;
  return SplitMix64(seed + 0xD1B54A32D192ED03ull * static_cast<uint64_t>(group));
}

TaskFactory CachingTaskFactory(TaskCache* cache, torch::Device device) {
  return [cache, device](const v1::TaskSpec& spec,
                         uint64_t seed) -> absl::StatusOr<std::shared_ptr<const Task>> {
    const std::string key = absl::StrCat(spec.SerializeAsString(), "@", seed);
    if (auto it = cache->find(key); it != cache->end()) return it->second;
    auto task = MakeTask(spec, seed, device);
    if (!task.ok()) return task.status();
    return (*cache)[key] = std::shared_ptr<const Task>(std::move(*task));
  };
}

absl::StatusOr<std::unique_ptr<EloShard>> EloShard::Create(const v1::JobSpec& job,
                                                           const TaskFactory& make_task,
                                                           ReplayBuffer* buffer,
                                                           const std::string& table_prefix,
                                                           uint64_t seed) {
  auto shard = std::unique_ptr<EloShard>(new EloShard());
  // Without a distribution the job's task is the one group (weight 1, every
  // PES task, the shard's own seed and an unsuffixed table).
  const bool mixture = job.elo().tasks_size() > 0;
  std::vector<v1::EloTaskChoice> entries(job.elo().tasks().begin(), job.elo().tasks().end());
  if (!mixture) *entries.emplace_back().mutable_task() = job.task();
  const std::vector<int32_t> counts = MixtureTaskCounts(job);
  double total = 0;
  for (const auto& c : entries) total += c.weight();
  int64_t first = 0;
  for (size_t k = 0; k < entries.size(); ++k) {
    // The group's own job: its entry's task and its share of the PES tasks.
    v1::JobSpec sub = job;
    *sub.mutable_task() = entries[k].task();
    sub.mutable_elo()->clear_tasks();
    sub.mutable_pes()->set_num_tasks(counts[k]);
    auto task = make_task(sub.task(), GroupSeed(job.seed(), k));
    if (!task.ok()) return task.status();
    Group g;
    g.task = *task;
    g.table = mixture ? absl::StrCat(table_prefix, g.task->name(), "#", k)
                      : table_prefix + g.task->name();
    g.weight = entries[k].weight() / total;
    g.first_task = first;
    first += counts[k];
    g.unroller =
        std::make_unique<EloUnroller>(sub, g.task.get(), buffer, g.table, GroupSeed(seed, k));
    shard->groups_.push_back(std::move(g));
  }
  return shard;
}

void EloShard::set_cancel_check(const std::function<bool()>& check) {
  for (auto& g : groups_) g.unroller->set_cancel_check(check);
}

TruncationResult EloShard::RunTruncation(const torch::Tensor& theta, double alpha,
                                         int64_t outer_step) {
  if (groups_.size() == 1) return groups_[0].unroller->RunTruncation(theta, alpha, outer_step);
  TruncationResult r;
  for (auto& g : groups_) {
    TruncationResult t = g.unroller->RunTruncation(theta, alpha, outer_step);
    if (t.cancelled) {
      r.cancelled = true;
      return r;
    }
    r.grad = r.grad.defined() ? r.grad + g.weight * t.grad : g.weight * t.grad;
    r.meta_loss += g.weight * t.meta_loss;
    r.task_loss += g.weight * t.task_loss;
    r.bc_loss += g.weight * t.bc_loss;
    r.particle_steps += t.particle_steps;
    r.fresh_starts += t.fresh_starts;
    r.restores += t.restores;
    r.pushes += t.pushes;
    r.buffer_failures += t.buffer_failures;
    if (!t.buffer_error.empty()) r.buffer_error = t.buffer_error;
    for (UnrollStart u : t.unroll_starts) {
      u.task += g.first_task;
      r.unroll_starts.push_back(u);
    }
  }
  return r;
}

NamedTensors EloShard::SaveState() const {
  NamedTensors all;
  for (size_t k = 0; k < groups_.size(); ++k) {
    const std::string prefix = k == 0 ? "" : absl::StrCat("g", k, "/");
    for (auto& [name, t] : groups_[k].unroller->SaveState())
      all.emplace_back(prefix + name, t);
  }
  return all;
}

absl::Status EloShard::LoadState(const NamedTensors& state) {
  for (size_t k = 0; k < groups_.size(); ++k) {
    NamedTensors mine;
    const std::string prefix = absl::StrCat("g", k, "/");
    for (const auto& [name, t] : state) {
      const bool prefixed = name.size() > 1 && name[0] == 'g' && name.find('/') != std::string::npos &&
                            std::isdigit(static_cast<unsigned char>(name[1]));
      if (k == 0 ? !prefixed : name.rfind(prefix, 0) == 0)
        mine.emplace_back(k == 0 ? name : name.substr(prefix.size()), t);
    }
    if (auto s = groups_[k].unroller->LoadState(mine); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::vector<std::string> EloShard::buffer_tables() const {
  std::vector<std::string> out;
  for (const auto& g : groups_) out.push_back(g.table);
  return out;
}

}  // namespace lopt
