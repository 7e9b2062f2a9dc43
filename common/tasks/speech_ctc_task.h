// speech_ctc: a small DeepSpeech2-style acoustic model trained with CTC over
// characters (v1::SpeechCtcSpec), particle-batched like every family of
// common/tasks/task.h: the 2-D convolutions run as one grouped convolution over
// [B, P * channels, time, frequency] (groups = P), the GRU and output layers
// as batched matmuls over [P, ...] weights, and CTC as one torch::ctc_loss
// over the P * B utterances. No loop over particles in training (the
// sequence loop of a GRU runs over time steps).
//
// Parameters of one particle, in order: each convolution's W [c, c_in, 3, 3]
// and b [c]; each sequence layer's GRU W_ih [in, 3H], W_hh [H, 3H], b_ih
// [3H], b_hh [3H] (gates r, z, n as PyTorch's GRU) or CONV1D W [H, in, 5] and
// b [H]; the output layer's W [in, classes] and b [classes], classes =
// alphabet + 1 (class 0 is the blank). `in` of the first sequence layer is
// conv_channels.back() x the frequency bands left after the convolutions.
//
// A batch: x [G, B, T, F] float32 features (padded to the corpus' longest
// utterance) and y [G, B, 2 + L] int64: column 0 the utterance's valid
// frames, column 1 its transcript's length, then its class ids padded with 0.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/tasks/speech_corpus.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// Each utterance's CTC loss divided by its target length, averaged per
// particle: log_probs [P, B, T, C] (log-softmax over C, float32), targets
// [P, B, L] (0-padded), input_lengths and target_lengths [P, B] int64.
// One torch::ctc_loss call over the P * B utterances (reduction none),
// blank 0; an impossible alignment is +inf. Returns [P].
torch::Tensor CtcLossPerParticle(const torch::Tensor& log_probs, const torch::Tensor& targets,
                                 const torch::Tensor& input_lengths,
                                 const torch::Tensor& target_lengths);

// FP16's loss scaling: the gradients of loss.sum() ([P] per-particle
// losses) w.r.t. `leaves`, each particle's loss multiplied by its scale
// before the backward pass and its gradients divided by it after. `dynamic`:
// starting at `scale`, the scale of every particle whose gradients are not
// finite (while its loss is) halves and the backward pass runs again on the
// same graph, at most `max_halvings` times; a particle whose loss itself is
// not finite keeps its scale. Not dynamic: one pass at `scale`. Returns the
// scales used [P] (float32, on the loss' device).
torch::Tensor LossScaledGradients(const torch::Tensor& loss, const std::vector<torch::Tensor>& leaves,
                                  double scale, bool dynamic, int max_halvings,
                                  std::vector<torch::Tensor>* grads);

// The task on a loaded corpus (REQUIRES: a spec that passes ValidateJob with
// defaults filled, the corpus from LoadSpeechCorpus(spec)). INVALID_ARGUMENT
// when `precision` cannot run on `device` with this LibTorch (e.g. float16
// convolutions on a CPU that lacks them), saying what would.
absl::StatusOr<std::unique_ptr<Task>> MakeSpeechCtcTask(const v1::SpeechCtcSpec& spec,
                                                        std::shared_ptr<const SpeechCorpus> corpus,
                                                        torch::Device device = torch::kCPU);

}  // namespace lopt
