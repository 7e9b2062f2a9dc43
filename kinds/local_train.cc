#include "kinds/local_train.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/util/checkpoint.h"
#include "common/util/files.h"

namespace lopt {

absl::StatusOr<std::optional<NamedTensors>> ReadLocalCheckpoint(const std::string& path,
                                                                 const v1::JobSpec& spec,
                                                                 bool fresh) {
  if (fresh || !FileExists(path)) return std::nullopt;
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return bytes.status();
  auto all = DeserializeTensors(*bytes);
  if (!all.ok()) return all.status();
  auto saved_job = Find(*all, "job");
  if (!saved_job.ok() || TensorString(*saved_job) != spec.SerializeAsString())
    return absl::FailedPreconditionError(absl::StrCat(
        path, " belongs to a different job spec; use --fresh to start over or another --out"));
  return std::optional<NamedTensors>(*std::move(all));
}

double LocalRunSummary::Number(const std::string& key) const {
  for (const auto& [k, v] : fields)
    if (k == key) {
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      return end != v.c_str() ? x : std::nan("");
    }
  return std::nan("");
}

NamedTensors WithPrefix(const NamedTensors& all, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out.emplace_back(k.substr(prefix.size()), v);
  return out;
}

}  // namespace lopt
