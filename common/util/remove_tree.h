// rm -rf for lopt's temporary and run directories.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace lopt {

// rm -rf: removes `path` and, if it is a directory, everything under it,
// without following symbolic links (a link is removed, not its target). A
// path that does not exist is not an error. Use it instead of
// std::filesystem::remove_all: LibTorch's pip wheels (the GPU machine's torch
// 2.11) export their own copy of libstdc++'s std::filesystem, the dynamic
// linker binds a program's remove_all to it, and that copy crashes
// (SIGSEGV in every call, seen in neumf_task_cuda_test and bound to
// libtorch.so per LD_DEBUG=bindings); a CUDA worker called it after every
// meta-test unit. tests/CMakeLists.txt keeps remove_all out of the tree.
absl::Status RemoveTree(const std::string& path);

}  // namespace lopt
