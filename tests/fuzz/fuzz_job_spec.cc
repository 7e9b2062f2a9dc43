// The job text parser and validator: what `lopt validate`, `lopt train` and
// the learner's SubmitJob run on text from a user. Checks, beyond "no crash,
// no undefined behaviour": errors are INVALID_ARGUMENT with a message;
// FillJobDefaults is idempotent; a job that validates stays valid through
// the text and binary round trips the learner makes (it stores the binary
// spec and prints the text one), with an equal spec; the quantities derived
// from a valid job are in range (horizon, curriculum, mixture split, the
// unit's memory estimate under its cap).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/spec/job_limits.h"
#include "common/spec/job_spec.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/field_comparator.h"
#include "google/protobuf/util/message_differencer.h"
#include "kinds/elo/elo_spec.h"
#include "kinds/lhopt/lhopt_spec.h"
#include "tests/fuzz/fuzz_common.h"

using google::protobuf::util::MessageDifferencer;
using lopt::fuzz::CheckRefusal;

namespace {

// Equal specs, a NaN equal to a NaN: validation leaves the fields of a
// disabled section alone (param_scale's scales with enabled: false), and
// they may hold one.
bool Same(const lopt::v1::JobSpec& a, const lopt::v1::JobSpec& b) {
  google::protobuf::util::DefaultFieldComparator nan_equal;
  nan_equal.set_treat_nan_as_equal(true);
  MessageDifferencer d;
  d.set_field_comparator(&nan_equal);
  return d.Compare(a, b);
}

// The door's checks (kinds/job_door.h) with the kinds' own validators: the
// registry that picks them needs LibTorch, which this build goes without,
// so the kind is picked here by its section as the registry does.
absl::Status KindCheck(const lopt::v1::JobSpec& job, lopt::JobUse use) {
  return lopt::IsLhoptJob(job) ? lopt::ValidateLhoptSpec(job, use) : lopt::ValidateEloSpec(job, use);
}
absl::Status ValidateJob(const lopt::v1::JobSpec& job) {
  return lopt::ValidateJobWith(job, lopt::JobUse::kMetaTrain, KindCheck);
}
absl::StatusOr<lopt::v1::JobSpec> JobFromText(absl::string_view text, absl::string_view source) {
  return lopt::JobFromTextWith(text, source, lopt::JobUse::kMetaTrain, KindCheck);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = lopt::ParseJobText(text, "fuzz.textproto");
  if (!parsed.ok()) {
    CheckRefusal(parsed.status(), {absl::StatusCode::kInvalidArgument});
    FUZZ_CHECK(parsed.status().message().rfind("fuzz.textproto:", 0) == 0,
               "a syntax error must name the source: %s", parsed.status().ToString().c_str());
    return 0;
  }
  lopt::v1::JobSpec job = *parsed;
  lopt::FillJobDefaults(&job);
  lopt::v1::JobSpec twice = job;
  lopt::FillJobDefaults(&twice);
  FUZZ_CHECK(Same(job, twice), "FillJobDefaults is not idempotent");

  const absl::Status valid = ValidateJob(job);
  auto whole = JobFromText(text, "fuzz.textproto");
  FUZZ_CHECK(whole.ok() == valid.ok(), "JobFromText and Parse+Fill+Validate disagree: %s vs %s",
             whole.status().ToString().c_str(), valid.ToString().c_str());
  if (!valid.ok()) {
    CheckRefusal(valid, {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  FUZZ_CHECK(Same(job, *whole));

  // The learner stores the binary spec and shows the text one: both come
  // back as the same valid job.
  lopt::v1::JobSpec binary;
  FUZZ_CHECK(binary.ParseFromString(job.SerializeAsString()));
  FUZZ_CHECK(ValidateJob(binary).ok());
  std::string printed;
  FUZZ_CHECK(google::protobuf::TextFormat::PrintToString(job, &printed));
  auto again = JobFromText(printed, "printed");
  FUZZ_CHECK(again.ok(), "the printed text of a valid job is refused: %s\n%s",
             again.status().ToString().c_str(), printed.c_str());
  FUZZ_CHECK(Same(job, *again), "text round trip changed the job:\n%s",
             printed.c_str());

  // What every entry point derives from a valid job; from an ELO job, its
  // unrolls (ELO validates pes, which an LHOPT job does not use).
  if (!lopt::IsLhoptJob(job)) {
    const int64_t horizon = lopt::MetaTrainingHorizon(job);
    FUZZ_CHECK(horizon > 0, "horizon %lld", static_cast<long long>(horizon));
    const int64_t steps = job.budget().outer_steps();
    for (int64_t step : {int64_t{0}, steps / 2, steps > 0 ? steps - 1 : 0}) {
      const int64_t m = lopt::MaxUnrollLengthAt(job, step);
      FUZZ_CHECK(m >= job.pes().min_unroll_length() && m <= horizon,
                 "max unroll %lld at step %lld outside [min, horizon %lld]",
                 static_cast<long long>(m), static_cast<long long>(step),
                 static_cast<long long>(horizon));
    }
    int64_t total = 0;
    for (int32_t n : lopt::MixtureTaskCounts(job)) {
      FUZZ_CHECK(n >= 1, "a mixture entry without a PES task");
      total += n;
    }
    FUZZ_CHECK(total == job.pes().num_tasks(), "mixture split %lld of %d tasks",
               static_cast<long long>(total), job.pes().num_tasks());
  }
  FUZZ_CHECK(lopt::EvalSteps(job) > 0);
  const int64_t bytes = lopt::EstimateUnitBytes(job);
  FUZZ_CHECK(bytes > 0 && bytes <= lopt::kMaxUnitBytes, "unit estimate %lld",
             static_cast<long long>(bytes));
  return 0;
}
