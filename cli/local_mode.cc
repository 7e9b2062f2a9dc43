#include "cli/local_mode.h"

#include "buffer_server/rocks_replay_buffer.h"
#include "kinds/job_kind.h"
#include "kinds/local_driver.h"

namespace lopt {

absl::StatusOr<std::unique_ptr<ReplayBuffer>> OpenLocalBuffer(const std::string& dir) {
  auto store = RocksReplayBuffer::Open(dir, /*sync_writes=*/false);
  if (!store.ok()) return store.status();
  return std::unique_ptr<ReplayBuffer>(*std::move(store));
}

LocalTrainOptions WithLocalBuffer(LocalTrainOptions options) {
  if (!options.open_buffer) options.open_buffer = OpenLocalBuffer;
  return options;
}

absl::StatusOr<LocalRunSummary> RunLocalTraining(const v1::JobSpec& job,
                                                 const LocalTrainOptions& options) {
  auto kind = JobKinds().KindOf(job);
  if (!kind.ok()) return kind.status();
  return RunLocal(**kind, job, WithLocalBuffer(options));
}

}  // namespace lopt
