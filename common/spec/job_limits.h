// Limits a job spec must keep so that one job cannot take down the cluster:
// its strings are valid UTF-8 (they travel in proto3 replies to every
// client), its data paths name regular files of bounded size (not
// /dev/zero), and one of its work units fits a worker's memory. ValidateJob
// (kinds/job_door.h) applies them; the loaders apply the data checks again.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lopt/v1/job.pb.h"

namespace lopt {


// The longest job name, in bytes.
inline constexpr size_t kMaxJobNameBytes = 256;
// The most bytes of training data one task reads (byte_lm's corpus, one
// Fashion-MNIST file): more than any shipped data set, far less than a
// worker's memory.
inline constexpr int64_t kMaxDataBytes = int64_t{1} << 30;
// The most memory one work unit may need, by EstimateUnitBytes.
inline constexpr int64_t kMaxUnitBytes = int64_t{8} << 30;

// INVALID_ARGUMENT naming the field ("lhopt.tasks[1].task.byte_lm.data_path
// is not valid UTF-8 (byte 0xff at offset 3)") unless every string of `job`
// is valid UTF-8; also caps name at kMaxJobNameBytes.
absl::Status ValidateJobStrings(const v1::JobSpec& job);

// A data path as far as this host can tell: INVALID_ARGUMENT when it exists
// and is neither a regular file nor a directory (a device, a FIFO, a
// socket), or is a regular file over kMaxDataBytes. A path that does not
// exist here passes: workers on other hosts may have it (CheckDataFile then
// applies when they load it).
absl::Status ValidateDataPath(absl::string_view field, const std::string& path);

// At load: `path` (after symlinks) must be a regular file of at most
// `max_bytes`. INVALID_ARGUMENT naming the path and what it is otherwise;
// NOT_FOUND when it does not exist.
absl::Status CheckDataFile(const std::string& path, int64_t max_bytes = kMaxDataBytes);

// The peak memory of one work unit in bytes, estimated from the fields that
// size it: the particles (2 x pes.num_tasks for ELO, lhopt.particles), each
// task's parameters (with the learned optimizer's per-parameter features and
// state, whose width grows with lopt.hidden_size) and its activations
// (batch x widths). An estimate within a factor of a few, for admission.
int64_t EstimateUnitBytes(const v1::JobSpec& job);

// The particles of one work unit: 2 x pes.num_tasks for ELO, lhopt.particles.
int64_t UnitParticles(const v1::JobSpec& job);

// Admission: why a worker that reports `memory_bytes` and `max_particles`
// (WorkerInfo's, from --memory and --max-particles) cannot run a unit of
// `job` -- more particles, or more memory by EstimateUnitBytes -- or "" when
// it can. A limit of 0 is none: such a worker is trusted.
std::string WhyWorkerCannotHold(int64_t memory_bytes, int64_t max_particles,
                                const v1::JobSpec& job);

// INVALID_ARGUMENT naming the fields and the estimate when
// EstimateUnitBytes(job) > kMaxUnitBytes.
absl::Status ValidateUnitSize(const v1::JobSpec& job);

}  // namespace lopt
