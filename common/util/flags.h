// Command-line flags of the lopt tools: --name=value, --name value, --switch.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lopt {

struct Flags {
  std::map<std::string, std::string> values;
  std::vector<std::string> positional;

  bool Has(const std::string& name) const { return values.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& def = "") const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t def) const;
};

// `switches` take no value; every other known flag takes one. Unknown flags
// are an error that names them.
absl::StatusOr<Flags> ParseFlags(int argc, char** argv, int first,
                                 const std::set<std::string>& with_value,
                                 const std::set<std::string>& switches);

// A flag with its default and help text: the services' mains declare theirs
// as a table so that --help and the defaults come from one place.
struct FlagDef {
  std::string name;
  std::string default_value;
  std::string help;
  bool is_switch = false;
};

// Parses with `defs` (plus --help), then fills in every default not given.
absl::StatusOr<Flags> ParseFlagDefs(int argc, char** argv, int first,
                                    const std::vector<FlagDef>& defs);

// "usage\n\nflags:\n  --name (default: x)\n      help..." for --help.
std::string FlagsHelp(const std::string& usage, const std::vector<FlagDef>& defs);

}  // namespace lopt
