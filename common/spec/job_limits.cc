#include "common/spec/job_limits.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/util/utf8.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace lopt {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

absl::Status CheckStrings(const Message& m, const std::string& prefix) {
  const auto* refl = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    const std::string name = prefix.empty() ? f->name() : absl::StrCat(prefix, ".", f->name());
    const int n = f->is_repeated() ? refl->FieldSize(m, f) : 1;
    for (int i = 0; i < n; ++i) {
      const std::string at = f->is_repeated() ? absl::StrCat(name, "[", i, "]") : name;
      if (f->type() == FieldDescriptor::TYPE_STRING) {
        std::string v = f->is_repeated() ? refl->GetRepeatedString(m, f, i) : refl->GetString(m, f);
        if (auto bad = FirstInvalidUtf8(v))
          return absl::InvalidArgumentError(absl::StrFormat(
              "%s is not valid UTF-8 (byte 0x%02x at offset %d)", at,
              static_cast<unsigned char>(v[*bad]), *bad));
      } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
        const Message& sub =
            f->is_repeated() ? refl->GetRepeatedMessage(m, f, i) : refl->GetMessage(m, f);
        if (auto s = CheckStrings(sub, at); !s.ok()) return s;
      }
    }
  }
  return absl::OkStatus();
}

const char* FileType(mode_t mode) {
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a directory";
  return "not a regular file";
}

std::string Bytes(double b) {
  if (b >= double(int64_t{1} << 30)) return absl::StrFormat("%.1f GiB", b / double(int64_t{1} << 30));
  return absl::StrFormat("%.1f MiB", b / double(1 << 20));
}

// Per particle: the task's parameters and its activations at its batch size
// (forward and backward), in floats; `fields` lists what sized them.
struct TaskSize {
  double params = 0;
  double activations = 0;
  std::string fields;
};

TaskSize SizeOf(const v1::TaskSpec& t, const std::string& prefix) {
  TaskSize z;
  switch (t.family_case()) {
    case v1::TaskSpec::kFmnistMlp: {
      const auto& m = t.fmnist_mlp();
      double in = double(m.image_size()) * m.image_size(), width = in;
      for (int h : m.hidden_sizes()) {
        z.params += in * h + h;
        width += h;
        in = h;
      }
      z.params += in * 10 + 10;
      z.activations = 3.0 * m.batch_size() * (width + 10);
      z.fields = absl::StrCat(prefix, ".fmnist_mlp.{image_size, hidden_sizes, batch_size}");
      break;
    }
    case v1::TaskSpec::kFmnistCnn: {
      const auto& c = t.fmnist_cnn();
      double side = c.image_size(), in_c = 1, width = side * side;
      for (int ch : c.channels()) {
        z.params += 9.0 * in_c * ch + ch;
        side = std::max(1.0, std::ceil(side / 2));
        width += ch * side * side;
        in_c = ch;
      }
      z.params += in_c * side * side * 10 + 10;
      z.activations = 3.0 * c.batch_size() * width;
      z.fields = absl::StrCat(prefix, ".fmnist_cnn.{image_size, channels, batch_size}");
      break;
    }
    case v1::TaskSpec::kFmnistResnet: {
      // The stem, then per stage two 3x3 convs (and a 1x1 projection after
      // the first stage), each with a group norm's scale and shift; stages
      // after the first halve the side.
      const auto& r = t.fmnist_resnet();
      double side = r.image_size(), in_c = r.channels_size() > 0 ? r.channels(0) : 0;
      z.params = 9.0 * in_c + 2 * in_c;
      double width = in_c * side * side;
      for (int s = 0; s < r.channels_size(); ++s) {
        const double c = r.channels(s);
        if (s > 0) side = std::max(1.0, std::ceil(side / 2));
        z.params += 9.0 * c * in_c + 9.0 * c * c + 4 * c;
        if (s > 0) z.params += c * in_c + 2 * c;
        width += (s > 0 ? 3 : 2) * c * side * side;
        in_c = c;
      }
      z.params += in_c * 10 + 10;
      z.activations = 3.0 * r.batch_size() * width;
      z.fields = absl::StrCat(prefix, ".fmnist_resnet.{image_size, channels, batch_size}");
      break;
    }
    case v1::TaskSpec::kNoisyQuadratic:
      z.params = t.noisy_quadratic().max_dim();
      z.activations = 4.0 * z.params;
      z.fields = absl::StrCat(prefix, ".noisy_quadratic.max_dim");
      break;
    case v1::TaskSpec::kByteLm: {
      const auto& b = t.byte_lm();
      const double d = b.model_dim(), ctx = b.context_length(), l = b.num_layers();
      z.params = 2 * 256 * d + ctx * d + l * 12 * d * d;
      z.activations = 3.0 * b.batch_size() * ctx * l * (16 * d + b.num_heads() * ctx);
      z.fields = absl::StrCat(prefix, ".byte_lm.{model_dim, context_length, num_layers, num_heads, batch_size}");
      break;
    }
    case v1::TaskSpec::kNeumf: {
      // The four embedding tables (their gradients are dense), the MLP
      // tower, the fusion layer; activations of batch x (1 + negatives)
      // pairs, and the test split's chunk (2^18 pairs over all particles,
      // counted as 2^16 a particle: exact at 4 particles, above it beyond).
      const auto& n = t.neumf();
      const double g = n.gmf_dim(), m = n.mlp_embedding_dim();
      z.params = (double(n.num_users()) + n.num_items()) * (g + m);
      double in = 2 * m, width = 3 * g + 4 * m;
      std::vector<double> layers(n.mlp_layers().begin(), n.mlp_layers().end());
      if (layers.empty()) layers = {32, 16, 8};
      for (double w : layers) {
        z.params += in * w + w;
        width += 2 * w;
        in = w;
      }
      z.params += g + in + 1;
      const double pairs = double(n.batch_size()) * (1.0 + n.negatives());
      z.activations = 3.0 * pairs * (width + 4) + double(1 << 16) * (width + 4);
      z.fields = absl::StrCat(prefix, ".neumf.{num_users, num_items, gmf_dim, mlp_embedding_dim, "
                                      "mlp_layers, batch_size, negatives}");
      break;
    }
    case v1::TaskSpec::kSpeechCtc: {
      // The 2-D convolutions (the first halves time, each halves
      // frequency), the sequence layers, the output layer; activations of a
      // batch padded to max_frames, kept for the backward pass (GRU: its
      // gates at every step), and the test split's chunk (as much again).
      const auto& s = t.speech_ctc();
      const double frames = s.max_frames(), out_frames = std::ceil(frames / 2);
      const double h = s.hidden_size(), classes = double(s.alphabet().size()) + 1;
      double in_c = 1, freq = s.num_mel_bins(), width = freq * frames;
      z.params = 0;
      for (int i = 0; i < s.conv_channels_size(); ++i) {
        const double c = s.conv_channels(i);
        z.params += 9.0 * c * in_c + c;
        freq = std::ceil(freq / 2);
        width += 2 * c * freq * out_frames;
        in_c = c;
      }
      double in = in_c * freq;
      for (int l = 0; l < s.num_sequence_layers(); ++l) {
        z.params += s.sequence_layer() == v1::CONV1D ? 5 * in * h + h : 3 * h * (in + h + 2);
        width += (s.sequence_layer() == v1::CONV1D ? 2 : 8) * h * out_frames;
        in = h;
      }
      z.params += in * classes + classes;
      width += 3 * classes * out_frames;
      z.activations = 2 * 3.0 * s.batch_size() * width;
      z.fields = absl::StrCat(prefix, ".speech_ctc.{max_frames, num_mel_bins, conv_channels, "
                                      "num_sequence_layers, hidden_size, batch_size}");
      break;
    }
    case v1::TaskSpec::FAMILY_NOT_SET:
      break;
  }
  return z;
}

// Floats a parameter needs besides itself: its gradient, the learned
// optimizer's accumulators and PES's perturbation (~16), and, for ELO, the
// learned optimizer's 39 features and two hidden layers, all at once.
constexpr double kStateFloatsPerParam = 16;
constexpr double kLoptFeatures = 39;

struct UnitSize {
  double bytes = 0;
  std::string fields;
};

UnitSize Estimate(const v1::JobSpec& job) {
  // (task, where it is in the spec, particles that run it)
  std::vector<std::tuple<v1::TaskSpec, std::string, double>> tasks;
  double per_param = kStateFloatsPerParam;
  std::string what;
  if (job.has_lhopt()) {
    what = "lhopt.particles";
    for (int i = 0; i < job.lhopt().tasks_size(); ++i)
      tasks.emplace_back(job.lhopt().tasks(i).task(), absl::StrCat("lhopt.tasks[", i, "].task"),
                         double(job.lhopt().particles()));
  } else {
    per_param += kLoptFeatures + 2.0 * job.lopt().hidden_size();
    what = "pes.num_tasks (x2 particles), lopt.hidden_size";
    const double T = job.pes().num_tasks();
    tasks.emplace_back(job.task(), "task", 2 * T);
    // A task distribution splits the PES tasks over its entries (one each,
    // the rest by weight: MixtureTaskCounts); its unroll holds them all at
    // once. Bounded here by rounding each entry's share up.
    const auto& mix = job.elo().tasks();
    double total = 0;
    for (const auto& c : mix) total += std::max(0.0, double(c.weight()));
    const double rest = std::max(0.0, T - mix.size());
    for (int i = 0; i < mix.size(); ++i) {
      const double n = total > 0 ? 1 + std::ceil(rest * std::max(0.0, double(mix[i].weight())) / total) : T;
      tasks.emplace_back(mix[i].task(), absl::StrCat("elo.tasks[", i, "].task"), 2 * n);
    }
  }
  UnitSize best, mixture;
  for (size_t k = 0; k < tasks.size(); ++k) {
    const auto& [t, prefix, particles] = tasks[k];
    TaskSize z = SizeOf(t, prefix);
    const double bytes = 4.0 * particles * (z.params * per_param + z.activations);
    if (k == 0 || job.has_lhopt()) {
      // The one task (or LHOPT's largest: its particles run one task at a time).
      if (bytes > best.bytes) best = {bytes, absl::StrCat(what, ", ", z.fields)};
    } else {
      mixture.bytes += bytes;
      absl::StrAppend(&mixture.fields, mixture.fields.empty() ? "" : ", ", z.fields);
    }
  }
  if (mixture.bytes > best.bytes)
    best = {mixture.bytes, absl::StrCat(what, ", elo.tasks' weights, ", mixture.fields)};
  return best;
}

}  // namespace

absl::Status ValidateJobStrings(const v1::JobSpec& job) {
  if (job.name().size() > kMaxJobNameBytes)
    return absl::InvalidArgumentError(absl::StrCat("name must be at most ", kMaxJobNameBytes,
                                                   " bytes, got ", job.name().size()));
  return CheckStrings(job, "");
}

absl::Status ValidateDataPath(absl::string_view field, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return absl::OkStatus();  // maybe on the workers' hosts
  if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(
        field, " must be a regular file or a directory of them, got ", path, ": ",
        FileType(st.st_mode)));
  if (S_ISREG(st.st_mode) && st.st_size > kMaxDataBytes)
    return absl::InvalidArgumentError(absl::StrCat(field, " ", path, " has ", st.st_size,
                                                   " bytes, more than the ", kMaxDataBytes,
                                                   " a task may read"));
  return absl::OkStatus();
}

absl::Status CheckDataFile(const std::string& path, int64_t max_bytes) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", FileType(st.st_mode), ", not a regular file of data"));
  if (st.st_size > max_bytes)
    return absl::InvalidArgumentError(absl::StrCat(path, " has ", st.st_size,
                                                   " bytes, more than the ", max_bytes,
                                                   " a task may read"));
  return absl::OkStatus();
}

int64_t EstimateUnitBytes(const v1::JobSpec& job) {
  return static_cast<int64_t>(std::min(Estimate(job).bytes, 9e18));
}

absl::Status ValidateUnitSize(const v1::JobSpec& job) {
  UnitSize u = Estimate(job);
  if (u.bytes <= double(kMaxUnitBytes)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "one work unit of this job would need about ", Bytes(u.bytes), " of memory, more than the ",
      Bytes(double(kMaxUnitBytes)), " a worker is allowed; it is sized by ", u.fields,
      ": make them smaller"));
}

int64_t UnitParticles(const v1::JobSpec& job) {
  return job.has_lhopt() ? int64_t{job.lhopt().particles()} : 2 * int64_t{job.pes().num_tasks()};
}

std::string WhyWorkerCannotHold(int64_t memory_bytes, int64_t max_particles,
                                const v1::JobSpec& job) {
  // A worker with no limits holds anything (NextUnit asks for every unit).
  if (max_particles <= 0 && memory_bytes <= 0) return "";
  const int64_t particles = UnitParticles(job);
  if (max_particles > 0 && particles > max_particles)
    return absl::StrCat("a unit has ", particles, " particles, the worker takes at most ",
                        max_particles, " (--max-particles)");
  const int64_t bytes = EstimateUnitBytes(job);
  if (memory_bytes > 0 && bytes > memory_bytes)
    return absl::StrCat("a unit needs about ", Bytes(double(bytes)), " of memory, the worker has ",
                        Bytes(double(memory_bytes)), " (--memory)");
  return "";
}

}  // namespace lopt
