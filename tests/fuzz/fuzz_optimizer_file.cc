// The .lopt reader (common/elo/optimizer_file.h: what `lopt eval`,
// LearnedOptimizer::FromFile and `loptctl export` consumers load) on
// arbitrary bytes. Checks: refusals are DATA_LOSS, FAILED_PRECONDITION or
// INVALID_ARGUMENT with a reason; an accepted file's theta has the size its
// options need, every value finite, and equals the file's values.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "common/elo/optimizer_file.h"
#include "common/elo/small_fc_lopt.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  auto f = lopt::ParseOptimizerFile(bytes, "fuzz.lopt");
  if (!f.ok()) {
    lopt::fuzz::CheckRefusal(f.status(),
                             {absl::StatusCode::kDataLoss, absl::StatusCode::kFailedPrecondition,
                              absl::StatusCode::kInvalidArgument});
    return 0;
  }
  const int64_t want = lopt::SmallFcLopt(f->file.options()).theta_size();
  FUZZ_CHECK(f->theta.dim() == 1 && f->theta.numel() == want);
  FUZZ_CHECK(f->theta.scalar_type() == torch::kFloat32);
  FUZZ_CHECK(f->file.theta_size() == want);
  const float* t = f->theta.data_ptr<float>();
  for (int64_t i = 0; i < want; ++i) {
    FUZZ_CHECK(std::isfinite(t[i]), "theta[%lld] is not finite", static_cast<long long>(i));
    FUZZ_CHECK(t[i] == f->file.theta(static_cast<int>(i)));
  }
  return 0;
}
