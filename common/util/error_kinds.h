// Kinds of error a caller branches on, carried as an absl::Status payload
// (the way absl and gRPC attach structured details) instead of being found
// by matching the message's text, which can be reworded at any time.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"

namespace lopt {

// A result refused because it holds NaN or Inf (losses, gradients, rewards):
// the learner counts these under reason="non_finite".
inline constexpr char kNonFiniteErrorUrl[] = "type.lopt.dev/lopt.NonFinite";

inline absl::Status NonFiniteError(absl::string_view message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kNonFiniteErrorUrl, absl::Cord());
  return s;
}

inline bool IsNonFiniteError(const absl::Status& s) {
  return s.GetPayload(kNonFiniteErrorUrl).has_value();
}

}  // namespace lopt
