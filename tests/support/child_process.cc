#include "tests/support/child_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lopt::testing {
namespace {

int Field(const std::string& line, const std::string& name) {
  auto p = line.find(" " + name + "=");
  if (p == std::string::npos) return 0;
  p += name.size() + 2;
  auto e = line.find(' ', p);
  int v = 0;
  return absl::SimpleAtoi(line.substr(p, e == std::string::npos ? e : e - p), &v) ? v : 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::string& label, std::vector<std::string> args, const std::string& ready,
    std::chrono::milliseconds timeout) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return absl::UnavailableError("pipe failed");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return absl::UnavailableError("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::unique_ptr<ChildProcess> p(new ChildProcess());
  p->label_ = label;
  p->pid_ = pid;
  p->fd_ = fds[0];
  p->drain_ = std::thread([raw = p.get()] { raw->Drain(); });
  if (!p->WaitForLine(ready, timeout)) {
    std::string out = p->Output();
    p->Kill9();
    return absl::UnavailableError(absl::StrCat(label, " (", args[0], ") not ready: ", out));
  }
  return p;
}

void ChildProcess::Drain() {
  std::string rest;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd_, buf, sizeof buf)) > 0) {
    rest.append(buf, n);
    size_t nl;
    while ((nl = rest.find('\n')) != std::string::npos) {
      std::string line = rest.substr(0, nl);
      rest.erase(0, nl + 1);
      std::fprintf(stderr, "[%s] %s\n", label_.c_str(), line.c_str());
      std::lock_guard<std::mutex> l(mu_);
      if (int g = Field(line, "grpc_port")) grpc_port_ = g;
      if (int m = Field(line, "metrics_port")) metrics_port_ = m;
      lines_.push_back(std::move(line));
      cv_.notify_all();
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  eof_ = true;
  cv_.notify_all();
}

bool ChildProcess::WaitForLine(const std::string& text, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  size_t seen = 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    for (; seen < lines_.size(); ++seen)
      if (lines_[seen].find(text) != std::string::npos) return true;
    if (eof_) return false;
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout) {
      for (; seen < lines_.size(); ++seen)
        if (lines_[seen].find(text) != std::string::npos) return true;
      return false;
    }
  }
}

int ChildProcess::CountLines(const std::string& text) {
  std::lock_guard<std::mutex> l(mu_);
  int n = 0;
  for (const auto& s : lines_) n += s.find(text) != std::string::npos;
  return n;
}

std::string ChildProcess::Output() {
  std::lock_guard<std::mutex> l(mu_);
  std::string out;
  for (const auto& s : lines_) absl::StrAppend(&out, s, "\n");
  return out;
}

int ChildProcess::Reap(bool block) {
  if (pid_ <= 0) return exit_code_;
  int status = 0;
  pid_t r = waitpid(pid_, &status, block ? 0 : WNOHANG);
  if (r == pid_) {
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    pid_ = -1;
  }
  return exit_code_;
}

bool ChildProcess::running() {
  Reap(false);
  return pid_ > 0;
}

void ChildProcess::Kill9() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    Reap(true);
  }
  if (drain_.joinable()) drain_.join();
  if (fd_ >= 0) close(fd_), fd_ = -1;
}

int ChildProcess::Stop(std::chrono::milliseconds grace) {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (running() && std::chrono::steady_clock::now() < deadline) usleep(10000);
    if (running()) {
      Kill9();
      return -1;
    }
  }
  if (drain_.joinable()) drain_.join();
  if (fd_ >= 0) close(fd_), fd_ = -1;
  return exit_code_;
}

ChildProcess::~ChildProcess() { Stop(std::chrono::seconds(5)); }

int FreePort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(s);
  return port;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  timeval tv{20, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(s);
    return absl::UnavailableError(absl::StrCat("cannot connect to 127.0.0.1:", port));
  }
  std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(s, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(s);
    return absl::UnavailableError("write failed");
  }
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = read(s, buf, sizeof buf)) > 0) resp.append(buf, n);
  close(s);
  if (n < 0) return absl::DeadlineExceededError("timed out reading the response");
  auto body = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || body == std::string::npos)
    return absl::UnavailableError(absl::StrCat("bad HTTP response: ", resp.substr(0, 200)));
  if (resp.find(" 200 ") == std::string::npos || resp.find(" 200 ") > resp.find("\r\n"))
    return absl::UnavailableError(absl::StrCat("HTTP error: ", resp.substr(0, resp.find("\r\n"))));
  return resp.substr(body + 4);
}

std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string cmd = command + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int st = pclose(f);
  std::fprintf(stderr, "[cmd] %s\n%s", command.c_str(), out.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace lopt::testing
