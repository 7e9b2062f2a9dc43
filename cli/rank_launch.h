// One process a GPU: a launcher that re-executes the running program once per
// rank, and the file hand-off of the NCCL unique id from rank 0 to the others
// (cli/data_parallel.h). Used by `lopt eval-large --gpus N` and the GPU test
// of the data-parallel path.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lopt {

// Runs this executable (/proc/self/exe) `world` times with `args` (argv[0]
// first) plus "--rank R --world N --id-file F", F a fresh file in a private
// temporary directory, and waits for every rank. If a rank fails, the others
// are sent SIGTERM (a collective would wait for it forever). Sets
// NCCL_NVLS_ENABLE=0 for the ranks. Errors name the ranks that failed.
absl::Status LaunchRanks(const std::vector<std::string>& args, int world);

// Rank 0: writes `id` to `path` atomically (write, then rename).
absl::Status PublishRankId(const std::string& path, const std::string& id);
// Other ranks: waits up to `timeout_ms` for the file and returns its contents.
absl::StatusOr<std::string> WaitForRankId(const std::string& path, int timeout_ms = 60000);

}  // namespace lopt
