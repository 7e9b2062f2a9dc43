// The speech_ctc task family (issue 16): WAV and log-mel features, the
// LibriSpeech-like loader and its refusals, CTC against a brute-force sum
// over alignments and LibTorch's reference, CER and greedy decoding,
// particle batching, mixed precision, the generator (espeak-ng + sox), the
// door, the meta-test and an LHOPT mixture.
#include "common/tasks/speech_ctc_task.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/elo_unroller.h"
#include "common/elo/evaluation.h"
#include "common/elo/replay_buffer.h"
#include "common/elo/small_fc_lopt.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/spec/job_limits.h"
#include "common/tasks/speech_corpus.h"
#include "common/tasks/task.h"
#include "common/util/files.h"
#include "common/util/remove_tree.h"
#include "google/protobuf/text_format.h"
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

namespace fs = std::filesystem;

// The process' own temporary directory (mkdtemp), removed at exit.
const std::string& TempDir() {
  static const std::string dir = [] {
    std::string t = (fs::temp_directory_path() / "lopt_speech_XXXXXX").string();
    EXPECT_NE(::mkdtemp(t.data()), nullptr);
    return t;
  }();
  return dir;
}
struct RemoveTempDir : public ::testing::Environment {
  void TearDown() override { lopt::RemoveTree(TempDir()).IgnoreError(); }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new RemoveTempDir);

bool HaveProgram(const std::string& name) {
  return std::system(absl::StrCat("command -v ", name, " >/dev/null 2>&1").c_str()) == 0;
}

// ---------------------------------------------------------------- a tone corpus

// A hand-made corpus that needs no espeak-ng: each character of "abc " is a
// tone (a 500 Hz, b 1100 Hz, c 2300 Hz, space silence) of 80 ms, so the
// transcript is learnable from the features.
WavAudio Tones(const std::string& text, int32_t rate, uint32_t seed) {
  WavAudio a;
  a.sample_rate = rate;
  const int64_t per = rate * 8 / 100;
  uint32_t x = seed * 2654435761u + 1;
  for (char ch : text) {
    const double f = ch == 'a' ? 500 : ch == 'b' ? 1100 : ch == 'c' ? 2300 : 0;
    for (int64_t i = 0; i < per; ++i) {
      x = x * 1664525u + 1013904223u;
      const double noise = (double(x >> 8) / double(1 << 24) - 0.5) * 0.02;
      const double v = (f > 0 ? 0.4 * std::sin(2 * M_PI * f * double(i) / rate) : 0) + noise;
      a.samples.push_back(int16_t(std::lround(v * 32767)));
    }
  }
  return a;
}

void WriteUtterances(const std::string& split_dir, const std::vector<std::string>& texts,
                     int32_t rate = 16000) {
  const std::string dir = absl::StrCat(split_dir, "/7/70");
  ASSERT_TRUE(MakeDirs(dir).ok());
  std::string list;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string id = absl::StrCat("7-70-", 1000 + i);
    ASSERT_TRUE(WriteFileAtomically(absl::StrCat(dir, "/", id, ".wav"),
                                    EncodeWav(Tones(texts[i], rate, uint32_t(i))))
                    .ok());
    absl::StrAppend(&list, id, " ", texts[i], "\n");
  }
  ASSERT_TRUE(WriteFileAtomically(absl::StrCat(dir, "/7-70.trans.txt"), list).ok());
}

std::string ToneCorpus() {
  static const std::string dir = [] {
    const std::string d = TempDir() + "/tones";
    std::vector<std::string> train, test;
    const char* words[] = {"ab", "ba", "cab", "a c", "bc", "acb", "b a", "ca", "abc", "cb"};
    for (int i = 0; i < 30; ++i) train.push_back(words[i % 10]);
    for (int i = 0; i < 6; ++i) test.push_back(words[(3 * i + 1) % 10]);
    WriteUtterances(d + "/train", train);
    WriteUtterances(d + "/test", test);
    return d;
  }();
  return dir;
}

v1::SpeechCtcSpec ToneSpec() {
  v1::SpeechCtcSpec s;
  s.set_data_path(ToneCorpus());
  s.set_alphabet("abc ");
  s.set_num_mel_bins(16);
  s.set_max_frames(40);
  s.add_conv_channels(4);
  s.add_conv_channels(4);
  s.set_hidden_size(12);
  s.set_batch_size(4);
  return s;
}

std::unique_ptr<Task> MakeSpeechTask(const v1::SpeechCtcSpec& spec) {
  v1::TaskSpec t;
  *t.mutable_speech_ctc() = spec;
  auto task = MakeTask(t, 0, torch::kCPU);
  EXPECT_TRUE(task.ok()) << task.status();
  return task.ok() ? *std::move(task) : nullptr;
}

// ---------------------------------------------------------------- WAV, features

TEST(SpeechWav, RoundTripsAndRefusesOtherFormats) {
  WavAudio a;
  a.sample_rate = 8000;
  a.samples = {0, 1, -1, 32767, -32768, 1234};
  auto back = ParseWav(EncodeWav(a), "x.wav");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->sample_rate, 8000);
  EXPECT_EQ(back->samples, a.samples);
  auto refused = [](std::string bytes, const std::string& what) {
    auto r = ParseWav(bytes, "bad.wav");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(r.status().message().find("bad.wav: " + what), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find("16-bit PCM mono"), std::string::npos) << r.status();
  };
  std::string wav = EncodeWav(a);
  std::string f = wav;
  f[20] = 3;  // IEEE float
  refused(f, "audio format 3 (IEEE float), not PCM");
  std::string stereo = wav;
  stereo[22] = 2;
  refused(stereo, "2 channels, not 1");
  std::string eight = wav;
  eight[34] = 8;
  refused(eight, "8-bit samples, not 16-bit");
  refused("RIFF\0\0\0\0WAVX", "not a RIFF/WAVE file");
  refused(wav.substr(0, 30), "a truncated fmt chunk");
  refused(wav.substr(0, 36), "no data chunk");
}

TEST(SpeechFeatures, FramesAndAToneLandsInItsMelBand) {
  EXPECT_EQ(FrameLayoutFor(16000).window, 400);
  EXPECT_EQ(FrameLayoutFor(16000).hop, 160);
  EXPECT_EQ(FrameLayoutFor(16000).n_fft, 512);
  EXPECT_EQ(NumFrames(16000, 16000), 1 + (16000 - 512) / 160);
  EXPECT_EQ(NumFrames(10, 16000), 1);
  // The filterbank: triangles that sum to ~1 between the first and last
  // centre, and 0 above Nyquist's last edge.
  torch::Tensor fb = MelFilterbank(512, 16000, 20);
  EXPECT_EQ(fb.sizes(), torch::IntArrayRef({257, 20}));
  EXPECT_NEAR(fb.sum(1).slice(0, 40, 200).mean().item<double>(), 1.0, 0.05);
  for (double hz : {500.0, 1100.0, 2300.0}) {
    WavAudio a;
    a.sample_rate = 16000;
    for (int i = 0; i < 8000; ++i) a.samples.push_back(int16_t(10000 * std::sin(2 * M_PI * hz * i / 16000)));
    torch::Tensor m = LogMelFeatures(a, 20);
    ASSERT_EQ(m.sizes(), torch::IntArrayRef({NumFrames(8000, 16000), 20}));
    // The loudest band is the one whose triangle weighs the tone's bin most.
    const int64_t bin = std::lround(hz * 512 / 16000);
    EXPECT_EQ(m.mean(0).argmax().item<int64_t>(), fb[bin].argmax().item<int64_t>()) << hz;
  }
}

TEST(SpeechText, TranscriptsAreLowerCasedAndCheckedAgainstTheAlphabet) {
  auto ids = EncodeTranscript("Ab C", "abc ", "u1");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int64_t>{1, 2, 4, 3}));
  auto bad = EncodeTranscript("ab3", "abc ", "u1.wav");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("u1.wav: the transcript \"ab3\" has '3'"), std::string::npos)
      << bad.status();
  EXPECT_EQ(EncodeTranscript("", "abc ", "u").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CtcMinFrames({1, 1, 2, 2, 2, 3}), 9);
}

// ---------------------------------------------------------------- CER, decoding

TEST(SpeechMetrics, CharErrorRateOnHandMadeStrings) {
  EXPECT_DOUBLE_EQ(CharErrorRate({"kitten"}, {"sitting"}), 3.0 / 7);  // 2 substitutions, 1 insertion
  EXPECT_DOUBLE_EQ(CharErrorRate({"abc"}, {"abc"}), 0.0);
  EXPECT_DOUBLE_EQ(CharErrorRate({""}, {"four"}), 1.0);       // all deleted
  EXPECT_DOUBLE_EQ(CharErrorRate({"one two"}, {"one"}), 4.0 / 3);  // insertions count: CER > 1
  // Summed over utterances, not averaged: (1 + 0) / (4 + 1).
  EXPECT_DOUBLE_EQ(CharErrorRate({"nune", "a"}, {"nine", "a"}), 1.0 / 5);
  EXPECT_EQ(EditDistance({1, 2, 3}, {3, 2, 1}), 2);
  EXPECT_EQ(EditDistance({}, {5, 5}), 2);
}

TEST(SpeechMetrics, GreedyDecodingMergesRepeatsThenDropsBlanks) {
  const int64_t path[] = {1, 1, 0, 1, 2, 2, 0, 0, 3, 3};
  EXPECT_EQ(CtcGreedyCollapse(path, 10), (std::vector<int64_t>{1, 1, 2, 3}));
  EXPECT_EQ(CtcGreedyCollapse(path, 3), (std::vector<int64_t>{1}));  // only the valid frames
  const int64_t blanks[] = {0, 0, 0};
  EXPECT_TRUE(CtcGreedyCollapse(blanks, 3).empty());
}

// ---------------------------------------------------------------- CTC

// -log of the summed probability of every frame-level path that collapses
// to `target` (merge repeats, drop blanks): CTC's definition, enumerated.
double BruteForceCtc(const torch::Tensor& logp /*[T, C]*/, const std::vector<int64_t>& target, int64_t T) {
  const int64_t C = logp.size(1);
  double total = 0;
  std::vector<int64_t> path(T, 0);
  int64_t count = 1;
  for (int64_t t = 0; t < T; ++t) count *= C;
  for (int64_t code = 0; code < count; ++code) {
    int64_t c = code;
    double lp = 0;
    for (int64_t t = 0; t < T; ++t) {
      path[t] = c % C;
      c /= C;
      lp += logp[t][path[t]].item<double>();
    }
    if (CtcGreedyCollapse(path.data(), T) == target) total += std::exp(lp);
  }
  return -std::log(total);
}

TEST(SpeechCtc, LossMatchesABruteForceSumAndLibTorchsMeanReduction) {
  torch::manual_seed(5);
  const int64_t P = 2, B = 2, T = 5, C = 3, L = 3;
  torch::Tensor logp = torch::log_softmax(torch::randn({P, B, T, C}, torch::kFloat64), -1);
  torch::Tensor targets = torch::tensor({1, 2, 0, 1, 1, 2, 2, 0, 0, 2, 1, 2}, torch::kInt64).view({P, B, L});
  torch::Tensor tgt_len = torch::tensor({2, 3, 1, 3}, torch::kInt64).view({P, B});
  torch::Tensor in_len = torch::tensor({5, 5, 4, 5}, torch::kInt64).view({P, B});
  torch::Tensor loss = CtcLossPerParticle(logp, targets, in_len, tgt_len);
  ASSERT_EQ(loss.sizes(), torch::IntArrayRef({P}));
  for (int64_t p = 0; p < P; ++p) {
    double want = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t l = tgt_len[p][b].item<int64_t>();
      std::vector<int64_t> tgt;
      for (int64_t i = 0; i < l; ++i) tgt.push_back(targets[p][b][i].item<int64_t>());
      want += BruteForceCtc(logp[p][b], tgt, in_len[p][b].item<int64_t>()) / double(l) / B;
    }
    EXPECT_NEAR(loss[p].item<double>(), want, 1e-9) << p;
    // LibTorch's 'mean' reduction: each loss over its target length, averaged.
    torch::Tensor ref = torch::ctc_loss(logp[p].transpose(0, 1), targets[p], in_len[p], tgt_len[p], 0,
                                        at::Reduction::Mean);
    EXPECT_NEAR(loss[p].item<double>(), ref.item<double>(), 1e-9) << p;
  }
}

// ---------------------------------------------------------------- the loader

TEST(SpeechCorpus, LoadsALibriSpeechLayoutPaddedAndNormalised) {
  v1::SpeechCtcSpec spec = ToneSpec();
  auto c = LoadSpeechCorpus(spec);
  ASSERT_TRUE(c.ok()) << c.status();
  const SpeechSplit& tr = (*c)->train;
  ASSERT_EQ(tr.features.size(0), 30);
  EXPECT_EQ((*c)->test.features.size(0), 6);
  EXPECT_EQ(tr.features.size(2), 16);
  EXPECT_EQ(tr.ids[0], "7-70-1000");
  // "cab": 3 x 80 ms = 3840 samples -> 22 frames; labels c a b = 3 1 2.
  EXPECT_EQ(tr.frames[2].item<int64_t>(), NumFrames(3840, 16000));
  EXPECT_EQ(tr.features.size(1), tr.frames.max().item<int64_t>());
  EXPECT_EQ(tr.label_lengths[2].item<int64_t>(), 3);
  EXPECT_TRUE(torch::equal(tr.labels[2].slice(0, 0, 3), torch::tensor({3, 1, 2}, torch::kInt64)));
  // Normalised over the training frames: mean ~0, std ~1 per band.
  std::vector<torch::Tensor> valid;
  for (int64_t i = 0; i < 30; ++i) valid.push_back(tr.features[i].slice(0, 0, tr.frames[i].item<int64_t>()));
  torch::Tensor all = torch::cat(valid);
  EXPECT_LT(all.mean(0).abs().max().item<double>(), 1e-4);
  EXPECT_NEAR(all.std(0, false).mean().item<double>(), 1.0, 1e-3);
  // Padding stays zero.
  EXPECT_EQ(tr.features[0].slice(0, tr.frames[0].item<int64_t>()).abs().sum().item<double>(), 0.0);
  // Cached: the same spec gives the same corpus object.
  EXPECT_EQ(LoadSpeechCorpus(spec)->get(), c->get());
}

TEST(SpeechCorpus, RefusesBadDataNamingTheFile) {
  const std::string root = TempDir() + "/bad";
  auto expect = [&](const std::string& sub, const std::function<void(v1::SpeechCtcSpec*)>& edit,
                    absl::StatusCode code, const std::string& message) {
    v1::SpeechCtcSpec spec = ToneSpec();
    spec.set_data_path(root + "/" + sub);
    edit(&spec);
    auto c = LoadSpeechCorpus(spec);
    EXPECT_EQ(c.status().code(), code) << sub << ": " << c.status();
    EXPECT_NE(c.status().message().find(message), std::string::npos) << c.status() << "\nwanted: " << message;
  };
  WriteUtterances(root + "/ok/train", {"ab"});
  WriteUtterances(root + "/ok/test", {"ba"});
  expect("ok", [](v1::SpeechCtcSpec* s) { s->set_sample_rate(8000); }, absl::StatusCode::kInvalidArgument,
         "sampled at 16000 Hz, not task.speech_ctc.sample_rate (8000)");
  expect("ok", [](v1::SpeechCtcSpec* s) { s->set_alphabet("a "); }, absl::StatusCode::kInvalidArgument,
         "has 'b' (byte 0x62), which is not in task.speech_ctc.alphabet");
  expect("ok", [](v1::SpeechCtcSpec* s) { s->set_max_frames(8); }, absl::StatusCode::kInvalidArgument,
         "more than task.speech_ctc.max_frames (8)");
  expect("ok", [](v1::SpeechCtcSpec* s) { s->set_test_subdir("dev"); }, absl::StatusCode::kNotFound,
         "no directory " + root + "/ok/dev");
  // A transcript longer than the audio can carry after the time stride.
  WriteUtterances(root + "/short/train", {"a"});
  WriteUtterances(root + "/short/test", {"a"});
  ASSERT_TRUE(WriteFileAtomically(root + "/short/train/7/70/7-70.trans.txt", "7-70-1000 abababab\n").ok());
  expect("short", [](v1::SpeechCtcSpec*) {}, absl::StatusCode::kInvalidArgument,
         "its transcript needs 8 CTC frames but its");
  // A line without a transcript; a missing WAV; a stereo WAV.
  WriteUtterances(root + "/line/train", {"a"});
  WriteUtterances(root + "/line/test", {"a"});
  ASSERT_TRUE(WriteFileAtomically(root + "/line/train/7/70/7-70.trans.txt", "7-70-1000\n").ok());
  expect("line", [](v1::SpeechCtcSpec*) {}, absl::StatusCode::kInvalidArgument,
         "7-70.trans.txt:1: expected \"UTTERANCE-ID TRANSCRIPT\"");
  ASSERT_TRUE(WriteFileAtomically(root + "/line/train/7/70/7-70.trans.txt", "7-70-1001 ab\n").ok());
  expect("line", [](v1::SpeechCtcSpec*) {}, absl::StatusCode::kNotFound, "7-70-1001.wav");
  WriteUtterances(root + "/stereo/train", {"a"});
  WriteUtterances(root + "/stereo/test", {"a"});
  std::string wav = EncodeWav(Tones("a", 16000, 0));
  wav[22] = 2;
  ASSERT_TRUE(WriteFileAtomically(root + "/stereo/test/7/70/7-70-1000.wav", wav).ok());
  expect("stereo", [](v1::SpeechCtcSpec*) {}, absl::StatusCode::kInvalidArgument,
         "7-70-1000.wav: 2 channels, not 1 (mono)");
}

// ---------------------------------------------------------------- the task

TEST(SpeechCtcTask, ShapesAndAnUntrainedModelsLoss) {
  auto task = MakeSpeechTask(ToneSpec());
  ASSERT_TRUE(task);
  EXPECT_EQ(task->name(), "speech_ctc_c4x4_gru12x1");
  // 16 mel bands -> 8 -> 4 after two convs: the GRU reads 4 x 4.
  const auto& shapes = task->param_shapes();
  ASSERT_EQ(shapes.size(), 4u + 4u + 2u);
  EXPECT_EQ(shapes[0], (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(shapes[4], (std::vector<int64_t>{16, 36}));
  EXPECT_EQ(shapes[5], (std::vector<int64_t>{12, 36}));
  EXPECT_EQ(shapes[8], (std::vector<int64_t>{12, 5}));
  torch::Generator gen = MakeGenerator(1, 0, 0);
  TaskState s = task->Init(2, 1, gen);
  Batch b = task->SampleBatch(2, gen);
  // Padded to the longest training utterance (3 tones, 3840 samples).
  EXPECT_EQ(b.x.sizes(), torch::IntArrayRef({2, 4, NumFrames(3840, 16000), 16}));
  EXPECT_EQ(b.y.size(2), 2 + 3);  // frames, length, 3 labels at most
  torch::Tensor loss = task->LossAndGrad(s, b, nullptr);
  ASSERT_EQ(loss.sizes(), torch::IntArrayRef({2}));
  EXPECT_TRUE(torch::isfinite(loss).all().item<bool>());
  EXPECT_GT(loss.min().item<double>(), 0.5);
  EXPECT_LT(loss.max().item<double>(), task->MaxMetaLoss());
  EvalResult ev = task->Evaluate(s);
  ASSERT_TRUE(ev.char_error_rate.defined());
  EXPECT_GE(ev.char_error_rate.min().item<double>(), 0.5);  // untrained: mostly wrong
  EXPECT_TRUE(std::isnan(ev.accuracy[0].item<double>()));
}

// Every particle of a batched call equals that particle run alone (its
// group's batch): loss, gradients, test loss and CER; for both kinds of
// sequence layer.
TEST(SpeechCtcTask, ParticleBatchingEqualsEachParticleAlone) {
  for (auto layer : {v1::GRU, v1::CONV1D}) {
    v1::SpeechCtcSpec spec = ToneSpec();
    spec.set_sequence_layer(layer);
    spec.set_num_sequence_layers(2);
    auto task = MakeSpeechTask(spec);
    ASSERT_TRUE(task);
    torch::Generator gen = MakeGenerator(3, 0, 0);
    TaskState s = task->Init(3, 2, gen);
    for (auto& p : s.params) p.add_(torch::randn(p.sizes(), gen) * 0.05);
    Batch batch = task->SampleBatch(3, gen);
    std::vector<torch::Tensor> grads;
    torch::Tensor loss = task->LossAndGrad(s, batch, &grads);
    ASSERT_EQ(loss.sizes(), torch::IntArrayRef({6}));
    EvalResult ev = task->Evaluate(s);
    for (int64_t i = 0; i < 6; ++i) {
      TaskState one;
      for (const auto& p : s.params) one.params.push_back(p.slice(0, i, i + 1));
      const int64_t g = i % 3;
      Batch b1{batch.x.slice(0, g, g + 1), batch.y.slice(0, g, g + 1)};
      std::vector<torch::Tensor> g1;
      torch::Tensor l1 = task->LossAndGrad(one, b1, &g1);
      EXPECT_NEAR(l1.item<double>(), loss[i].item<double>(), 1e-5) << layer << " " << i;
      for (size_t k = 0; k < g1.size(); ++k)
        EXPECT_TRUE(torch::allclose(g1[k][0], grads[k][i], 1e-4, 1e-6)) << layer << " " << i << " " << k;
      EvalResult e1 = task->Evaluate(one);
      EXPECT_NEAR(e1.loss.item<double>(), ev.loss[i].item<double>(), 1e-5);
      EXPECT_EQ(e1.char_error_rate.item<double>(), ev.char_error_rate[i].item<double>());
    }
    // The particles differ (else the test above proves little).
    EXPECT_GT((loss - loss[0]).abs().max().item<double>(), 1e-4);
  }
}

// An utterance's loss does not depend on how far its batch is padded.
TEST(SpeechCtcTask, PaddingDoesNotChangeTheLoss) {
  auto task = MakeSpeechTask(ToneSpec());
  ASSERT_TRUE(task);
  torch::Generator gen = MakeGenerator(4, 0, 0);
  TaskState s = task->Init(1, 1, gen);
  Batch b = task->SampleBatch(1, gen);
  Batch padded{torch::cat({b.x, torch::zeros({1, 4, 7, 16})}, 2), b.y};
  EXPECT_NEAR(task->LossAndGrad(s, b, nullptr).item<double>(),
              task->LossAndGrad(s, padded, nullptr).item<double>(), 1e-5);
}

TEST(SpeechCtcTask, Bf16MixedPrecisionRunsOnTheCpuCloseToFp32) {
  v1::SpeechCtcSpec spec = ToneSpec();
  auto fp32 = MakeSpeechTask(spec);
  spec.set_precision(v1::BF16);
  auto bf16 = MakeSpeechTask(spec);
  ASSERT_TRUE(fp32 && bf16);
  EXPECT_EQ(bf16->name(), "speech_ctc_c4x4_gru12x1_bf16");
  torch::Generator gen = MakeGenerator(5, 0, 0);
  TaskState s = fp32->Init(2, 1, gen);
  Batch b = fp32->SampleBatch(2, gen);
  std::vector<torch::Tensor> g32, g16;
  torch::Tensor l32 = fp32->LossAndGrad(s, b, &g32);
  torch::Tensor l16 = bf16->LossAndGrad(s, b, &g16);
  EXPECT_TRUE(torch::allclose(l16, l32, 0.03, 0.0)) << l16 << l32;
  for (size_t k = 0; k < g32.size(); ++k) {
    EXPECT_EQ(g16[k].scalar_type(), torch::kFloat32);  // master weights' gradients
    const double cos = torch::cosine_similarity(g16[k].flatten(), g32[k].flatten(), 0).item<double>();
    EXPECT_GT(cos, 0.95) << k;
  }
  EXPECT_FALSE(torch::equal(l16, l32));  // it did run in bfloat16
}

// FP16 runs where this LibTorch has float16 convolutions on the CPU (its
// loss scale gives the same gradients as no scaling, within float16's
// precision); where it has not, the task says so instead of crashing.
TEST(SpeechCtcTask, Fp16WithALossScaleRunsOrIsRefusedClearly) {
  v1::SpeechCtcSpec spec = ToneSpec();
  spec.set_precision(v1::FP16);
  v1::TaskSpec t;
  *t.mutable_speech_ctc() = spec;
  auto task = MakeTask(t, 0, torch::kCPU);
  if (!task.ok()) {
    EXPECT_EQ(task.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(task.status().message().find("precision FP16 cannot run on cpu"), std::string::npos)
        << task.status();
    EXPECT_NE(task.status().message().find("use BF16 or a CUDA device"), std::string::npos);
    return;
  }
  auto fp32 = MakeSpeechTask(ToneSpec());
  torch::Generator gen = MakeGenerator(6, 0, 0);
  TaskState s = fp32->Init(2, 1, gen);
  Batch b = fp32->SampleBatch(2, gen);
  std::vector<torch::Tensor> g32, g16;
  fp32->LossAndGrad(s, b, &g32);
  (*task)->LossAndGrad(s, b, &g16);
  for (size_t k = 0; k < g32.size(); ++k) {
    EXPECT_TRUE(torch::isfinite(g16[k]).all().item<bool>()) << k;
    EXPECT_GT(torch::cosine_similarity(g16[k].flatten(), g32[k].flatten(), 0).item<double>(), 0.95) << k;
  }
}

// The dynamic loss scale, on float32 gradients made to overflow: particle 0's
// gradient is 1e35 (times the scale: inf above 2^11), particle 1's is 1, and
// particle 2 overflows too but its loss is infinite (diverged: no halving
// helps it, so none is tried).
TEST(SpeechCtcTask, DynamicLossScaleHalvesOnlyForTheParticlesThatOverflow) {
  torch::AutoGradMode enable(true);
  torch::Tensor x = torch::ones({3, 2}).requires_grad_(true);
  torch::Tensor c = torch::tensor({1e35f, 1.0f, 1e35f}).view({3, 1});
  torch::Tensor bias = torch::tensor({0.0f, 0.0f, INFINITY});
  torch::Tensor loss = (c * x).sum(1) + bias;
  std::vector<torch::Tensor> g;
  torch::Tensor scale = LossScaledGradients(loss, {x}, 32768, /*dynamic=*/true, 24, &g);
  EXPECT_EQ(scale[0].item<float>(), 2048.0f);  // 1e35 * 4096 overflows float32, * 2048 does not
  EXPECT_EQ(scale[1].item<float>(), 32768.0f);
  EXPECT_EQ(scale[2].item<float>(), 32768.0f);
  EXPECT_TRUE(torch::isinf(g[0][2]).all().item<bool>());
  EXPECT_TRUE(torch::allclose(g[0][0], torch::full({2}, 1e35f), 1e-6, 0));
  EXPECT_TRUE(torch::equal(g[0][1], torch::ones({2})));
  // A static scale makes one pass: particle 0's gradient stays infinite.
  torch::Tensor loss2 = (c * x).sum(1);
  torch::Tensor fixed = LossScaledGradients(loss2, {x}, 32768, /*dynamic=*/false, 24, &g);
  EXPECT_EQ(fixed[0].item<float>(), 32768.0f);
  EXPECT_TRUE(torch::isinf(g[0][0]).all().item<bool>());
  EXPECT_TRUE(torch::equal(g[0][1], torch::ones({2})));
}

TEST(SpeechCtcTask, AdamWTrainsItAndTheMetaTestReportsCer) {
  v1::SpeechCtcSpec spec = ToneSpec();
  spec.set_sequence_layer(v1::CONV1D);
  auto task = MakeSpeechTask(spec);
  ASSERT_TRUE(task);
  MetaTestConfig c;
  c.steps = 150;
  c.seeds = 2;
  c.adamw_lrs = {1e-2};
  c.record_every = 25;
  c.test_every = 50;
  MetaTestReport r = RunMetaTest(*task, c, {});
  ASSERT_EQ(r.runs.size(), 2u);
  for (const auto& run : r.runs) {
    EXPECT_LT(run.final_train_loss, 0.5 * run.curve.front()) << run.final_train_loss;
    EXPECT_LT(run.test_cer, 0.5) << run.test_cer;  // the tones are easy
    EXPECT_GE(run.test_cer, 0.0);
    ASSERT_EQ(run.test_cer_curve.size(), 3u);
    EXPECT_NEAR(run.test_cer_curve.back(), run.test_cer, 1e-6);
    EXPECT_TRUE(std::isnan(run.test_hit_rate));
  }
}

// ---------------------------------------------------------------- the generator

TEST(SpeechGen, RefusesBadOptionsAndNamesAMissingProgram) {
  SpeechGenOptions o;
  o.utterances = 1;
  EXPECT_NE(ValidateSpeechGenOptions(o).message().find("--utterances must be in [2, 100000]"),
            std::string::npos);
  o = SpeechGenOptions();
  o.max_words = 0;
  EXPECT_EQ(ValidateSpeechGenOptions(o).code(), absl::StatusCode::kInvalidArgument);
  const char* old = std::getenv("PATH");
  const std::string saved = old ? old : "";
  const std::string empty = TempDir() + "/empty_path";
  ASSERT_TRUE(MakeDirs(empty).ok());
  ::setenv("PATH", empty.c_str(), 1);
  absl::Status s = CheckSpeechGenPrograms();
  auto gen = GenerateSpeechCorpus(SpeechGenOptions(), TempDir() + "/never");
  ::setenv("PATH", saved.c_str(), 1);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("needs espeak-ng, which is not on PATH"), std::string::npos) << s;
  EXPECT_EQ(gen.status().code(), absl::StatusCode::kFailedPrecondition);
}

SpeechGenOptions TinyGen(uint64_t seed) {
  SpeechGenOptions o;
  o.utterances = 6;
  o.seed = seed;
  o.max_words = 2;
  return o;
}

std::map<std::string, std::string> FilesUnder(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file())
      out[fs::relative(e.path(), dir).string()] = *ReadFile(e.path().string());
  return out;
}

TEST(SpeechGen, SameSeedSameBytesOtherSeedOtherBytesAndTheLayoutLoads) {
  if (!HaveProgram("espeak-ng")) GTEST_SKIP() << "espeak-ng is not installed";
  if (!HaveProgram("sox")) GTEST_SKIP() << "sox is not installed";
  const std::string a = TempDir() + "/gen_a", b = TempDir() + "/gen_b", c = TempDir() + "/gen_c";
  auto sa = GenerateSpeechCorpus(TinyGen(7), a);
  ASSERT_TRUE(sa.ok()) << sa.status();
  ASSERT_TRUE(GenerateSpeechCorpus(TinyGen(7), b).ok());
  ASSERT_TRUE(GenerateSpeechCorpus(TinyGen(8), c).ok());
  // 6 utterances, 2 speakers, the second speaks the test split.
  EXPECT_EQ(sa->speakers, 2);
  EXPECT_EQ(sa->train_utterances, 3);
  EXPECT_EQ(sa->test_utterances, 3);
  auto fa = FilesUnder(a), fb = FilesUnder(b), fc = FilesUnder(c);
  EXPECT_EQ(fa.size(), 6u + 2u);  // WAVs and one transcript file a speaker
  EXPECT_EQ(fa, fb);
  EXPECT_NE(fa, fc);
  ASSERT_TRUE(fa.count("train/100/1000/100-1000.trans.txt")) << fa.begin()->first;
  ASSERT_TRUE(fa.count("test/101/1010/101-1010-0000.wav"));
  // The layout loads, at 16 kHz, with the default alphabet.
  v1::SpeechCtcSpec spec;
  spec.set_data_path(a);
  auto corpus = LoadSpeechCorpus(spec);
  ASSERT_TRUE(corpus.ok()) << corpus.status();
  EXPECT_EQ((*corpus)->train.features.size(0), 3);
  auto wav = ReadWav(a + "/test/101/1010/101-1010-0000.wav");
  ASSERT_TRUE(wav.ok());
  EXPECT_EQ(wav->sample_rate, 16000);
  EXPECT_GT(wav->samples.size(), 16000u / 4);
}

// ---------------------------------------------------------------- the door

v1::JobSpec SpeechJob() {
  v1::JobSpec job;
  *job.mutable_task()->mutable_speech_ctc() = ToneSpec();
  FillJobDefaults(&job);
  return job;
}

TEST(SpeechCtcJob, DefaultsAndAValidJob) {
  v1::JobSpec job;
  job.mutable_task()->mutable_speech_ctc()->set_data_path("/tmp");
  FillJobDefaults(&job);
  const auto& s = job.task().speech_ctc();
  EXPECT_EQ(std::vector<int>(s.conv_channels().begin(), s.conv_channels().end()), (std::vector<int>{16, 16}));
  EXPECT_EQ(s.precision(), v1::FP32);
  EXPECT_EQ(s.sequence_layer(), v1::GRU);
  EXPECT_TRUE(ValidateJob(job).ok()) << ValidateJob(job);
  EXPECT_GT(EstimateUnitBytes(job), int64_t{1} << 20);
  EXPECT_LT(EstimateUnitBytes(job), int64_t{8} << 30);
}

TEST(SpeechCtcJob, BadFieldsAreRefusedNamingTheField) {
  struct Case {
    std::function<void(v1::SpeechCtcSpec*)> edit;
    std::string message;
  };
  std::vector<Case> cases = {
      {[](v1::SpeechCtcSpec* s) { s->clear_data_path(); }, "task.speech_ctc.data_path must name a corpus"},
      {[](v1::SpeechCtcSpec* s) { s->set_data_path("/dev/zero"); }, "task.speech_ctc.data_path must be"},
      {[](v1::SpeechCtcSpec* s) { s->set_train_subdir("a/b"); },
       "task.speech_ctc.train_subdir must be one directory name"},
      {[](v1::SpeechCtcSpec* s) { s->set_test_subdir(".."); }, "task.speech_ctc.test_subdir must be one"},
      {[](v1::SpeechCtcSpec* s) { s->set_sample_rate(100); }, "task.speech_ctc.sample_rate must be in [4000, 96000]"},
      {[](v1::SpeechCtcSpec* s) { s->set_num_mel_bins(0); }, "task.speech_ctc.num_mel_bins must be in [4, 128]"},
      {[](v1::SpeechCtcSpec* s) { s->set_max_frames(2); }, "task.speech_ctc.max_frames must be in [8, "},
      {[](v1::SpeechCtcSpec* s) { s->set_alphabet(""); }, "task.speech_ctc.alphabet must have 1 to 255"},
      {[](v1::SpeechCtcSpec* s) { s->set_alphabet("abA"); },
       "task.speech_ctc.alphabet must hold printable ASCII characters other than upper-case letters"},
      {[](v1::SpeechCtcSpec* s) { s->set_alphabet("ab\ta"); }, "got byte 0x09 at offset 2"},
      {[](v1::SpeechCtcSpec* s) { s->set_alphabet("aba"); }, "task.speech_ctc.alphabet has 'a' twice"},
      {[](v1::SpeechCtcSpec* s) { s->set_conv_channels(1, 0); },
       "task.speech_ctc.conv_channels[1] must be in [1, 1024], got 0"},
      {[](v1::SpeechCtcSpec* s) { s->set_sequence_layer(v1::SEQUENCE_LAYER_UNSPECIFIED); },
       "task.speech_ctc.sequence_layer must be GRU or CONV1D"},
      {[](v1::SpeechCtcSpec* s) { s->set_hidden_size(0); }, "task.speech_ctc.hidden_size must be in [1, 4096]"},
      {[](v1::SpeechCtcSpec* s) { s->set_batch_size(0); }, "task.speech_ctc.batch_size"},
      {[](v1::SpeechCtcSpec* s) { s->set_precision(v1::PRECISION_UNSPECIFIED); },
       "task.speech_ctc.precision must be FP32, BF16 or FP16"},
      {[](v1::SpeechCtcSpec* s) { s->set_loss_scale(128); },
       "task.speech_ctc.loss_scale applies to precision FP16 only, got 128 with FP32"},
      {[](v1::SpeechCtcSpec* s) {
         s->set_precision(v1::FP16);
         s->set_loss_scale(-1);
       },
       "task.speech_ctc.loss_scale must be in [0, "},
      {[](v1::SpeechCtcSpec* s) { s->set_activation(v1::ACTIVATION_UNSPECIFIED); },
       "task.speech_ctc.activation must be one of"},
      // Too big for a worker: the memory estimate names the fields.
      {[](v1::SpeechCtcSpec* s) {
         s->set_max_frames(10000);
         s->set_batch_size(4096);
       },
       "task.speech_ctc.{max_frames, num_mel_bins"},
  };
  for (const auto& c : cases) {
    v1::JobSpec job = SpeechJob();
    c.edit(job.mutable_task()->mutable_speech_ctc());
    absl::Status s = ValidateJob(job);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s << "\nwanted: " << c.message;
  }
  auto lh = JobFromText(R"(
    task { noisy_quadratic {} }
    lhopt { tasks { task { noisy_quadratic {} } }
            tasks { task { speech_ctc { data_path: "/tmp" hidden_size: 0 } } } })",
                        "mix");
  EXPECT_EQ(lh.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(lh.status().message().find("lhopt.tasks[1].task.speech_ctc.hidden_size must be in [1, 4096]"),
            std::string::npos)
      << lh.status();
}

// ---------------------------------------------------------------- LHOPT

// ToneSpec with the CONV1D sequence layer (fast to train), and its text for a job.
v1::SpeechCtcSpec Conv1dToneSpec(std::string* text) {
  v1::SpeechCtcSpec spec = ToneSpec();
  spec.set_sequence_layer(v1::CONV1D);
  google::protobuf::TextFormat::PrintToString(spec, text);
  return spec;
}

TEST(SpeechCtcJob, RunsAsAnEntryOfAnLhoptMixture) {
  std::string spec_text;
  v1::SpeechCtcSpec spec = Conv1dToneSpec(&spec_text);
  auto job = JobFromText(absl::StrCat(R"(
    name: "lhopt_speech" seed: 3
    task { speech_ctc { )", spec_text, R"( } }
    lhopt {
      tasks { task { speech_ctc { )", spec_text, R"( } } }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
      particles: 2 episodes_per_iteration: 2 iterations: 1 hidden_size: 8
      curve_points: 3 baseline_refresh_iterations: 1 instances_per_task: 1
    })"),
                         "speech_lhopt");
  ASSERT_TRUE(job.ok()) << job.status();
  LhoptJob lj(*job);
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(*job, &buffer, "t");
  LhoptUnit unit = lj.Start();
  ASSERT_TRUE(unit.task.has_speech_ctc());
  auto r = runner.Run(unit);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(int64_t(r->segments.size()), 2);
  EXPECT_TRUE(torch::isfinite(r->episode_rewards).all().item<bool>());
}

TEST(SpeechCtcJob, ElosUnrollerRunsItEagerly) {
  // ctc_loss synchronises with the host, so ELO's unroller must not capture
  // the speech task's inner step in a CUDA graph, even when asked to; a task
  // that can be captured keeps the default. The unroller still meta-trains it.
  std::string spec_text;
  v1::SpeechCtcSpec spec = Conv1dToneSpec(&spec_text);
  auto job = JobFromText(absl::StrCat(R"(
    name: "elo_speech" seed: 2
    task { speech_ctc { )", spec_text, R"( } }
    pes { num_tasks: 2 truncation_length: 3 min_unroll_length: 3 max_unroll_length: 6 }
    elo { buffer { enabled: false } behavior_cloning { enabled: false } }
    budget { outer_steps: 2 })"),
                         "elo_speech");
  ASSERT_TRUE(job.ok()) << job.status();
  auto task = MakeSpeechTask(spec);
  ASSERT_TRUE(task);
  EXPECT_FALSE(task->CudaGraphCapturable());
  // A wrapper (here the parameter-scale augmentation) says what its task says.
  v1::TaskSpec scaled;
  *scaled.mutable_speech_ctc() = spec;
  scaled.mutable_param_scale()->set_enabled(true);
  auto scaled_task = MakeTask(scaled, 0, torch::kCPU);
  ASSERT_TRUE(scaled_task.ok()) << scaled_task.status();
  EXPECT_NE((*scaled_task)->name().find("param_scaled"), std::string::npos);
  EXPECT_FALSE((*scaled_task)->CudaGraphCapturable());
  EloUnroller u(*job, task.get(), nullptr, "t", 1);
  EXPECT_FALSE(u.use_cuda_graph());
  u.set_use_cuda_graph(true);
  EXPECT_FALSE(u.use_cuda_graph());
  torch::Generator gen = MakeGenerator(0, 0, 0);
  TruncationResult r = u.RunTruncation(SmallFcLopt(job->lopt()).InitTheta(gen), 1.0, 0);
  ASSERT_TRUE(r.grad.defined());
  EXPECT_TRUE(torch::isfinite(r.grad).all().item<bool>());
  EXPECT_GT(r.grad.abs().sum().item<double>(), 0.0);
  EXPECT_EQ(r.particle_steps, 2 * 2 * 3);

  auto quad = JobFromText("task { noisy_quadratic { min_dim: 4 max_dim: 4 } }", "quad");
  ASSERT_TRUE(quad.ok()) << quad.status();
  auto qtask = MakeTask(quad->task(), 0).value();
  EXPECT_TRUE(qtask->CudaGraphCapturable());
  EloUnroller q(*quad, qtask.get(), nullptr, "t", 1);
  EXPECT_TRUE(q.use_cuda_graph());
}

}  // namespace
}  // namespace lopt
