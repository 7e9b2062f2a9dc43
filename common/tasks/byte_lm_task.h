// byte_lm: a small decoder-only transformer predicting the next byte of
// UTF-8 text, particle-batched like every family of common/tasks/task.h (all
// weights [P, ...], batched matmuls; no loop over particles).
//
// Per particle: byte embedding [256, d] + learned positions [L, d]; per
// layer pre-LN causal self-attention (num_heads heads) and a pre-LN GELU MLP
// (d -> 4d -> d), each with a residual; final LN; unembedding [d, 256].
// The loss is the mean next-byte cross-entropy over the L positions.
#pragma once

#include <memory>
#include <string>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

struct ByteCorpus {
  torch::Tensor train;  // [N] uint8
  torch::Tensor test;   // [M] uint8
};

// Reads `path` (a file, or a directory's regular files in name order,
// recursively, skipping symlinks and files containing a NUL byte) and
// splits off the last `test_fraction` of the bytes as the test split.
// Errors: NOT_FOUND for a missing path; INVALID_ARGUMENT when either split
// is shorter than min_bytes_per_split (too little text for the context).
absl::StatusOr<ByteCorpus> LoadByteCorpus(const std::string& path, int64_t min_bytes_per_split,
                                          double test_fraction = 0.1);

// The task on an already loaded corpus (REQUIRES: a spec that passes
// ValidateJob and a corpus with more than context_length + 1 bytes a split).
// On `device` (the corpus is uploaded once; random draws stay on the CPU
// generators, so a CUDA task draws the same windows as a CPU one).
std::unique_ptr<Task> MakeByteLmTask(const v1::ByteLmSpec& spec, ByteCorpus corpus,
                                     torch::Device device = torch::kCPU);

}  // namespace lopt
