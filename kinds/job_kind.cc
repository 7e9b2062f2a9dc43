#include "kinds/job_kind.h"

#include <set>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/util/progress.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"
#include "kinds/local_driver.h"

namespace lopt {
namespace {

// The JobSpec field of a section, or null.
const google::protobuf::FieldDescriptor* SectionField(absl::string_view section) {
  return v1::JobSpec::descriptor()->FindFieldByName(std::string(section));
}

}  // namespace

absl::StatusOr<JobKindRegistry> JobKindRegistry::Create(std::vector<const JobKind*> kinds) {
  std::set<std::string> names, sections;
  std::set<int> units;
  const JobKind* default_kind = nullptr;
  for (const JobKind* k : kinds) {
    const std::string name(k->name());
    if (k->section().empty()) {
      if (default_kind != nullptr)
        return absl::InvalidArgumentError(absl::StrCat(
            "job kinds '", default_kind->name(), "' and '", name,
            "' both claim the jobs that set no kind's section; one default kind at most"));
      default_kind = k;
    } else {
      const auto* field = SectionField(k->section());
      if (field == nullptr || field->is_repeated() ||
          field->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE)
        return absl::InvalidArgumentError(
            absl::StrCat("job kind '", name, "': its section '", k->section(),
                         "' is not a message field of JobSpec (proto/lopt/v1/job.proto)"));
      if (!sections.insert(std::string(k->section())).second)
        return absl::InvalidArgumentError(absl::StrCat(
            "two job kinds claim the spec section '", k->section(), "' ('", name, "' the second)"));
    }
    if (k->unit_kinds().empty())
      return absl::InvalidArgumentError(
          absl::StrCat("job kind '", name, "' issues no unit kinds"));
    for (v1::Algorithm u : k->unit_kinds())
      if (u == v1::ALGORITHM_UNSPECIFIED || !units.insert(u).second)
        return absl::InvalidArgumentError(absl::StrCat(
            "job kind '", name, "': unit kind ", v1::Algorithm_Name(u),
            u == v1::ALGORITHM_UNSPECIFIED ? " is no unit kind" : " belongs to another kind"));
    // A unit kind no worker could run would wait for ever.
    for (v1::Algorithm u : k->unit_kinds())
      if (k->MakeRunner(u, UnitRunnerEnv{}) == nullptr)
        return absl::InvalidArgumentError(absl::StrCat(
            "job kind '", name, "' makes no runner for its unit kind ", v1::Algorithm_Name(u)));
    if (!names.insert(name).second)
      return absl::InvalidArgumentError(absl::StrCat("two job kinds are named '", name, "'"));
  }
  return JobKindRegistry(std::move(kinds));
}

absl::StatusOr<const JobKind*> JobKindRegistry::KindOf(const v1::JobSpec& spec) const {
  const JobKind* owner = nullptr;
  const JobKind* default_kind = nullptr;
  const auto* reflection = spec.GetReflection();
  for (const JobKind* k : kinds_) {
    if (k->section().empty()) {
      default_kind = k;
      continue;
    }
    if (!reflection->HasField(spec, SectionField(k->section()))) continue;
    if (owner != nullptr)
      return absl::InvalidArgumentError(absl::StrCat(
          "the job sets both ", owner->section(), " and ", k->section(),
          ": a job is of one kind (", owner->name(), " or ", k->name(), ")"));
    owner = k;
  }
  if (owner != nullptr) return owner;
  if (default_kind != nullptr) return default_kind;
  std::vector<std::string> sections;
  for (const JobKind* k : kinds_) sections.emplace_back(k->section());
  return absl::InvalidArgumentError(absl::StrCat(
      "no job kind owns this job: it sets none of the kinds' sections (",
      absl::StrJoin(sections, ", "), ")"));
}

const JobKind* JobKindRegistry::KindOfUnit(v1::Algorithm unit_kind) const {
  for (const JobKind* k : kinds_)
    for (v1::Algorithm u : k->unit_kinds())
      if (u == unit_kind) return k;
  return nullptr;
}

std::string JobKindRegistry::UnitKindNames() const {
  std::vector<std::string> names;
  for (const JobKind* k : kinds_)
    for (v1::Algorithm u : k->unit_kinds()) names.push_back(v1::Algorithm_Name(u));
  if (names.size() <= 1) return absl::StrJoin(names, "");
  const std::string last = names.back();
  names.pop_back();
  return absl::StrCat(absl::StrJoin(names, ", "), " and ", last);
}

std::unique_ptr<JobCore> MakeJobCore(const v1::JobSpec& spec, const JobCoreOptions& options) {
  auto kind = JobKinds().KindOf(spec);
  // Validated specs have a kind: ELO owns those that set no kind's section.
  if (!kind.ok()) throw std::invalid_argument(std::string(kind.status().message()));
  return (*kind)->MakeCore(spec, options);
}

absl::StatusOr<LocalTrainReport> JobKind::TrainLocal(const v1::JobSpec& spec,
                                                     const LocalTrainOptions& options) const {
  auto summary = RunLocal(*this, spec, options);
  if (!summary.ok()) return summary.status();
  return ReportLocalRun(spec, *summary);
}

LocalTrainReport JobKind::ReportLocalRun(const v1::JobSpec&, const LocalRunSummary& s) const {
  const std::string updates(updates_name());
  return FormatLocalReport(
      s, {updates, updates, absl::StrCat("what that ", step_name(), " trained"), "", ""});
}

LocalTrainReport JobKind::FormatLocalReport(const LocalRunSummary& s,
                                            const LocalReportWords& w) const {
  LocalTrainReport r;
  r.stopped_early = s.stopped_early;
  r.trained_file = s.trained_file;
  r.eval_flag = w.eval_flag;
  const std::string step(step_name());
  if (s.stopped_early) {
    r.message = absl::StrFormat(
        "stopped at %s %d of %d, checkpointed in %s (this run: %d %s, %s); %s holds %s; run the "
        "same command to resume\n",
        step, s.steps, s.total, s.checkpoint_path, s.steps_this_run, w.stopped_units,
        FormatDuration(s.wall_seconds), s.trained_file, w.trained_holds);
    return r;
  }
  std::string resumed;
  if (s.resumed_from > 0)
    resumed = absl::StrFormat(" after resuming at %s %d; %d of %d in %s in all", step,
                              s.resumed_from, s.steps, s.total, FormatDuration(s.total_wall_seconds));
  r.message = absl::StrFormat("trained %d %s in %s (%.0f inner particle-steps/s)%s\n%s%s: %s\n",
                              s.steps_this_run, w.trained_units, FormatDuration(s.wall_seconds),
                              s.particle_steps_per_second, resumed, w.details,
                              w.eval_flag.empty() ? "trained file" : w.eval_flag, s.trained_file);
  return r;
}

bool PlotRunMetrics(const v1::JobSpec& spec, const std::string& dir) {
  auto kind = JobKinds().KindOf(spec);
  return kind.ok() && (*kind)->PlotMetrics(spec, dir);
}

}  // namespace lopt
