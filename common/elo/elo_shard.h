// A shard of an ELO job as a worker (or local mode) runs it: its
// pes.num_tasks PES tasks grouped by the job's task distribution. Each group
// is one EloUnroller over one batched task family (a shape group: its
// particles run as one batch, never a loop over particles); a job without
// elo.tasks has one group, the job's task, and runs exactly as one
// EloUnroller. The groups see the same theta each truncation, and the shard's
// meta-gradient is the weight-averaged mean of the groups' PES estimates.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/elo/elo_unroller.h"
#include "common/elo/replay_buffer.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// Builds (or shares) the task of a spec; the shard keeps what it returns.
using TaskFactory =
    std::function<absl::StatusOr<std::shared_ptr<const Task>>(const v1::TaskSpec&, uint64_t seed)>;

// Tasks by (spec, seed): shards of one job share their tasks, and so the data.
using TaskCache = std::map<std::string, std::shared_ptr<const Task>>;
// A factory that returns the cached task of (spec, seed), or builds it on
// `device` and caches it. `cache` must outlive the factory.
TaskFactory CachingTaskFactory(TaskCache* cache, torch::Device device);

class EloShard {
 public:
  // REQUIRES: `job` validated. `buffer` (may be null: no buffer) must outlive
  // the shard; each group keeps its own table, table_prefix + its task's
  // name (+ "#k" for entry k of a task distribution).
  static absl::StatusOr<std::unique_ptr<EloShard>> Create(const v1::JobSpec& job,
                                                          const TaskFactory& make_task,
                                                          ReplayBuffer* buffer,
                                                          const std::string& table_prefix,
                                                          uint64_t seed);

  // One truncation of every group with theta [D]; the result's gradient and
  // losses are the groups' weighted means, its counts their sums.
  TruncationResult RunTruncation(const torch::Tensor& theta, double alpha, int64_t outer_step);
  // Every group's unroller asks `check` between inner steps
  // (EloUnroller::set_cancel_check); a cancelled truncation skips the rest.
  void set_cancel_check(const std::function<bool()>& check);

  // Every group's state; group 0's names as a lone EloUnroller's, group k's
  // prefixed "g<k>/".
  NamedTensors SaveState() const;
  absl::Status LoadState(const NamedTensors& state);

  int64_t num_groups() const { return int64_t(groups_.size()); }
  EloUnroller& unroller(int64_t g) { return *groups_[g].unroller; }
  const Task& task(int64_t g) const { return *groups_[g].task; }
  double weight(int64_t g) const { return groups_[g].weight; }
  // The replay-buffer table of each group.
  std::vector<std::string> buffer_tables() const;

 private:
  struct Group {
    std::shared_ptr<const Task> task;
    std::unique_ptr<EloUnroller> unroller;
    std::string table;
    double weight = 1;   // normalised: the groups' weights sum to 1
    int64_t first_task = 0;  // its PES tasks' offset in the shard's numbering
  };
  std::vector<Group> groups_;
};

// The seed of group k of a shard whose seed is `seed` (group 0 keeps it).
uint64_t GroupSeed(uint64_t seed, int64_t group);

}  // namespace lopt
