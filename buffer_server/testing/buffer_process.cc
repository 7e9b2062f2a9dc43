#include "buffer_server/testing/buffer_process.h"

#include <chrono>

namespace lopt {

absl::StatusOr<std::unique_ptr<BufferProcess>> BufferProcess::Start(
    const BufferProcessOptions& options) {
  std::vector<std::string> args = {options.binary, "--listen=127.0.0.1:0",
                                   "--metrics-listen=127.0.0.1:0",
                                   "--db-path=" + options.db_path};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());
  auto child = testing::ChildProcess::Start("lopt-buffer", args, "msg=serving",
                                            std::chrono::milliseconds(options.start_timeout_ms));
  if (!child.ok()) return child.status();
  std::unique_ptr<BufferProcess> p(new BufferProcess());
  p->child_ = std::move(*child);
  return p;
}

int BufferProcess::grpc_port() const { return child_->grpc_port(); }
int BufferProcess::metrics_port() const { return child_->metrics_port(); }
pid_t BufferProcess::pid() const { return child_->pid(); }
void BufferProcess::Kill9() { child_->Kill9(); }
int BufferProcess::Stop() { return child_->Stop(); }
BufferProcess::~BufferProcess() { Stop(); }

}  // namespace lopt
