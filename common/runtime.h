// Process-wide settings every lopt binary applies at start-up.
#pragma once

namespace lopt {

// Keeps freed large tensors in the heap instead of returning them to the OS
// (glibc otherwise mmaps and page-faults every temporary above 128 KiB, which
// made particle-batched steps superlinear in P), and sets LibTorch's
// intra-op threads (0: one per core).
void ConfigureRuntime(int threads = 0);

}  // namespace lopt
