// Every job kind lopt has: one line a kind (README.md, developer section:
// adding a job kind).
#include "kinds/elo/elo_kind.h"
#include "kinds/lhopt/lhopt_kind.h"

namespace lopt {

const JobKindRegistry& JobKinds() {
  static const JobKindRegistry* registry = new JobKindRegistry(JobKindRegistry::Create({
      &EloKind(),
      &LhoptKind(),
  }).value());
  return *registry;
}

}  // namespace lopt
