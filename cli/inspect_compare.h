// `lopt inspect FILE`: what a .lopt or .lhopt file holds (architecture,
// options, provenance). `lopt compare RUN...`: several runs' meta-test
// reports side by side, as a table and one plot.
#pragma once

namespace lopt {

int RunInspectCommand(int argc, char** argv);
int RunCompareCommand(int argc, char** argv);

}  // namespace lopt
