#include "common/util/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace lopt {

std::string FormatDuration(double s) {
  if (!(s >= 0) || s > 1e8) return "--:--";
  int64_t t = int64_t(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
  return absl::StrFormat("%02d:%02d", t / 60, t % 60);
}

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled),
      tty_(::isatty(2)),
      start_(std::chrono::steady_clock::now()),
      last_(start_ - std::chrono::hours(1)) {}

void ProgressBar::Update(int64_t done, const std::string& status) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since_last = std::chrono::duration<double>(now - last_).count();
  if (tty_ ? since_last < 0.1 : (since_last < 10 && done < total_)) return;
  last_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double frac = total_ > 0 ? double(done) / double(total_) : 1;
  double eta = done > 0 ? elapsed * (total_ - done) / done : -1;
  constexpr int kWidth = 24;
  int filled = int(frac * kWidth);
  std::string bar(filled, '#');
  bar.append(kWidth - filled, '.');
  std::string line = absl::StrFormat("%s [%s] %d/%d %s | %s<%s", label_, bar, done, total_,
                                     status, FormatDuration(elapsed), FormatDuration(eta));
  if (tty_)
    std::fprintf(stderr, "\r\033[2K%s", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void ProgressBar::Finish(const std::string& status) {
  if (!enabled_) return;
  last_ = std::chrono::steady_clock::now() - std::chrono::hours(1);
  Update(total_, status);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace lopt
