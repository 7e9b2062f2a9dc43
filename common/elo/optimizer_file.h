// Reading and writing trained learned optimizers (proto/lopt/v1/optimizer_file.proto).
#pragma once

#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace lopt {

inline constexpr uint32_t kOptimizerFormatVersion = 1;
inline constexpr char kSmallFcLoptArchitecture[] = "small_fc_lopt";

struct TrainedOptimizer {
  v1::OptimizerFile file;  // options and provenance
  torch::Tensor theta;     // [D] float32
};

// Fills format_version, architecture, theta and created_at; the caller sets
// options and provenance in `file`.
absl::Status SaveOptimizerFile(const std::string& path, v1::OptimizerFile file,
                               const torch::Tensor& theta);

// Errors: NOT_FOUND, DATA_LOSS (not an optimizer file), FAILED_PRECONDITION
// (a newer format or another architecture), INVALID_ARGUMENT (theta's size
// does not match the options).
absl::StatusOr<TrainedOptimizer> LoadOptimizerFile(const std::string& path);
// LoadOptimizerFile on bytes already read; `source` names them in errors.
absl::StatusOr<TrainedOptimizer> ParseOptimizerFile(const std::string& bytes,
                                                    const std::string& source);

}  // namespace lopt
