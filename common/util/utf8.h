// UTF-8 checks for strings that users send and proto3 messages carry: a
// proto3 `string` with invalid UTF-8 cannot be serialised, so one such
// string in a reply breaks the call (gRPC answers "No message returned").
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace lopt {

// The offset of the first byte that is not part of valid UTF-8 (overlong
// forms, surrogates and code points past U+10FFFF are invalid); nullopt
// when all of `s` is valid.
std::optional<size_t> FirstInvalidUtf8(absl::string_view s);

// `s` with each invalid byte replaced by U+FFFD, cut (at a character
// boundary, with "...") to at most about `max_bytes`: for text from another
// process that ends up in a status or a log.
std::string SanitizeUtf8(absl::string_view s, size_t max_bytes = 1024);

}  // namespace lopt
