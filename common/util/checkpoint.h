// Tensors as files and bytes (LibTorch's archive format); the plain file
// helpers are common/util/files.h.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/elo/replay_buffer.h"
#include "common/util/files.h"

namespace lopt {

// NamedTensors <-> bytes (LibTorch's archive format). Strings ride along as
// uint8 tensors (see StringTensor).
absl::StatusOr<std::string> SerializeTensors(const NamedTensors& tensors);
absl::StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes);

torch::Tensor StringTensor(const std::string& s);
std::string TensorString(const torch::Tensor& t);

}  // namespace lopt
