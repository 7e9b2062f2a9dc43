// A terminal progress bar: redrawn in place on a terminal, a plain line every
// few seconds otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace lopt {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled = true);
  // `done` of total; `status` is appended (e.g. "meta-loss 0.52").
  void Update(int64_t done, const std::string& status);
  void Finish(const std::string& status);

 private:
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

std::string FormatDuration(double seconds);

}  // namespace lopt
