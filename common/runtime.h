// Process-wide settings every lopt binary applies at start-up.
#pragma once

namespace lopt {

// Keeps freed large tensors in the heap instead of returning them to the OS
// (glibc otherwise mmaps and page-faults every temporary above 128 KiB, which
// made particle-batched steps superlinear in P), and sets LibTorch's
// intra-op threads (0: one per core).
void ConfigureRuntime(int threads = 0);

// LibTorch's OpenMP threads spin while they wait for work (libgomp's default
// spin count). On a machine with more busy threads than cores (a worker
// beside a learner on a small box, other jobs) the spinning threads steal the
// cores the others need: 20 outer steps of the services' default job took
// 80-97 s that way on the loaded 2-core development machine, 5.7 s with
// OMP_WAIT_POLICY=PASSIVE. libgomp reads its environment once, when it is
// loaded, before main; so when the variable is unset this sets it and
// re-executes the program (same pid, same arguments). Call it first in main.
// A policy already in the environment is kept. Returns only if no re-exec.
void PreferPassiveOpenMpWait(char** argv);

}  // namespace lopt
