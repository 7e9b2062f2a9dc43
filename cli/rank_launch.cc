#include "cli/rank_launch.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/util/checkpoint.h"

namespace lopt {

absl::Status LaunchRanks(const std::vector<std::string>& args, int world) {
  if (world < 1) return absl::InvalidArgumentError("world must be >= 1");
  if (args.empty()) return absl::InvalidArgumentError("no program arguments");
  setenv("NCCL_NVLS_ENABLE", "0", 1);  // never NVLink multicast on shared hosts
  char dir[] = "/tmp/lopt-ranks-XXXXXX";
  if (!mkdtemp(dir)) return absl::InternalError("mkdtemp failed");
  const std::string id_file = std::string(dir) + "/nccl_id";
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> av = args;
    for (const std::string& s : {std::string("--rank"), std::to_string(r), std::string("--world"),
                                 std::to_string(world), std::string("--id-file"), id_file})
      av.push_back(s);
    pid_t pid = fork();
    if (pid < 0) break;
    if (pid == 0) {
      std::vector<char*> cv;
      for (auto& s : av) cv.push_back(s.data());
      cv.push_back(nullptr);
      execv("/proc/self/exe", cv.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  std::vector<int> failed;
  if (int(pids.size()) < world) failed.push_back(int(pids.size()));  // fork failed there
  size_t left = pids.size();
  while (left > 0) {
    int st = 0;
    pid_t pid = waitpid(-1, &st, 0);
    if (pid < 0) break;
    for (size_t r = 0; r < pids.size(); ++r) {
      if (pids[r] != pid) continue;
      pids[r] = -1;
      --left;
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        failed.push_back(int(r));
        for (pid_t other : pids)
          if (other > 0) kill(other, SIGTERM);
      }
    }
  }
  std::remove(id_file.c_str());
  std::remove((id_file + ".tmp").c_str());
  rmdir(dir);
  if (failed.empty()) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("rank(s) ", absl::StrJoin(failed, ", "), " of ", world,
                                          " failed (the others were stopped)"));
}

absl::Status PublishRankId(const std::string& path, const std::string& id) {
  return WriteFileAtomically(path, id);
}

absl::StatusOr<std::string> WaitForRankId(const std::string& path, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream f(path);
    std::string id;
    if (f && std::getline(f, id) && !id.empty()) return id;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("rank 0 did not publish its NCCL id in ", path, " within ", timeout_ms, " ms"));
}

}  // namespace lopt
