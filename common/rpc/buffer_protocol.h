// What the learner and the buffer server agree on beyond buffer_service.proto
// (LibTorch-free: the buffer server and its fuzz build include it).
#pragma once

namespace lopt {

// BufferService.DeleteTables with this metadata key (value "1") and a prefix
// also closes the prefix: the buffer refuses later puts under it with
// FAILED_PRECONDITION (RocksReplayStore::CloseTables), across restarts. The
// learner sends it when a job ends, so that a worker's late put for the job
// leaves no orphan table.
inline constexpr char kClosePrefixMetadata[] = "lopt-close-prefix";

}  // namespace lopt
