#include "common/util/flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace lopt {

std::string Flags::Get(const std::string& name, const std::string& def) const {
  auto it = values.find(name);
  return it == values.end() ? def : it->second;
}

absl::StatusOr<int64_t> Flags::GetInt(const std::string& name, int64_t def) const {
  auto it = values.find(name);
  if (it == values.end()) return def;
  int64_t v;
  if (!absl::SimpleAtoi(it->second, &v))
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer, got '", it->second, "'"));
  return v;
}

absl::StatusOr<Flags> ParseFlags(int argc, char** argv, int first,
                                 const std::set<std::string>& with_value,
                                 const std::set<std::string>& switches) {
  Flags f;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      f.positional.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_eq = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_eq = true;
    }
    if (switches.count(name)) {
      f.values[name] = has_eq ? value : "true";
    } else if (with_value.count(name)) {
      if (!has_eq) {
        if (i + 1 >= argc)
          return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
        value = argv[++i];
      }
      f.values[name] = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see --help)"));
    }
  }
  return f;
}

absl::StatusOr<Flags> ParseFlagDefs(int argc, char** argv, int first,
                                    const std::vector<FlagDef>& defs) {
  std::set<std::string> with_value, switches = {"help"};
  for (const auto& d : defs) (d.is_switch ? switches : with_value).insert(d.name);
  auto f = ParseFlags(argc, argv, first, with_value, switches);
  if (!f.ok()) return f;
  for (const auto& d : defs)
    if (!f->Has(d.name) && !d.is_switch) f->values[d.name] = d.default_value;
  return f;
}

std::string FlagsHelp(const std::string& usage, const std::vector<FlagDef>& defs) {
  std::string out = absl::StrCat(usage, "\n\nflags:\n");
  for (const auto& d : defs) {
    absl::StrAppend(&out, "  --", d.name);
    if (!d.is_switch)
      absl::StrAppend(&out, " (default: ", d.default_value.empty() ? "none" : "\"" + d.default_value + "\"", ")");
    absl::StrAppend(&out, "\n      ", d.help, "\n");
  }
  absl::StrAppend(&out, "  --help\n      this text\n");
  return out;
}

}  // namespace lopt
