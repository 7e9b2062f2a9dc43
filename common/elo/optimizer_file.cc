#include "common/elo/optimizer_file.h"

#include <cmath>
#include <ctime>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/small_fc_lopt.h"
#include "common/util/checkpoint.h"

namespace lopt {

absl::Status SaveOptimizerFile(const std::string& path, v1::OptimizerFile file,
                               const torch::Tensor& theta) {
  file.set_format_version(kOptimizerFormatVersion);
  file.set_architecture(kSmallFcLoptArchitecture);
  file.clear_theta();
  torch::Tensor t = theta.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  const float* d = t.data_ptr<float>();
  file.mutable_theta()->Add(d, d + t.numel());
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  file.set_created_at(buf);
  file.set_lopt_version(LOPT_VERSION);
  return WriteFileAtomically(path, file.SerializeAsString());
}

absl::StatusOr<TrainedOptimizer> LoadOptimizerFile(const std::string& path) {
  auto bytes = ReadFile(path, "optimizer file");
  if (!bytes.ok()) return bytes.status();
  return ParseOptimizerFile(*bytes, path);
}

absl::StatusOr<TrainedOptimizer> ParseOptimizerFile(const std::string& bytes,
                                                    const std::string& path) {
  TrainedOptimizer out;
  if (!out.file.ParseFromString(bytes) || !out.file.has_format_version())
    return absl::DataLossError(absl::StrCat(path, " is not a lopt optimizer file"));
  if (out.file.format_version() > kOptimizerFormatVersion)
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has format version ", out.file.format_version(), "; this lopt reads up to ",
        kOptimizerFormatVersion));
  if (out.file.architecture() == "lhopt_lstm")  // the controller file shares fields 1 and 2
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is an LHOPT controller (lhopt_lstm), not a learned optimizer: pass it with "
              "--controller (lopt eval --controller ", path, " --job JOB)"));
  if (out.file.architecture() != kSmallFcLoptArchitecture)
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": unknown architecture '", out.file.architecture(), "'"));
  int64_t expected = SmallFcLopt(out.file.options()).theta_size();
  if (out.file.theta_size() != expected)
    return absl::InvalidArgumentError(absl::StrCat(path, ": theta has ", out.file.theta_size(),
                                                   " values, the options need ", expected));
  // A NaN or an infinity in theta makes every step it takes NaN.
  for (int i = 0; i < out.file.theta_size(); ++i)
    if (!std::isfinite(out.file.theta(i)))
      return absl::DataLossError(absl::StrCat(path, ": theta[", i, "] is ", out.file.theta(i),
                                              "; a trained optimizer's values are finite"));
  out.theta = torch::tensor(std::vector<float>(out.file.theta().begin(), out.file.theta().end()));
  return out;
}

}  // namespace lopt
