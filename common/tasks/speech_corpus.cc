#include "common/tasks/speech_corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include <torch/torch.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/util/files.h"
#include "common/util/remove_tree.h"

namespace lopt {
namespace {

namespace fs = std::filesystem;

uint32_t Le32(const std::string& b, size_t at) {
  return uint32_t(uint8_t(b[at])) | uint32_t(uint8_t(b[at + 1])) << 8 |
         uint32_t(uint8_t(b[at + 2])) << 16 | uint32_t(uint8_t(b[at + 3])) << 24;
}
uint16_t Le16(const std::string& b, size_t at) {
  return uint16_t(uint8_t(b[at]) | uint8_t(b[at + 1]) << 8);
}
void PutLe32(std::string* b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b->push_back(char((v >> (8 * i)) & 0xff));
}
void PutLe16(std::string* b, uint16_t v) {
  b->push_back(char(v & 0xff));
  b->push_back(char(v >> 8));
}

// Corpora larger than this (features in float32) are refused at load.
constexpr double kMaxFeatureBytes = 4.0 * (int64_t{1} << 30);

}  // namespace

absl::StatusOr<WavAudio> ParseWav(const std::string& b, const std::string& source) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what,
                                                   "; speech_ctc reads 16-bit PCM mono WAV "
                                                   "(convert with e.g. `sox IN -b 16 -c 1 OUT.wav`)"));
  };
  if (b.size() < 12 || b.compare(0, 4, "RIFF") != 0 || b.compare(8, 4, "WAVE") != 0)
    return bad("not a RIFF/WAVE file");
  bool have_fmt = false;
  WavAudio a;
  size_t at = 12;
  while (at + 8 <= b.size()) {
    const std::string id = b.substr(at, 4);
    const uint64_t size = Le32(b, at + 4);
    const size_t body = at + 8;
    if (id == "fmt ") {
      if (size < 16 || body + size > b.size()) return bad("a truncated fmt chunk");
      uint16_t format = Le16(b, body);
      const uint16_t channels = Le16(b, body + 2);
      a.sample_rate = int32_t(Le32(b, body + 4));
      const uint16_t bits = Le16(b, body + 14);
      if (format == 0xFFFE) {  // WAVE_FORMAT_EXTENSIBLE: the sub-format's first 2 bytes
        if (size < 40) return bad("a truncated WAVE_FORMAT_EXTENSIBLE fmt chunk");
        format = Le16(b, body + 24);
      }
      if (format != 1)
        return bad(absl::StrCat("audio format ", format,
                                format == 3 ? " (IEEE float)" : "", ", not PCM (1)"));
      if (bits != 16) return bad(absl::StrCat(bits, "-bit samples, not 16-bit"));
      if (channels != 1) return bad(absl::StrCat(channels, " channels, not 1 (mono)"));
      if (a.sample_rate <= 0) return bad("a sample rate of 0");
      have_fmt = true;
    } else if (id == "data") {
      if (!have_fmt) return bad("a data chunk before the fmt chunk");
      // Streaming writers leave the size at 0 or 0xFFFFFFFF: the rest of the file.
      uint64_t n = (size == 0 || size == 0xFFFFFFFFu || body + size > b.size()) ? b.size() - body
                                                                                 : size;
      n &= ~uint64_t{1};
      a.samples.resize(n / 2);
      for (size_t i = 0; i < a.samples.size(); ++i) a.samples[i] = int16_t(Le16(b, body + 2 * i));
      return a;
    }
    at = body + size + (size & 1);
  }
  return bad(have_fmt ? "no data chunk" : "no fmt chunk");
}

absl::StatusOr<WavAudio> ReadWav(const std::string& path) {
  auto bytes = ReadFile(path, "WAV file");
  if (!bytes.ok()) return bytes.status();
  return ParseWav(*bytes, path);
}

std::string EncodeWav(const WavAudio& a) {
  std::string b = "RIFF";
  const uint32_t data = uint32_t(2 * a.samples.size());
  PutLe32(&b, 36 + data);
  b += "WAVEfmt ";
  PutLe32(&b, 16);
  PutLe16(&b, 1);
  PutLe16(&b, 1);
  PutLe32(&b, uint32_t(a.sample_rate));
  PutLe32(&b, uint32_t(a.sample_rate) * 2);
  PutLe16(&b, 2);
  PutLe16(&b, 16);
  b += "data";
  PutLe32(&b, data);
  for (int16_t s : a.samples) PutLe16(&b, uint16_t(s));
  return b;
}

FrameLayout FrameLayoutFor(int32_t sample_rate) {
  FrameLayout f;
  f.window = std::lround(0.025 * sample_rate);
  f.hop = std::lround(0.010 * sample_rate);
  f.n_fft = 1;
  while (f.n_fft < f.window) f.n_fft *= 2;
  return f;
}

int64_t NumFrames(int64_t samples, int32_t sample_rate) {
  const FrameLayout f = FrameLayoutFor(sample_rate);
  return 1 + std::max<int64_t>(0, samples - f.n_fft) / f.hop;
}

torch::Tensor MelFilterbank(int64_t n_fft, int32_t sample_rate, int64_t mel_bins) {
  auto mel = [](double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); };
  auto hz = [](double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); };
  const int64_t bins = n_fft / 2 + 1;
  std::vector<double> edges(mel_bins + 2);
  const double top = mel(sample_rate / 2.0);
  for (int64_t i = 0; i < mel_bins + 2; ++i) edges[i] = hz(top * double(i) / double(mel_bins + 1));
  torch::Tensor fb = torch::zeros({bins, mel_bins});
  auto w = fb.accessor<float, 2>();
  for (int64_t k = 0; k < bins; ++k) {
    const double f = double(k) * sample_rate / double(n_fft);
    for (int64_t m = 0; m < mel_bins; ++m) {
      const double lo = edges[m], mid = edges[m + 1], hi = edges[m + 2];
      double v = 0;
      if (f > lo && f <= mid) v = (f - lo) / (mid - lo);
      else if (f > mid && f < hi) v = (hi - f) / (hi - mid);
      w[k][m] = float(v);
    }
  }
  return fb;
}

torch::Tensor LogMelFeatures(const WavAudio& audio, int64_t mel_bins) {
  torch::NoGradGuard no_grad;
  const FrameLayout f = FrameLayoutFor(audio.sample_rate);
  const int64_t n = int64_t(audio.samples.size());
  torch::Tensor wave = torch::zeros({std::max(n, f.n_fft)});
  if (n > 0)
    wave.narrow(0, 0, n).copy_(
        torch::from_blob(const_cast<int16_t*>(audio.samples.data()), {n}, torch::kInt16)
            .to(torch::kFloat32)
            .div_(32768.0));
  torch::Tensor spec = torch::stft(wave, f.n_fft, f.hop, f.window, torch::hann_window(f.window),
                                   /*center=*/false, "reflect", /*normalized=*/false,
                                   /*onesided=*/true, /*return_complex=*/true);  // [bins, frames]
  torch::Tensor power = torch::view_as_real(spec).square().sum(-1);
  torch::Tensor mel = torch::matmul(power.transpose(0, 1),
                                    MelFilterbank(f.n_fft, audio.sample_rate, mel_bins));
  return (mel + 1e-6).log_();  // [frames, mel_bins]
}

absl::StatusOr<std::vector<int64_t>> EncodeTranscript(const std::string& text,
                                                      const std::string& alphabet,
                                                      const std::string& source) {
  std::vector<int64_t> ids;
  ids.reserve(text.size());
  for (char raw : text) {
    const char c = absl::ascii_tolower(raw);
    const size_t at = alphabet.find(c);
    if (at == std::string::npos)
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: the transcript \"%s\" has '%s' (byte 0x%02x), which is not in "
          "task.speech_ctc.alphabet \"%s\"",
          source, text, std::string(1, raw), uint8_t(raw), alphabet));
    ids.push_back(int64_t(at) + 1);
  }
  if (ids.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, ": an empty transcript"));
  return ids;
}

absl::StatusOr<std::vector<UtteranceFile>> ListUtterances(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat("speech_ctc: no directory ", dir));
  std::vector<std::string> lists;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const std::string p = it->path().string();
    if (it->is_regular_file(ec) && p.size() > 10 && p.compare(p.size() - 10, 10, ".trans.txt") == 0)
      lists.push_back(p);
  }
  if (ec) return absl::InvalidArgumentError(absl::StrCat("speech_ctc: cannot list ", dir, ": ", ec.message()));
  std::sort(lists.begin(), lists.end());
  std::vector<UtteranceFile> out;
  std::set<std::string> seen;
  for (const std::string& list : lists) {
    auto text = ReadFile(list, "transcript file");
    if (!text.ok()) return text.status();
    const std::string base = fs::path(list).parent_path().string();
    std::istringstream in(*text);
    std::string line;
    for (int64_t no = 1; std::getline(in, line); ++no) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      const size_t sp = line.find(' ');
      if (sp == 0 || sp == std::string::npos || sp + 1 >= line.size())
        return absl::InvalidArgumentError(absl::StrCat(
            list, ":", no, ": expected \"UTTERANCE-ID TRANSCRIPT\", got \"", line, "\""));
      UtteranceFile u;
      u.id = line.substr(0, sp);
      u.transcript = line.substr(sp + 1);
      if (u.id.find('/') != std::string::npos || u.id == "." || u.id == "..")
        return absl::InvalidArgumentError(
            absl::StrCat(list, ":", no, ": the utterance id \"", u.id, "\" is not a file name"));
      if (!seen.insert(u.id).second)
        return absl::InvalidArgumentError(
            absl::StrCat(list, ":", no, ": the utterance id ", u.id, " appears twice in ", dir));
      u.wav_path = absl::StrCat(base, "/", u.id, ".wav");
      out.push_back(std::move(u));
    }
  }
  if (out.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "speech_ctc: ", dir, " holds no utterances (no SPEAKER/CHAPTER/*.trans.txt lines)"));
  return out;
}

int64_t CtcMinFrames(const std::vector<int64_t>& labels) {
  int64_t n = int64_t(labels.size());
  for (size_t i = 1; i < labels.size(); ++i) n += labels[i] == labels[i - 1];
  return n;
}

namespace {

struct RawSplit {
  std::vector<torch::Tensor> features;  // [T_i, F] each
  std::vector<std::vector<int64_t>> labels;
  std::vector<std::string> ids;
};

absl::StatusOr<RawSplit> ReadSplit(const v1::SpeechCtcSpec& spec, const std::string& dir) {
  auto files = ListUtterances(dir);
  if (!files.ok()) return files.status();
  RawSplit r;
  double bytes = 0;
  for (const UtteranceFile& u : *files) {
    auto labels = EncodeTranscript(u.transcript, spec.alphabet(), u.wav_path);
    if (!labels.ok()) return labels.status();
    auto audio = ReadWav(u.wav_path);
    if (!audio.ok()) return audio.status();
    if (audio->sample_rate != spec.sample_rate())
      return absl::InvalidArgumentError(absl::StrCat(
          u.wav_path, ": sampled at ", audio->sample_rate, " Hz, not task.speech_ctc.sample_rate (",
          spec.sample_rate(), "); resample it (e.g. `sox IN -r ", spec.sample_rate(), " OUT.wav`) or set sample_rate"));
    const int64_t frames = NumFrames(int64_t(audio->samples.size()), audio->sample_rate);
    if (frames > spec.max_frames())
      return absl::InvalidArgumentError(absl::StrCat(
          u.wav_path, ": ", frames, " feature frames (", audio->samples.size() / double(audio->sample_rate),
          " s), more than task.speech_ctc.max_frames (", spec.max_frames(), ")"));
    const int64_t need = CtcMinFrames(*labels);
    if (CtcOutputFrames(frames) < need)
      return absl::InvalidArgumentError(absl::StrCat(
          u.wav_path, ": its transcript needs ", need, " CTC frames but its ", frames,
          " feature frames give the model ", CtcOutputFrames(frames), " (it strides 2 in time)"));
    bytes += 4.0 * frames * spec.num_mel_bins();
    if (bytes > kMaxFeatureBytes)
      return absl::InvalidArgumentError(absl::StrCat(
          "speech_ctc: the features of ", dir, " exceed ", kMaxFeatureBytes / double(1 << 30),
          " GiB; use fewer utterances"));
    r.features.push_back(LogMelFeatures(*audio, spec.num_mel_bins()));
    r.labels.push_back(*std::move(labels));
    r.ids.push_back(u.id);
  }
  return r;
}

SpeechSplit Pack(const RawSplit& r, const torch::Tensor& mean, const torch::Tensor& std_dev) {
  const int64_t n = int64_t(r.features.size()), f = mean.size(0);
  int64_t t_max = 0, l_max = 0;
  for (size_t i = 0; i < r.features.size(); ++i) {
    t_max = std::max(t_max, r.features[i].size(0));
    l_max = std::max(l_max, int64_t(r.labels[i].size()));
  }
  SpeechSplit s;
  s.features = torch::zeros({n, t_max, f});
  s.frames = torch::empty({n}, torch::kInt64);
  s.labels = torch::zeros({n, l_max}, torch::kInt64);
  s.label_lengths = torch::empty({n}, torch::kInt64);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = r.features[i].size(0), l = int64_t(r.labels[i].size());
    s.features[i].narrow(0, 0, t).copy_((r.features[i] - mean) / std_dev);
    s.frames[i] = t;
    s.labels[i].narrow(0, 0, l).copy_(torch::tensor(r.labels[i], torch::kInt64));
    s.label_lengths[i] = l;
  }
  s.ids = r.ids;
  return s;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SpeechCorpus>> LoadSpeechCorpus(const v1::SpeechCtcSpec& spec) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const SpeechCorpus>> cache;
  const std::string train_dir = absl::StrCat(spec.data_path(), "/", spec.train_subdir());
  const std::string test_dir = absl::StrCat(spec.data_path(), "/", spec.test_subdir());
  // The key: the data fields and both directories' transcript files' sizes
  // and modification times (a regenerated corpus is read again).
  std::string key = absl::StrCat(train_dir, "|", test_dir, "|", spec.sample_rate(), "|",
                                 spec.num_mel_bins(), "|", spec.max_frames(), "|", spec.alphabet());
  for (const std::string& d : {train_dir, test_dir}) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(d, ec); !ec && it != fs::recursive_directory_iterator();
         it.increment(ec)) {
      struct stat st;
      if (::stat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode))
        absl::StrAppend(&key, "|", it->path().string(), ":", int64_t(st.st_size), ":",
                        int64_t(st.st_mtim.tv_sec), ".", int64_t(st.st_mtim.tv_nsec));
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  auto train = ReadSplit(spec, train_dir);
  if (!train.ok()) return train.status();
  auto test = ReadSplit(spec, test_dir);
  if (!test.ok()) return test.status();
  torch::NoGradGuard no_grad;
  torch::Tensor all = torch::cat(train->features, 0);  // [frames, F]
  torch::Tensor mean = all.mean(0);
  torch::Tensor std_dev = all.std(0, /*unbiased=*/false).clamp_min(1e-3);
  auto c = std::make_shared<SpeechCorpus>();
  c->train = Pack(*train, mean, std_dev);
  c->test = Pack(*test, mean, std_dev);
  c->num_mel_bins = spec.num_mel_bins();
  c->alphabet = spec.alphabet();
  if (cache.size() >= 8) cache.clear();
  cache[key] = c;
  return std::shared_ptr<const SpeechCorpus>(c);
}

int64_t EditDistance(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int64_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = int64_t(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int64_t diag = row[0];
    row[0] = int64_t(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

double CharErrorRate(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  int64_t errors = 0, chars = 0;
  auto ids = [](const std::string& s) { return std::vector<int64_t>(s.begin(), s.end()); };
  for (size_t i = 0; i < refs.size(); ++i) {
    errors += EditDistance(ids(i < hyps.size() ? hyps[i] : std::string()), ids(refs[i]));
    chars += int64_t(refs[i].size());
  }
  return chars == 0 ? 0.0 : double(errors) / double(chars);
}

std::vector<int64_t> CtcGreedyCollapse(const int64_t* path, int64_t frames) {
  std::vector<int64_t> out;
  int64_t prev = -1;
  for (int64_t t = 0; t < frames; ++t) {
    if (path[t] != prev && path[t] != 0) out.push_back(path[t]);
    prev = path[t];
  }
  return out;
}

// ---------------------------------------------------------------------------
// The generator.

namespace {

const char* const kWords[] = {"zero", "one",  "two",   "three", "four", "five",  "six",
                              "seven", "eight", "nine", "yes",   "no",   "up",    "down",
                              "left",  "right", "on",   "off",   "stop", "go",    "forward",
                              "back",  "follow", "learn", "visual", "bed", "bird", "cat",
                              "dog",   "house"};

// Voices of the English espeak-ng voices with its male and female variants.
const char* const kVoices[] = {"en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-us+m7",
                               "en-gb+f1", "en-us+m2", "en-gb+f5", "en-us+m4", "en-gb+f3"};
const char* const kNoises[] = {"whitenoise", "pinknoise", "brownnoise"};

// Uniform in [0, n) from the 64-bit engine (std distributions differ
// between standard libraries; this does not).
uint64_t Below(std::mt19937_64& rng, uint64_t n) { return rng() % n; }
double Unit(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

bool OnPath(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string d = dirs.substr(start, end - start);
    if (d.empty()) d = ".";
    if (::access((d + "/" + program).c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

// Runs argv (argv[0] looked up on PATH), stdout to /dev/null, stderr
// captured; an error names the command and its stderr.
absl::Status RunProgram(const std::vector<std::string>& argv) {
  int err[2];
  if (::pipe(err) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    ::close(err[0]);
    const int devnull = ::open("/dev/null", O_RDWR);
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::dup2(err[1], 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    const std::string msg = absl::StrCat("cannot run ", argv[0], ": ", std::strerror(errno), "\n");
    (void)!::write(2, msg.data(), msg.size());
    ::_exit(127);
  }
  ::close(err[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (text.size() < 8192) text.append(buf, size_t(n));
  }
  ::close(err[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      "`", absl::StrJoin(argv, " "), "` ",
      WIFEXITED(status) ? absl::StrCat("exited with status ", WEXITSTATUS(status))
                        : absl::StrCat("was killed by signal ", WTERMSIG(status)),
      text.empty() ? "" : ": ", absl::StripAsciiWhitespace(text)));
}

}  // namespace

absl::Status ValidateSpeechGenOptions(const SpeechGenOptions& o) {
  if (o.utterances < 2 || o.utterances > 100000)
    return absl::InvalidArgumentError(
        absl::StrCat("--utterances must be in [2, 100000], got ", o.utterances));
  if (o.sample_rate < 4000 || o.sample_rate > 96000)
    return absl::InvalidArgumentError(
        absl::StrCat("--sample-rate must be in [4000, 96000], got ", o.sample_rate));
  if (o.max_words < 1 || o.max_words > 20)
    return absl::InvalidArgumentError(absl::StrCat("--max-words must be in [1, 20], got ", o.max_words));
  return absl::OkStatus();
}

absl::Status CheckSpeechGenPrograms() {
  for (const char* p : {"espeak-ng", "sox"})
    if (!OnPath(p))
      return absl::FailedPreconditionError(absl::StrCat(
          "lopt gen-speech needs ", p, ", which is not on PATH (Debian: apt-get install "
          "espeak-ng sox libsox-fmt-base)"));
  return absl::OkStatus();
}

absl::StatusOr<SpeechGenSummary> GenerateSpeechCorpus(const SpeechGenOptions& o,
                                                      const std::string& dir) {
  if (auto s = ValidateSpeechGenOptions(o); !s.ok()) return s;
  if (auto s = CheckSpeechGenPrograms(); !s.ok()) return s;
  const std::string tmp = absl::StrCat(dir, "/.gen-tmp");
  if (auto s = MakeDirs(tmp); !s.ok()) return s;
  std::mt19937_64 rng(o.seed * 0x9e3779b97f4a7c15ULL + 0x5350454543ULL);
  SpeechGenSummary sum;
  sum.speakers = std::max<int64_t>(2, std::min<int64_t>(10, o.utterances / 10));
  const int64_t test_speakers = (sum.speakers + 4) / 5;
  struct Speaker {
    std::string voice;
    int64_t speed, pitch;
  };
  std::vector<Speaker> speakers;
  const int64_t n_voices = int64_t(std::size(kVoices));
  const int64_t first_voice = int64_t(Below(rng, n_voices));
  for (int64_t s = 0; s < sum.speakers; ++s)
    speakers.push_back({kVoices[(first_voice + s) % n_voices], 140 + int64_t(Below(rng, 41)),
                        35 + int64_t(Below(rng, 31))});
  std::map<std::string, std::string> transcripts;  // trans.txt path -> lines
  const std::string raw = tmp + "/raw.wav", noise = tmp + "/noise.wav";
  for (int64_t u = 0; u < o.utterances; ++u) {
    const int64_t s = u % sum.speakers;
    const bool test = s >= sum.speakers - test_speakers;
    const Speaker& sp = speakers[s];
    const int64_t words = 1 + int64_t(Below(rng, uint64_t(o.max_words)));
    std::vector<std::string> text;
    for (int64_t w = 0; w < words; ++w) text.push_back(kWords[Below(rng, std::size(kWords))]);
    const int64_t speed = sp.speed - 15 + int64_t(Below(rng, 31));
    const int64_t pitch = std::clamp<int64_t>(sp.pitch - 10 + int64_t(Below(rng, 21)), 0, 99);
    const char* color = kNoises[Below(rng, std::size(kNoises))];
    const double level = 0.002 * std::pow(10.0, 1.2 * Unit(rng));  // 0.002 .. 0.032
    const std::string spk = absl::StrCat(100 + s), chapter = absl::StrCat(1000 + 10 * s);
    const std::string id = absl::StrFormat("%s-%s-%04d", spk, chapter, u / sum.speakers);
    const std::string out_dir =
        absl::StrCat(dir, "/", test ? "test" : "train", "/", spk, "/", chapter);
    if (auto st = MakeDirs(out_dir); !st.ok()) return st;
    const std::string sentence = absl::StrJoin(text, " ");
    if (auto st = RunProgram({"espeak-ng", "-v", sp.voice, "-s", absl::StrCat(speed), "-p",
                              absl::StrCat(pitch), "-w", raw, sentence});
        !st.ok())
      return st;
    auto spoken = ReadWav(raw);
    if (!spoken.ok()) return spoken.status();
    const double seconds = double(spoken->samples.size()) / spoken->sample_rate;
    if (auto st = RunProgram({"sox", "-R", "-n", "-r", absl::StrCat(spoken->sample_rate), "-c", "1",
                              "-b", "16", noise, "synth", absl::StrFormat("%.6f", seconds), color,
                              "vol", absl::StrFormat("%.5f", level)});
        !st.ok())
      return st;
    const std::string wav = absl::StrCat(out_dir, "/", id, ".wav");
    if (auto st = RunProgram({"sox", "-R", "-D", "-m", "-v", "1", raw, "-v", "1", noise, "-r",
                              absl::StrCat(o.sample_rate), "-b", "16", "-c", "1", "-e",
                              "signed-integer", wav});
        !st.ok())
      return st;
    absl::StrAppend(&transcripts[absl::StrCat(out_dir, "/", spk, "-", chapter, ".trans.txt")], id,
                    " ", absl::AsciiStrToUpper(sentence), "\n");
    (test ? sum.test_utterances : sum.train_utterances)++;
    sum.seconds += seconds;
  }
  for (const auto& [path, lines] : transcripts)
    if (auto st = WriteFileAtomically(path, lines); !st.ok()) return st;
  lopt::RemoveTree(tmp).IgnoreError();
  return sum;
}

}  // namespace lopt
