// `lopt select --run DIR`: meta-validates a run's snapshots
// (common/elo/selection.h) and keeps the best as DIR/optimizer.selected.lopt.
#pragma once

namespace lopt {

int RunSelectCommand(int argc, char** argv);

}  // namespace lopt
