// What every fuzz target checks of a status: a refusal is one of the codes
// its caller documents, with a message a user can act on, never INTERNAL or
// UNKNOWN. A failed check aborts, which libFuzzer reports as a crash and
// keeps the input (crash-<sha1>).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <initializer_list>

#include "absl/status/status.h"

#define FUZZ_CHECK(cond, ...)                                               \
  do {                                                                      \
    if (!(cond)) {                                                          \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", __FILE__,    \
                   __LINE__, #cond);                                        \
      std::fprintf(stderr, "" __VA_ARGS__);                                 \
      std::fprintf(stderr, "\n");                                           \
      std::abort();                                                         \
    }                                                                       \
  } while (0)

namespace lopt::fuzz {

inline void CheckRefusal(const absl::Status& s, std::initializer_list<absl::StatusCode> allowed) {
  FUZZ_CHECK(!s.ok());
  bool ok = false;
  for (absl::StatusCode c : allowed) ok |= s.code() == c;
  FUZZ_CHECK(ok, "unexpected code: %s", s.ToString().c_str());
  FUZZ_CHECK(!s.message().empty(), "a refusal without a reason");
}

}  // namespace lopt::fuzz
