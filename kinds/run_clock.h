// A local run's training time across interruptions, kept in its checkpoint
// (kinds/local_driver.cc): a resumed run's wall_s and summary.json's
// wall_seconds continue from it.
#pragma once

#include <string>

#include <torch/torch.h>

#include "common/elo/replay_buffer.h"
#include "common/util/run_files.h"

namespace lopt {

inline constexpr char kRunWallSecondsKey[] = "run/wall_seconds";

// Adds the seconds of training up to this checkpoint, over every run.
inline void AddRunWallSeconds(double seconds, NamedTensors* checkpoint) {
  checkpoint->emplace_back(kRunWallSecondsKey, torch::tensor(seconds, torch::kFloat64));
}

// The seconds of training before a resume: the checkpoint's, or, for a
// checkpoint from before it kept them, the last kept row's wall_s of
// metrics.csv (already cut back to the checkpoint).
inline double RunWallSecondsBefore(const NamedTensors& checkpoint, const std::string& metrics_path) {
  if (auto w = Find(checkpoint, kRunWallSecondsKey); w.ok()) return w->item<double>();
  return LastCsvValue(metrics_path, "wall_s", 0);
}

}  // namespace lopt
