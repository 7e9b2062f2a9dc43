// The job spec (proto/lopt/v1/job.proto): parsing job text, its defaults and
// the validation of the sections every job has. The door every job comes in
// by (ValidateJob, JobFromText, LoadJobFile) is kinds/job_door.h, which adds
// the job's kind's checks of its own sections. Every error names the field
// and the value so that a user can act on it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// The text of the job that `lopt train` runs when given none (README command
// 1): common/spec/default_job.textproto, embedded at build time.
const char* DefaultJobText();

// Job text is UTF-8: INVALID_ARGUMENT "<source>:<line>:<column>: the job
// text is not valid UTF-8 (byte 0xff)" otherwise. The services carry it in a
// proto3 string, which gRPC refuses to parse (INTERNAL, no message) when it is
// not UTF-8, so clients check before they send it.
absl::Status CheckJobTextUtf8(absl::string_view text, absl::string_view source_name);

// Parses a text proto. Syntax errors come back as INVALID_ARGUMENT with
// "<source>:<line>:<column>: <what>"; text that is not UTF-8 as
// CheckJobTextUtf8 says.
absl::StatusOr<v1::JobSpec> ParseJobText(absl::string_view text,
                                         absl::string_view source_name);

// What a job is validated for. A meta-training job's work unit (pes.num_tasks antithetic
// pairs of its task, batched) must fit a worker (ValidateUnitSize); a meta-test (`lopt eval`,
// `lopt schedule`) trains one optimizee of the task at a time, so a width-4096 MLP that no PES
// unit could hold is still a task it can test on.
enum class JobUse { kMetaTrain, kMetaTest };

// NOT_FOUND naming each data_dir / data_path field of the job (with its
// path and errno's text) that this host cannot read; `lopt validate` checks
// it, while the learner's door cannot (its workers may hold the data).
absl::Status CheckDataPathsExist(const v1::JobSpec& job);

// Fills what proto2 defaults cannot express (empty repeated fields) and
// selects fmnist_mlp when no task family is set. Idempotent.
void FillJobDefaults(v1::JobSpec* job);

// Validation, once, at the door: ValidateJob, JobFromText and LoadJobFile
// (kinds/job_door.h), which every entry point calls. A job's sections are of
// two sorts: those every job has (name, task, lopt, budget, eval, cluster),
// checked here, and its kind's own (ELO's pes, elo and outer; LHOPT's lhopt),
// checked by the kind (JobKind::ValidateSpec, kinds/<kind>/), which the door
// finds in the registry of kinds above common/. Every error is an
// INVALID_ARGUMENT naming the first offending field, e.g.
// "pes.truncation_length must be > 0, got -3".

// The sections every job has.
absl::Status ValidateSharedSections(const v1::JobSpec& job);

// A job kind's check of its own sections (JobKind::ValidateSpec), called on a
// spec whose shared sections are valid.
using KindSpecCheck = std::function<absl::Status(const v1::JobSpec&, JobUse)>;

// The door's checks, in order: the shared sections, `kind_check` (the job's
// kind's sections), then, for kMetaTrain, the unit's size (ValidateUnitSize).
// kinds/job_door.h's ValidateJob passes the kind the registry finds; code
// below the kinds that has no registry (the fuzz target) passes its own.
absl::Status ValidateJobWith(const v1::JobSpec& job, JobUse use, const KindSpecCheck& kind_check);

// Parse + FillJobDefaults + ValidateJobWith, errors prefixed with
// "<source_name>: " (kinds/job_door.h's JobFromText with the registry's kind).
absl::StatusOr<v1::JobSpec> JobFromTextWith(absl::string_view text, absl::string_view source_name,
                                            JobUse use, const KindSpecCheck& kind_check);

// A text LearnedOptimizerSpec (`--lopt-options`, e.g. ELO's inference
// schedule) merged into a trained optimizer's options and validated; errors
// name the line and column, or the field. hidden_size cannot change.
absl::StatusOr<v1::LearnedOptimizerSpec> MergeLoptOptions(const v1::LearnedOptimizerSpec& base,
                                                           absl::string_view text);

// The AdamW learning-rate grid of the ELO paper.
std::vector<float> DefaultAdamwLrGrid();

// Meta-training horizon: the longest unroll an inner state sees from a fresh
// start (pes.max_unroll_length, or the curriculum's final maximum).
int64_t MetaTrainingHorizon(const v1::JobSpec& job);

// The maximum unroll length at `outer_step`: pes.max_unroll_length, or with
// a curriculum (pes.curriculum_final_max_unroll_length > 0) linear from it at
// step 0 to the final maximum at step budget.outer_steps - 1.
int64_t MaxUnrollLengthAt(const v1::JobSpec& job, int64_t outer_step);

// How a shard's pes.num_tasks PES tasks are split over elo.tasks (the task
// distribution): one each, the rest in proportion to the weights by largest
// remainder (ties to the earlier entry). {num_tasks} without a distribution.
std::vector<int32_t> MixtureTaskCounts(const v1::JobSpec& job);

// The seed of a shard's unroller: shard 0 uses the job's seed, so that a
// one-shard job is the same run in local mode and on the services; the
// others get independent streams.
uint64_t ShardSeed(const v1::JobSpec& job, int32_t shard);

// SplitMix64's output mix: independent-looking seeds from (seed + k * odd constant).
uint64_t SplitMix64(uint64_t z);

// An LHOPT job (lhopt set) rather than an ELO one.
inline bool IsLhoptJob(const v1::JobSpec& job) { return job.has_lhopt(); }

// Meta-test length: eval.steps, or when 0 10x the horizon (ELO) or
// lhopt.max_inner_steps (LHOPT).
int64_t EvalSteps(const v1::JobSpec& job);

}  // namespace lopt
