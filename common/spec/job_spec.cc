#include "common/spec/job_spec.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/spec/job_limits.h"
#include "common/spec/spec_checks.h"
#include "common/util/files.h"
#include "common/util/utf8.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace lopt {
namespace {

class CollectingErrors : public google::protobuf::io::ErrorCollector {
 public:
  explicit CollectingErrors(absl::string_view source) : source_(source) {}
  void AddError(int line, int column, const std::string& message) override {
    if (!first_.empty()) return;
    first_ = absl::StrFormat("%s:%d:%d: %s", source_, line + 1, column + 1,
                             message);
  }
  void AddWarning(int, int, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string source_;
  std::string first_;
};

}  // namespace

namespace spec {

absl::Status Invalid(std::string msg) {
  return absl::InvalidArgumentError(std::move(msg));
}

// Range checks that produce "field must be OP bound, got value".
absl::Status Positive(absl::string_view field, double v) {
  if (!(v > 0) || !std::isfinite(v))
    return Invalid(absl::StrCat(field, " must be > 0, got ", v));
  return absl::OkStatus();
}
absl::Status NonNegative(absl::string_view field, double v) {
  if (!(v >= 0) || !std::isfinite(v))
    return Invalid(absl::StrCat(field, " must be >= 0, got ", v));
  return absl::OkStatus();
}
absl::Status InRange(absl::string_view field, double v, double lo, double hi) {
  if (!(v >= lo && v <= hi))
    return Invalid(
        absl::StrCat(field, " must be in [", lo, ", ", hi, "], got ", v));
  return absl::OkStatus();
}
absl::Status OpenUnit(absl::string_view field, double v) {
  if (!(v > 0 && v < 1))
    return Invalid(absl::StrCat(field, " must be in (0, 1), got ", v));
  return absl::OkStatus();
}

namespace {

absl::Status ValidateDataDir(absl::string_view field, const std::string& dir) {
  if (dir.empty()) return Invalid(absl::StrCat(field, " must not be empty"));
  // What this host can tell (not /dev/zero); existence is checked at load.
  return ValidateDataPath(field, dir);
}

absl::Status ValidateActivation(absl::string_view field, v1::Activation a) {
  if (a == v1::ACTIVATION_UNSPECIFIED)
    return Invalid(absl::StrCat(field,
                                " must be one of RELU, TANH, GELU, SIGMOID"));
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTask(const v1::TaskSpec& t, absl::string_view prefix) {
  auto F = [&](absl::string_view rest) { return absl::StrCat(prefix, ".", rest); };
  switch (t.family_case()) {
    case v1::TaskSpec::kFmnistMlp: {
      const auto& m = t.fmnist_mlp();
      LOPT_CHECK(ValidateDataDir(F("fmnist_mlp.data_dir"), m.data_dir()));
      if (m.image_size() != 8 && m.image_size() != 28 &&
          m.image_size() != 14)
        return Invalid(absl::StrCat(
            F("fmnist_mlp.image_size must be 8, 14 or 28, got "),
            m.image_size()));
      for (int i = 0; i < m.hidden_sizes_size(); ++i)
        LOPT_CHECK(InRange(absl::StrCat(F("fmnist_mlp.hidden_sizes["), i, "]"),
                           m.hidden_sizes(i), 1, 65536));
      LOPT_CHECK(ValidateActivation(F("fmnist_mlp.activation"), m.activation()));
      LOPT_CHECK(InRange(F("fmnist_mlp.batch_size"), m.batch_size(), 1, 60000));
      break;
    }
    case v1::TaskSpec::kFmnistCnn: {
      const auto& c = t.fmnist_cnn();
      LOPT_CHECK(ValidateDataDir(F("fmnist_cnn.data_dir"), c.data_dir()));
      if (c.image_size() != 8 && c.image_size() != 28 && c.image_size() != 14)
        return Invalid(absl::StrCat(
            F("fmnist_cnn.image_size must be 8, 14 or 28, got "),
            c.image_size()));
      if (c.channels_size() == 0)
        return Invalid(F("fmnist_cnn.channels must not be empty"));
      for (int i = 0; i < c.channels_size(); ++i)
        LOPT_CHECK(InRange(absl::StrCat(F("fmnist_cnn.channels["), i, "]"),
                           c.channels(i), 1, 4096));
      LOPT_CHECK(ValidateActivation(F("fmnist_cnn.activation"), c.activation()));
      LOPT_CHECK(InRange(F("fmnist_cnn.batch_size"), c.batch_size(), 1, 60000));
      break;
    }
    case v1::TaskSpec::kFmnistResnet: {
      const auto& r = t.fmnist_resnet();
      LOPT_CHECK(ValidateDataDir(F("fmnist_resnet.data_dir"), r.data_dir()));
      if (r.image_size() != 8 && r.image_size() != 28 && r.image_size() != 14)
        return Invalid(absl::StrCat(
            F("fmnist_resnet.image_size must be 8, 14 or 28, got "), r.image_size()));
      if (r.channels_size() == 0)
        return Invalid(F("fmnist_resnet.channels must not be empty"));
      for (int i = 0; i < r.channels_size(); ++i)
        LOPT_CHECK(InRange(absl::StrCat(F("fmnist_resnet.channels["), i, "]"),
                           r.channels(i), 1, 4096));
      LOPT_CHECK(ValidateActivation(F("fmnist_resnet.activation"), r.activation()));
      LOPT_CHECK(InRange(F("fmnist_resnet.batch_size"), r.batch_size(), 1, 60000));
      break;
    }
    case v1::TaskSpec::kNoisyQuadratic: {
      const auto& q = t.noisy_quadratic();
      LOPT_CHECK(InRange(F("noisy_quadratic.min_dim"), q.min_dim(), 1, 1 << 24));
      if (q.max_dim() < q.min_dim())
        return Invalid(absl::StrCat(
            F("noisy_quadratic.max_dim must be >= min_dim ("), q.min_dim(),
            "), got ", q.max_dim()));
      LOPT_CHECK(InRange(F("noisy_quadratic.min_log10_condition"),
                         q.min_log10_condition(), 0, 12));
      if (!(q.max_log10_condition() >= q.min_log10_condition() &&
            q.max_log10_condition() <= 12))
        return Invalid(absl::StrCat(
            F("noisy_quadratic.max_log10_condition must be in [min_log10_condition, 12], got "),
            q.max_log10_condition()));
      LOPT_CHECK(NonNegative(F("noisy_quadratic.noise_stddev"), q.noise_stddev()));
      break;
    }
    case v1::TaskSpec::kByteLm: {
      const auto& b = t.byte_lm();
      LOPT_CHECK(ValidateDataDir(F("byte_lm.data_path"), b.data_path()));
      LOPT_CHECK(InRange(F("byte_lm.context_length"), b.context_length(), 1, 4096));
      LOPT_CHECK(InRange(F("byte_lm.model_dim"), b.model_dim(), 1, 4096));
      LOPT_CHECK(InRange(F("byte_lm.num_heads"), b.num_heads(), 1, 256));
      if (b.model_dim() % b.num_heads() != 0)
        return Invalid(absl::StrCat(F("byte_lm.num_heads ("), b.num_heads(),
                                    ") must divide model_dim (", b.model_dim(), ")"));
      LOPT_CHECK(InRange(F("byte_lm.num_layers"), b.num_layers(), 1, 64));
      LOPT_CHECK(InRange(F("byte_lm.batch_size"), b.batch_size(), 1, 65536));
      break;
    }
    case v1::TaskSpec::kNeumf: {
      const auto& n = t.neumf();
      if (n.data_path().empty())
        return Invalid(F("neumf.data_path must name a MovieLens ratings.dat file or a directory "
                         "holding one (`lopt gen-movielens --out DIR` writes a synthetic one)"));
      LOPT_CHECK(ValidateDataPath(F("neumf.data_path"), n.data_path()));
      LOPT_CHECK(InRange(F("neumf.num_users"), n.num_users(), 1, 1 << 24));
      LOPT_CHECK(InRange(F("neumf.num_items"), n.num_items(), 2, 1 << 24));
      LOPT_CHECK(InRange(F("neumf.gmf_dim"), n.gmf_dim(), 1, 4096));
      LOPT_CHECK(InRange(F("neumf.mlp_embedding_dim"), n.mlp_embedding_dim(), 1, 4096));
      if (n.mlp_layers_size() > 16)
        return Invalid(absl::StrCat(F("neumf.mlp_layers must have at most 16 layers, got "),
                                    n.mlp_layers_size()));
      for (int i = 0; i < n.mlp_layers_size(); ++i)
        LOPT_CHECK(InRange(absl::StrCat(F("neumf.mlp_layers["), i, "]"), n.mlp_layers(i), 1, 65536));
      LOPT_CHECK(ValidateActivation(F("neumf.activation"), n.activation()));
      LOPT_CHECK(InRange(F("neumf.negatives"), n.negatives(), 1, 1024));
      LOPT_CHECK(InRange(F("neumf.batch_size"), n.batch_size(), 1, 1 << 20));
      LOPT_CHECK(InRange(F("neumf.eval_negatives"), n.eval_negatives(), 1, 100000));
      if (n.eval_negatives() >= n.num_items())
        return Invalid(absl::StrCat(F("neumf.eval_negatives must be < num_items ("), n.num_items(),
                                    "): the test item is ranked among that many other items, got ",
                                    n.eval_negatives()));
      LOPT_CHECK(InRange(F("neumf.eval_users"), n.eval_users(), 0, n.num_users()));
      break;
    }
    case v1::TaskSpec::kSpeechCtc: {
      const auto& s = t.speech_ctc();
      if (s.data_path().empty())
        return Invalid(F("speech_ctc.data_path must name a corpus directory holding train_subdir "
                         "and test_subdir (`lopt gen-speech --out DIR` writes a synthetic one)"));
      LOPT_CHECK(ValidateDataPath(F("speech_ctc.data_path"), s.data_path()));
      for (auto [name, sub] : {std::pair<const char*, const std::string*>{"train_subdir", &s.train_subdir()},
                               {"test_subdir", &s.test_subdir()}}) {
        if (sub->empty() || sub->find('/') != std::string::npos || *sub == "." || *sub == "..")
          return Invalid(absl::StrCat(F("speech_ctc."), name,
                                      " must be one directory name under data_path (no '/'), got \"",
                                      *sub, "\""));
      }
      LOPT_CHECK(InRange(F("speech_ctc.sample_rate"), s.sample_rate(), 4000, 96000));
      LOPT_CHECK(InRange(F("speech_ctc.num_mel_bins"), s.num_mel_bins(), 4, 128));
      LOPT_CHECK(InRange(F("speech_ctc.max_frames"), s.max_frames(), 8, 10000));
      const std::string& a = s.alphabet();
      if (a.empty() || a.size() > 255)
        return Invalid(absl::StrCat(F("speech_ctc.alphabet must have 1 to 255 characters, got "),
                                    a.size()));
      for (size_t i = 0; i < a.size(); ++i) {
        const unsigned char c = a[i];
        if (c < 0x20 || c > 0x7e || (c >= 'A' && c <= 'Z'))
          return Invalid(absl::StrFormat(
              "%s must hold printable ASCII characters other than upper-case letters "
              "(transcripts are lower-cased), got byte 0x%02x at offset %d",
              F("speech_ctc.alphabet"), c, i));
        if (a.find(char(c)) != i)
          return Invalid(absl::StrFormat("%s has '%c' twice (offsets %d and %d)",
                                         F("speech_ctc.alphabet"), c, a.find(char(c)), i));
      }
      if (s.conv_channels_size() > 8)
        return Invalid(absl::StrCat(F("speech_ctc.conv_channels must have at most 8 layers, got "),
                                    s.conv_channels_size()));
      for (int i = 0; i < s.conv_channels_size(); ++i)
        LOPT_CHECK(InRange(absl::StrCat(F("speech_ctc.conv_channels["), i, "]"), s.conv_channels(i),
                           1, 1024));
      if (s.sequence_layer() == v1::SEQUENCE_LAYER_UNSPECIFIED)
        return Invalid(F("speech_ctc.sequence_layer must be GRU or CONV1D"));
      LOPT_CHECK(InRange(F("speech_ctc.num_sequence_layers"), s.num_sequence_layers(), 0, 16));
      LOPT_CHECK(InRange(F("speech_ctc.hidden_size"), s.hidden_size(), 1, 4096));
      LOPT_CHECK(ValidateActivation(F("speech_ctc.activation"), s.activation()));
      LOPT_CHECK(InRange(F("speech_ctc.batch_size"), s.batch_size(), 1, 65536));
      if (s.precision() == v1::PRECISION_UNSPECIFIED)
        return Invalid(F("speech_ctc.precision must be FP32, BF16 or FP16"));
      LOPT_CHECK(InRange(F("speech_ctc.loss_scale"), s.loss_scale(), 0, 1e30));
      if (s.loss_scale() != 0 && s.precision() != v1::FP16)
        return Invalid(absl::StrCat(F("speech_ctc.loss_scale applies to precision FP16 only, got "),
                                    s.loss_scale(), " with ", v1::Precision_Name(s.precision())));
      LOPT_CHECK(InRange(F("speech_ctc.eval_utterances"), s.eval_utterances(), 0, 1 << 24));
      break;
    }
    case v1::TaskSpec::FAMILY_NOT_SET:
      return Invalid(absl::StrCat(prefix,
                                  " must set one family: fmnist_mlp, fmnist_cnn, fmnist_resnet, "
                                  "noisy_quadratic, byte_lm, neumf or speech_ctc"));
  }
  if (t.has_augmentation() && t.augmentation().enabled()) {
    const auto& a = t.augmentation();
    const int image_size = t.has_fmnist_mlp()   ? t.fmnist_mlp().image_size()
                           : t.has_fmnist_cnn() ? t.fmnist_cnn().image_size()
                           : t.has_fmnist_resnet() ? t.fmnist_resnet().image_size()
                                                   : 0;
    if (image_size == 0)
      return Invalid(
          F("augmentation applies to the image families (fmnist_mlp, fmnist_cnn, "
            "fmnist_resnet) only; remove it or set augmentation.enabled: false"));
    LOPT_CHECK(InRange(F("augmentation.crop_padding"), a.crop_padding(), 0, image_size / 2));
    LOPT_CHECK(InRange(F("augmentation.max_translation"), a.max_translation(), 0,
                       image_size / 2));
  }
  if (t.parameterization() == v1::PARAMETERIZATION_UNSPECIFIED)
    return Invalid(absl::StrCat(F("parameterization must be STANDARD or MUP")));
  if (t.parameterization() == v1::MUP) {
    if (!t.has_fmnist_mlp())
      return Invalid(absl::StrCat(F("parameterization MUP is implemented for fmnist_mlp only")));
    LOPT_CHECK(InRange(F("mup_base_width"), t.mup_base_width(), 1, 1 << 20));
  }
  if (t.has_param_scale() && t.param_scale().enabled()) {
    const auto& s = t.param_scale();
    LOPT_CHECK(Positive(F("param_scale.min_scale"), s.min_scale()));
    if (!(s.max_scale() >= s.min_scale()) || !std::isfinite(s.max_scale()))
      return Invalid(absl::StrCat(
          F("param_scale.max_scale must be >= min_scale ("), s.min_scale(),
          "), got ", s.max_scale()));
  }
  return absl::OkStatus();
}

}  // namespace spec

using spec::InRange;
using spec::Invalid;
using spec::NonNegative;
using spec::Positive;
using spec::ValidateTask;

namespace {

void FillTaskDefaults(v1::TaskSpec* task) {
  if (task->family_case() == v1::TaskSpec::FAMILY_NOT_SET) task->mutable_fmnist_mlp();
  if (task->has_fmnist_mlp() && task->fmnist_mlp().hidden_sizes_size() == 0)
    task->mutable_fmnist_mlp()->add_hidden_sizes(32);
  if (task->has_fmnist_cnn() && task->fmnist_cnn().channels_size() == 0) {
    task->mutable_fmnist_cnn()->add_channels(8);
    task->mutable_fmnist_cnn()->add_channels(16);
  }
  if (task->has_neumf() && task->neumf().mlp_layers_size() == 0)
    for (int w : {32, 16, 8}) task->mutable_neumf()->add_mlp_layers(w);
  if (task->has_speech_ctc() && task->speech_ctc().conv_channels_size() == 0)
    for (int c : {16, 16}) task->mutable_speech_ctc()->add_conv_channels(c);
  if (task->has_fmnist_resnet() && task->fmnist_resnet().channels_size() == 0) {
    task->mutable_fmnist_resnet()->add_channels(16);
    task->mutable_fmnist_resnet()->add_channels(32);
  }
}

}  // namespace

std::vector<float> DefaultAdamwLrGrid() {
  return {1e-2f, 7e-3f, 4e-3f, 1e-3f, 7e-4f, 4e-4f, 1e-4f};
}

absl::Status CheckJobTextUtf8(absl::string_view text, absl::string_view source_name) {
  std::optional<size_t> bad = FirstInvalidUtf8(text);
  if (!bad) return absl::OkStatus();
  const absl::string_view before = text.substr(0, *bad);
  const size_t line = std::count(before.begin(), before.end(), '\n') + 1;
  const size_t nl = before.rfind('\n');
  const size_t column = *bad - (nl == absl::string_view::npos ? 0 : nl + 1) + 1;
  return Invalid(absl::StrFormat("%s:%d:%d: the job text is not valid UTF-8 (byte 0x%02x)",
                                 source_name, line, column,
                                 static_cast<unsigned char>(text[*bad])));
}

absl::StatusOr<v1::JobSpec> ParseJobText(absl::string_view text,
                                         absl::string_view source_name) {
  LOPT_CHECK(CheckJobTextUtf8(text, source_name));
  v1::JobSpec job;
  google::protobuf::TextFormat::Parser parser;
  CollectingErrors errors(source_name);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &job)) {
    return Invalid(errors.first().empty()
                       ? absl::StrCat(source_name, ": not a valid job spec")
                       : errors.first());
  }
  return job;
}

absl::StatusOr<v1::LearnedOptimizerSpec> MergeLoptOptions(const v1::LearnedOptimizerSpec& base,
                                                           absl::string_view text) {
  v1::LearnedOptimizerSpec extra;
  google::protobuf::TextFormat::Parser parser;
  CollectingErrors errors("--lopt-options");
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &extra))
    return Invalid(absl::StrCat(
        errors.first().empty() ? "--lopt-options: not a text LearnedOptimizerSpec" : errors.first(),
        " (e.g. 'warmup_fraction: 0.05 step_mult_schedule: COSINE')"));
  if (extra.has_hidden_size() && extra.hidden_size() != base.hidden_size())
    return Invalid("--lopt-options cannot change hidden_size: the trained theta has its shape");
  v1::LearnedOptimizerSpec merged = base;
  merged.MergeFrom(extra);
  // Checked as a job's lopt section is (its parameterisation is the file's).
  v1::JobSpec check;
  *check.mutable_lopt() = merged;
  check.mutable_task()->set_parameterization(merged.parameterization());
  if (merged.parameterization() == v1::MUP) {
    // A muLO's options are checked on the family muP is implemented for.
    check.mutable_task()->mutable_fmnist_mlp();
    check.mutable_task()->set_mup_base_width(128);
  } else {
    check.mutable_task()->mutable_noisy_quadratic();
  }
  if (absl::Status st = ValidateSharedSections(check); !st.ok())
    return Invalid(absl::StrCat("--lopt-options: ", st.message()));
  return merged;
}

void FillJobDefaults(v1::JobSpec* job) {
  // An ELO task distribution without a meta-test task meta-tests on its first entry.
  if (!job->has_task() && job->elo().tasks_size() > 0 && job->elo().tasks(0).has_task())
    *job->mutable_task() = job->elo().tasks(0).task();
  FillTaskDefaults(job->mutable_task());
  for (auto& c : *job->mutable_elo()->mutable_tasks())
    if (c.has_task()) FillTaskDefaults(c.mutable_task());
  if (job->has_lhopt())
    for (auto& c : *job->mutable_lhopt()->mutable_tasks())
      if (c.has_task()) FillTaskDefaults(c.mutable_task());
  if (job->eval().adamw_lrs_size() == 0)
    for (float lr : DefaultAdamwLrGrid()) job->mutable_eval()->add_adamw_lrs(lr);
}

absl::Status ValidateSharedSections(const v1::JobSpec& job) {
  if (job.name().empty()) return Invalid("name must not be empty");
  LOPT_CHECK(ValidateJobStrings(job));
  LOPT_CHECK(ValidateTask(job.task()));

  const auto& lo = job.lopt();
  LOPT_CHECK(InRange("lopt.hidden_size", lo.hidden_size(), 1, 1024));
  LOPT_CHECK(Positive("lopt.step_mult", lo.step_mult()));
  LOPT_CHECK(NonNegative("lopt.exp_mult", lo.exp_mult()));
  LOPT_CHECK(InRange("lopt.warmup_fraction", lo.warmup_fraction(), 0, 1));
  if (lo.step_mult_schedule() == v1::LR_SCHEDULE_UNSPECIFIED)
    return Invalid("lopt.step_mult_schedule must be CONSTANT or COSINE");
  LOPT_CHECK(NonNegative("lopt.min_step_mult", lo.min_step_mult()));
  LOPT_CHECK(NonNegative("lopt.weight_decay", lo.weight_decay()));
  if (lo.parameterization() == v1::PARAMETERIZATION_UNSPECIFIED)
    return Invalid("lopt.parameterization must be STANDARD or MUP");

  const auto& b = job.budget();
  if (b.outer_steps() <= 0)
    return Invalid(absl::StrCat("budget.outer_steps must be > 0, got ",
                                b.outer_steps()));
  LOPT_CHECK(NonNegative("budget.checkpoint_every", b.checkpoint_every()));
  LOPT_CHECK(NonNegative("budget.snapshot_every", b.snapshot_every()));

  const auto& e = job.eval();
  LOPT_CHECK(NonNegative("eval.steps", e.steps()));
  LOPT_CHECK(InRange("eval.seeds", e.seeds(), 1, 1024));
  for (int i = 0; i < e.adamw_lrs_size(); ++i)
    LOPT_CHECK(Positive(absl::StrCat("eval.adamw_lrs[", i, "]"), e.adamw_lrs(i)));
  LOPT_CHECK(NonNegative("eval.adamw_weight_decay", e.adamw_weight_decay()));
  LOPT_CHECK(InRange("eval.record_every", e.record_every(), 1, 1 << 30));
  LOPT_CHECK(InRange("eval.test_every", e.test_every(), 0, 1 << 30));

  const auto& c = job.cluster();
  LOPT_CHECK(InRange("cluster.shards", c.shards(), 1, 4096));
  LOPT_CHECK(InRange("cluster.results_per_step", c.results_per_step(), 0, 1 << 20));
  LOPT_CHECK(InRange("cluster.max_staleness", c.max_staleness(), 0, 1 << 20));
  return absl::OkStatus();
}

absl::Status ValidateJobWith(const v1::JobSpec& job, JobUse use, const KindSpecCheck& kind_check) {
  LOPT_CHECK(ValidateSharedSections(job));
  LOPT_CHECK(kind_check(job, use));
  // Last: the estimate assumes every field is in its range.
  if (use == JobUse::kMetaTrain) LOPT_CHECK(ValidateUnitSize(job));
  return absl::OkStatus();
}

absl::StatusOr<v1::JobSpec> JobFromTextWith(absl::string_view text, absl::string_view source_name,
                                            JobUse use, const KindSpecCheck& kind_check) {
  absl::StatusOr<v1::JobSpec> job = ParseJobText(text, source_name);
  if (!job.ok()) return job.status();
  FillJobDefaults(&*job);
  absl::Status s = ValidateJobWith(*job, use, kind_check);
  if (!s.ok())
    return absl::InvalidArgumentError(absl::StrCat(source_name, ": ", s.message()));
  return job;
}

namespace {

// Every set data_dir / data_path of `m` (under `prefix`), with its field path.
void CollectDataPaths(const google::protobuf::Message& m, const std::string& prefix,
                      std::vector<std::pair<std::string, std::string>>* out) {
  const auto* d = m.GetDescriptor();
  const auto* r = m.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    const std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    if (f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int k = 0; k < r->FieldSize(m, f); ++k)
          CollectDataPaths(r->GetRepeatedMessage(m, f, k), absl::StrCat(name, "[", k, "]"), out);
      } else if (r->HasField(m, f)) {
        CollectDataPaths(r->GetMessage(m, f), name, out);
      }
    } else if (!f->is_repeated() && f->cpp_type() == google::protobuf::FieldDescriptor::CPPTYPE_STRING &&
               (f->name() == "data_dir" || f->name() == "data_path")) {
      out->emplace_back(name, r->GetString(m, f));
    }
  }
}

}  // namespace

absl::Status CheckDataPathsExist(const v1::JobSpec& job) {
  std::vector<std::pair<std::string, std::string>> paths;
  CollectDataPaths(job, "", &paths);
  std::vector<std::string> missing;
  for (const auto& [field, path] : paths) {
    if (::access(path.c_str(), R_OK) == 0) continue;
    missing.push_back(absl::StrCat(field, " ", path, ": ", std::strerror(errno)));
  }
  if (missing.empty()) return absl::OkStatus();
  std::string msg = "data this host cannot read (lopt train and the workers read it):";
  for (const auto& m : missing) absl::StrAppend(&msg, "\n  ", m);
  return absl::NotFoundError(msg);
}

int64_t MetaTrainingHorizon(const v1::JobSpec& job) {
  return std::max(job.pes().max_unroll_length(), job.pes().curriculum_final_max_unroll_length());
}

int64_t MaxUnrollLengthAt(const v1::JobSpec& job, int64_t outer_step) {
  const auto& p = job.pes();
  const int64_t lo = p.max_unroll_length(), hi = p.curriculum_final_max_unroll_length();
  if (hi <= lo) return lo;
  const int64_t T = job.budget().outer_steps();
  const double frac = T <= 1 ? 1.0 : std::clamp(double(outer_step) / double(T - 1), 0.0, 1.0);
  return lo + int64_t(std::llround(frac * double(hi - lo)));
}

std::vector<int32_t> MixtureTaskCounts(const v1::JobSpec& job) {
  const auto& mix = job.elo().tasks();
  const int32_t T = job.pes().num_tasks();
  if (mix.empty()) return {T};
  const int n = mix.size();
  double total = 0;
  for (const auto& c : mix) total += c.weight();
  // One each, then the rest by largest remainder of the weights' shares.
  std::vector<int32_t> counts(n, 1);
  const int32_t rest = T - n;
  std::vector<std::pair<double, int>> remainders;
  int32_t given = 0;
  for (int i = 0; i < n; ++i) {
    const double share = rest * mix[i].weight() / total;
    const int32_t whole = int32_t(std::floor(share));
    counts[i] += whole;
    given += whole;
    remainders.push_back({-(share - whole), i});  // larger remainder first, then lower index
  }
  std::sort(remainders.begin(), remainders.end());
  for (int k = 0; given < rest; ++k, ++given) ++counts[remainders[k % n].second];
  return counts;
}

uint64_t SplitMix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t ShardSeed(const v1::JobSpec& job, int32_t shard) {
  if (shard == 0) return job.seed();
  return SplitMix64(job.seed() + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(shard + 1));
}

int64_t EvalSteps(const v1::JobSpec& job) {
  if (job.eval().steps() > 0) return job.eval().steps();
  return IsLhoptJob(job) ? job.lhopt().max_inner_steps() : 10 * MetaTrainingHorizon(job);
}

}  // namespace lopt
