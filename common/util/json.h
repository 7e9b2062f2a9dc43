// Minimal JSON output for reports (summary.json, report.json).
#pragma once

#include <string>

namespace lopt {

std::string JsonString(const std::string& s);
// Numbers; NaN and infinities (which JSON lacks) become null.
std::string JsonNumber(double v);

}  // namespace lopt
