#include "kinds/lhopt/lhopt_kind.h"

#include "common/util/run_files.h"

namespace lopt {
namespace {

class Lhopt : public JobKind {
 public:
  absl::string_view name() const override { return "lhopt"; }
  absl::string_view section() const override { return "lhopt"; }
  std::vector<v1::Algorithm> unit_kinds() const override {
    return {v1::LHOPT_PPO, v1::LHOPT_YARDSTICK};
  }
  std::unique_ptr<JobCore> MakeCore(const v1::JobSpec& spec,
                                    const JobCoreOptions&) const override {
    return MakeLhoptCore(spec);
  }
  std::unique_ptr<UnitRunner> MakeRunner(v1::Algorithm unit_kind,
                                         const UnitRunnerEnv& env) const override {
    switch (unit_kind) {
      case v1::LHOPT_PPO: return MakeLhoptPpoRunner(env);
      case v1::LHOPT_YARDSTICK: return MakeLhoptYardstickRunner();
      default: return nullptr;
    }
  }
  bool PlotMetrics(const v1::JobSpec& spec, const std::string& dir) const override {
    return PlotLhoptRewards(dir, spec.name());  // rewards.png
  }
};

}  // namespace

const JobKind& LhoptKind() {
  static const Lhopt* kind = new Lhopt();
  return *kind;
}

}  // namespace lopt
