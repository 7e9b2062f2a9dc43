// Speech data for the speech_ctc task family: a reader of 16-bit PCM WAV,
// log-mel features, a loader of a LibriSpeech-like corpus (transcripts
// beside WAV files) into padded feature and label tensors, and a generator
// of a synthetic spoken digits-and-words corpus with espeak-ng and sox
// (`lopt gen-speech`), so that the family runs with no download.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// Mono audio as 16-bit samples.
struct WavAudio {
  int32_t sample_rate = 0;
  std::vector<int16_t> samples;
};

// Parses a RIFF/WAVE file held in `bytes` (`source` names it in errors):
// 16-bit PCM, one channel (format 1, or WAVE_FORMAT_EXTENSIBLE with the PCM
// sub-format). INVALID_ARGUMENT naming the source and what it holds for
// anything else (float or 8/24/32-bit samples, several channels, a
// truncated or malformed header).
absl::StatusOr<WavAudio> ParseWav(const std::string& bytes, const std::string& source);
// Reads and parses `path` (NOT_FOUND when it cannot be read).
absl::StatusOr<WavAudio> ReadWav(const std::string& path);
// The canonical 44-byte-header file of `audio` (ParseWav's inverse).
std::string EncodeWav(const WavAudio& audio);

// The frame layout of the features: a 25 ms Hann window every 10 ms, FFT
// size the next power of two; frames = 1 + (samples - window) / hop (at
// least 1: shorter audio is zero-padded to one window).
struct FrameLayout {
  int64_t window = 0, hop = 0, n_fft = 0;
};
FrameLayout FrameLayoutFor(int32_t sample_rate);
int64_t NumFrames(int64_t samples, int32_t sample_rate);

// HTK-scale triangular mel filters from 0 Hz to sample_rate / 2: [n_fft / 2
// + 1, mel_bins].
torch::Tensor MelFilterbank(int64_t n_fft, int32_t sample_rate, int64_t mel_bins);
// log(1e-6 + mel power) of `audio`: [NumFrames, mel_bins] float32, with
// samples scaled to [-1, 1) and the power spectrum from torch::stft.
torch::Tensor LogMelFeatures(const WavAudio& audio, int64_t mel_bins);

// The class ids of a transcript, lower-cased: 1 + the character's offset in
// `alphabet` (0 is CTC's blank). INVALID_ARGUMENT naming the character and
// `source` for one outside the alphabet, and for an empty transcript.
absl::StatusOr<std::vector<int64_t>> EncodeTranscript(const std::string& text,
                                                      const std::string& alphabet,
                                                      const std::string& source);

// One utterance of a LibriSpeech-like split directory.
struct UtteranceFile {
  std::string id;          // "103-1240-0000"
  std::string transcript;  // as written in the .trans.txt
  std::string wav_path;    // <dir of the .trans.txt>/<id>.wav
};
// Every *.trans.txt under `dir` (recursively, in path order), each line
// "ID TRANSCRIPT". NOT_FOUND for a missing directory; INVALID_ARGUMENT for a
// malformed line (naming file and line), a duplicate id, or no utterances.
absl::StatusOr<std::vector<UtteranceFile>> ListUtterances(const std::string& dir);

// One split as tensors (CPU), in ListUtterances' order. Features are
// normalised by the training split's per-band mean and standard deviation
// and zero-padded to the split's longest utterance; labels are padded with
// 0 (blank) to the longest transcript.
struct SpeechSplit {
  torch::Tensor features;       // [N, T, F] float32
  torch::Tensor frames;         // [N] int64, valid frames of each utterance
  torch::Tensor labels;         // [N, L] int64
  torch::Tensor label_lengths;  // [N] int64
  std::vector<std::string> ids;
};

struct SpeechCorpus {
  SpeechSplit train, test;
  int64_t num_mel_bins = 0;
  std::string alphabet;
};

// The model's output frames for `frames` input frames: its first
// convolution (kernel 3, padding 1) strides 2 in time.
inline int64_t CtcOutputFrames(int64_t frames) { return (frames - 1) / 2 + 1; }
// The fewest output frames CTC needs for `labels`: one per label plus a
// blank between each pair of equal neighbours.
int64_t CtcMinFrames(const std::vector<int64_t>& labels);

// Loads data_path/{train_subdir,test_subdir}, computing the features once
// and caching the corpus by its spec's data fields (a process builds many
// tasks of one corpus). INVALID_ARGUMENT, naming the file, for a WAV of
// another format or sample rate, a transcript outside the alphabet, an
// utterance longer than max_frames, or one too short for CTC to emit its
// transcript after the model's time stride; NOT_FOUND for missing files.
absl::StatusOr<std::shared_ptr<const SpeechCorpus>> LoadSpeechCorpus(const v1::SpeechCtcSpec& spec);

// Levenshtein distance between two label sequences.
int64_t EditDistance(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
// Character error rate of hypotheses against references: the summed edit
// distance over the summed reference length (0 for empty references).
double CharErrorRate(const std::vector<std::string>& hypotheses,
                     const std::vector<std::string>& references);
// CTC's greedy decoding of one utterance's best path (class ids over its
// valid frames): repeats merged, then blanks (0) removed.
std::vector<int64_t> CtcGreedyCollapse(const int64_t* best_path, int64_t frames);

// The synthetic corpus (`lopt gen-speech`): each utterance is 1 to
// max_words words drawn from a vocabulary of the ten digits and twenty
// command words, spoken by espeak-ng with its speaker's voice (English
// voices and variants, male and female), speed (words a minute) and pitch
// jittered per utterance, resampled by sox to sample_rate with white, pink
// or brown noise mixed in at a random level. Speakers are
// max(2, min(10, utterances / 10)); the last ceil(speakers / 5) of them
// speak the test split only (unseen voices), the rest the training split.
// Written as DIR/{train,test}/SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt and
// SPEAKER-CHAPTER-NNNN.wav. The same options give the same bytes (sox runs
// in its repeatable mode) with the same espeak-ng and sox.
struct SpeechGenOptions {
  int64_t utterances = 300;
  uint64_t seed = 0;
  int32_t sample_rate = 16000;
  int64_t max_words = 3;
};

// INVALID_ARGUMENT naming the option: utterances in [2, 100000],
// sample_rate in [4000, 96000], max_words in [1, 20].
absl::Status ValidateSpeechGenOptions(const SpeechGenOptions& o);

// FAILED_PRECONDITION naming the first of espeak-ng and sox that is not an
// executable on PATH, and how to install it.
absl::Status CheckSpeechGenPrograms();

struct SpeechGenSummary {
  int64_t train_utterances = 0, test_utterances = 0, speakers = 0;
  double seconds = 0;  // of audio in all
};
// Writes the corpus under `dir` (creating it; files of an earlier run with
// the same names are replaced). Runs espeak-ng and sox as subprocesses with
// argument vectors (no shell); an error names the program, its arguments
// and its stderr.
absl::StatusOr<SpeechGenSummary> GenerateSpeechCorpus(const SpeechGenOptions& o,
                                                      const std::string& dir);

}  // namespace lopt
