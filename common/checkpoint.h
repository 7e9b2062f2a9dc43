// Files that must survive a crash: written to a temporary, fsynced, then
// renamed over the target, so a reader sees the old file or the new one.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "common/replay_buffer.h"

namespace lopt {

// Whether `path` names an existing file or directory.
bool FileExists(const std::string& path);

// mkdir -p: creates `dir` and its missing parents.
absl::Status MakeDirs(const std::string& dir);

absl::Status WriteFileAtomically(const std::string& path, const std::string& bytes);
// NOT_FOUND "cannot read [what ]path: <errno's text>" when it cannot.
absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what = "");

// NamedTensors <-> bytes (LibTorch's archive format). Strings ride along as
// uint8 tensors (see StringTensor).
absl::StatusOr<std::string> SerializeTensors(const NamedTensors& tensors);
absl::StatusOr<NamedTensors> DeserializeTensors(const std::string& bytes);

torch::Tensor StringTensor(const std::string& s);
std::string TensorString(const torch::Tensor& t);

}  // namespace lopt
