#include "buffer_server/testing/buffer_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lopt {
namespace {

// The integer after "name=" in `line`, or 0.
int Field(const std::string& line, const std::string& name) {
  auto p = line.find(" " + name + "=");
  if (p == std::string::npos) return 0;
  p += name.size() + 2;
  auto e = line.find(' ', p);
  int v = 0;
  return absl::SimpleAtoi(line.substr(p, e == std::string::npos ? e : e - p), &v) ? v : 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<BufferProcess>> BufferProcess::Start(
    const BufferProcessOptions& options) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::UnavailableError("pipe failed");
  std::vector<std::string> args = {options.binary, "--listen=127.0.0.1:0",
                                   "--metrics-listen=127.0.0.1:0",
                                   "--db-path=" + options.db_path};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return absl::UnavailableError("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    dup2(fds[1], 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::unique_ptr<BufferProcess> p(new BufferProcess());
  p->pid_ = pid;
  p->stderr_fd_ = fds[0];

  std::string buf;
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(options.start_timeout_ms);
  while (p->grpc_port_ == 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd pfd{fds[0], POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    char tmp[4096];
    ssize_t n = read(fds[0], tmp, sizeof tmp);
    if (n <= 0) break;  // the child exited
    buf.append(tmp, n);
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      std::fprintf(stderr, "[lopt-buffer %d] %s\n", pid, line.c_str());
      if (line.find("msg=serving") != std::string::npos) {
        p->grpc_port_ = Field(line, "grpc_port");
        p->metrics_port_ = Field(line, "metrics_port");
      }
    }
  }
  if (p->grpc_port_ == 0) {
    p->Kill9();
    return absl::UnavailableError(absl::StrCat("lopt-buffer (", options.binary,
                                               ") did not report serving; output: ", buf));
  }
  int fd = fds[0];
  p->drain_ = std::thread([fd, pid] {
    std::string rest;
    char tmp[4096];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof tmp)) > 0) {
      rest.append(tmp, n);
      size_t nl;
      while ((nl = rest.find('\n')) != std::string::npos) {
        std::fprintf(stderr, "[lopt-buffer %d] %s\n", pid, rest.substr(0, nl).c_str());
        rest.erase(0, nl + 1);
      }
    }
  });
  return p;
}

int BufferProcess::Reap(int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    int status = 0;
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (r < 0 || waited >= timeout_ms) return -2;
    usleep(10000);
  }
}

void BufferProcess::Kill9() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    Reap(60000);
  }
  if (drain_.joinable()) drain_.join();
  if (stderr_fd_ >= 0) close(stderr_fd_), stderr_fd_ = -1;
}

int BufferProcess::Stop() {
  int code = -1;
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    code = Reap(10000);
    if (code == -2) {
      Kill9();
      code = -1;
    }
  }
  if (drain_.joinable()) drain_.join();
  if (stderr_fd_ >= 0) close(stderr_fd_), stderr_fd_ = -1;
  return code;
}

BufferProcess::~BufferProcess() { Stop(); }

}  // namespace lopt
