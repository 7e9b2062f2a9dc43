#include "kinds/elo/elo_kind.h"

#include "common/util/run_files.h"

namespace lopt {
namespace {

class Elo : public JobKind {
 public:
  absl::string_view name() const override { return "elo"; }
  absl::string_view section() const override { return ""; }
  std::vector<v1::Algorithm> unit_kinds() const override {
    return {v1::ELO_PES, v1::ELO_META_TEST};
  }
  std::unique_ptr<JobCore> MakeCore(const v1::JobSpec& spec,
                                    const JobCoreOptions& options) const override {
    return MakeEloCore(spec, options);
  }
  std::unique_ptr<UnitRunner> MakeRunner(v1::Algorithm unit_kind,
                                         const UnitRunnerEnv& env) const override {
    switch (unit_kind) {
      case v1::ELO_PES: return MakeEloPesRunner(env);
      case v1::ELO_META_TEST: return MakeEloMetaTestRunner(env);
      default: return nullptr;
    }
  }
  bool PlotMetrics(const v1::JobSpec& spec, const std::string& dir) const override {
    return PlotEloTraining(dir, spec.name());  // training.png
  }
};

}  // namespace

const JobKind& EloKind() {
  static const Elo* kind = new Elo();
  return *kind;
}

}  // namespace lopt
