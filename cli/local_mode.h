// `lopt train`'s local mode: a job's kind runs it in one process
// (JobKind::TrainLocal, kinds/job_kind.h), with the replay buffer of the
// run's directory in RocksDB.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/elo/evaluation.h"
#include "common/elo/evaluation_report.h"
#include "common/elo/replay_buffer.h"
#include "kinds/local_train.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// The replay buffer `lopt train` keeps in `dir`: RocksDB, as the buffer
// server keeps it. Its writes are not synced one by one (an fsync a push):
// a run's checkpoint holds its items.
absl::StatusOr<std::unique_ptr<ReplayBuffer>> OpenLocalBuffer(const std::string& dir);

// `options` as `lopt train` runs a kind: open_buffer is OpenLocalBuffer
// unless set.
LocalTrainOptions WithLocalBuffer(LocalTrainOptions options);

// A job's local run as `lopt train` runs it: RunLocal (kinds/local_driver.h)
// of its kind with WithLocalBuffer(options).
absl::StatusOr<LocalRunSummary> RunLocalTraining(const v1::JobSpec& job,
                                                 const LocalTrainOptions& options);

}  // namespace lopt
