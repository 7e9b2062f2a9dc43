// `lopt eval-large`: the meta-test of a trained optimizer on one big MLP,
// on one device or data-parallel over N GPUs of this host (one process a GPU,
// NCCL). cli/large_eval.h is the training; this is the command and its
// launcher.
#pragma once

namespace lopt {

// argv[1] == "eval-large". Returns the process exit code.
int RunEvalLargeCommand(int argc, char** argv);

}  // namespace lopt
