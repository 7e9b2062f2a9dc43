// Process-wide settings every lopt binary applies at start-up.
#pragma once

namespace lopt {

// Keeps freed large tensors in the heap instead of returning them to the OS
// (glibc otherwise mmaps and page-faults every temporary above 128 KiB, which
// made particle-batched steps superlinear in P), and sets LibTorch's
// intra-op threads (0: DefaultThreadCount's answer).
void ConfigureRuntime(int threads = 0, bool on_gpu = false);

// LibTorch's intra-op threads when the user gives none: one per core for a
// process that computes on the CPU; at most kGpuProcessThreads for one whose
// tensors live on a GPU, which mostly waits on the device. (Eight `lopt eval
// --device cuda` processes with 16 threads each on a 16-core GPU host spent
// their time in OpenMP contention and hit a 600 s limit that, with
// `--threads 2`, they met in ~300 s.)
inline constexpr int kGpuProcessThreads = 4;
int DefaultThreadCount(bool on_gpu, unsigned hardware_threads);

// LibTorch's OpenMP threads spin while they wait for work (libgomp's default
// spin count). Where there are more busy threads than cores, as when a learner
// and workers share a host, the spinning threads steal the cores the others
// need. Measured on the 2-core development machine with two single-thread
// trainings beside: the services' default job (scripts/services_run.sh, 20
// outer steps, one CPU worker) 97 s spinning, 30 s (and 5.7 s in a quieter
// minute) with OMP_WAIT_POLICY=PASSIVE; bench_inner_step, 2 threads, P=128:
// 515 vs 4,854 inner particle-steps/s. On the same machine idle, PASSIVE costs
// 30% at P=16 (7,500 -> 5,250) and 10% at P=128 (7,700 -> 6,900): the waiters'
// wake-ups. So the services' processes, which share hosts (Compose, a dev box;
// the learner idles between outer steps), set it; local mode (`lopt train`,
// one process owning its machine) keeps the default.
// libgomp reads its environment once, when it is loaded, before main (an ELF
// .preinit_array setenv came too late: the spin count stayed 300,000); so when
// the variable is unset this sets it and re-executes the program (same pid,
// same arguments; ~0.5 s). Call it first in main. A policy already in the
// environment (OMP_WAIT_POLICY=ACTIVE on a dedicated worker) is kept.
// Returns only if it did not re-execute.
void PreferPassiveOpenMpWait(char** argv);

}  // namespace lopt
