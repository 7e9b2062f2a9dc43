// loptctl: the command-line client of the learner's JobService.
//
//   loptctl [--learner HOST:PORT] submit JOB.textproto [--watch]
//   loptctl list | status ID | watch ID | cancel ID | export ID --out FILE | health
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/flags.h"
#include "common/job_spec.h"
#include "common/progress.h"
#include "common/rpc.h"
#include "common/tensor_codec.h"
#include "common/utf8.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lopt/v1/job_service.grpc.pb.h"

namespace {

using lopt::v1::JobService;

const std::vector<lopt::FlagDef> kFlags = {
    {"learner", "localhost:50051", "learner host:port"},
    {"auth-token-file", "", "file with the learner's bearer token"},
    {"timeout-ms", "10000", "deadline of each call (watch: of each status)"},
    {"tls-ca-file", "", "PEM roots that sign the learner's certificate: talk TLS (empty: plaintext)"},
    {"out", "", "export: where to write the optimizer file"},
    {"watch", "", "submit: then watch the job until it ends", true},
    {"no-progress", "", "watch: print a line per change instead of a progress bar", true},
};

const char kUsage[] =
    "usage: loptctl [flags] COMMAND [ARGS]\n"
    "commands:\n"
    "  submit JOB.textproto [--watch]   submit a job file; prints the job id\n"
    "  list                             every job with its state and progress\n"
    "  status ID                        one job in detail (with its spec)\n"
    "  watch ID                         follow a job with a progress bar until it ends\n"
    "  cancel ID                        cancel a running job\n"
    "  export ID --out FILE             write the (trained) optimizer file\n"
    "  health                           exit 0 if the learner serves, 1 if not";

int Fail(const std::string& msg, int code = 1) {
  fprintf(stderr, "loptctl: %s\n", msg.c_str());
  return code;
}

int FailRpc(const grpc::Status& s) {
  return Fail(absl::StrCat(lopt::FromGrpcStatus(s).ToString()));
}

std::string StateName(lopt::v1::JobState s) {
  std::string n = lopt::v1::JobState_Name(s);
  for (char& c : n) c = static_cast<char>(tolower(c));
  return n;
}

std::string Line(const lopt::v1::JobStatus& s) {
  std::string line =
      absl::StrFormat("%-28s %-10s %7d/%-7d meta-loss %-9.5g %9.0f particle-steps/s  workers %d",
                      s.job_id(), StateName(s.state()), s.outer_step(), s.total_steps(),
                      s.meta_loss(), s.inner_particle_steps_per_second(), s.workers());
  if (s.buffer_failures() > 0)  // ELO running without (part of) its replay buffer
    absl::StrAppendFormat(&line, "  BUFFER FAILING (%d calls; last: %s)", s.buffer_failures(),
                          s.buffer_error());
  return line;
}

bool Terminal(lopt::v1::JobState s) {
  return s == lopt::v1::SUCCEEDED || s == lopt::v1::FAILED || s == lopt::v1::CANCELLED;
}

// Follows the job until it ends. A stream that breaks after the job was
// seen (the learner restarting, say) is reopened, with backoff, for up to
// kWatchReconnectMs; the learner resumes its jobs from their checkpoints.
constexpr int64_t kWatchReconnectMs = 120000;

int Watch(JobService::Stub& stub, const lopt::ClientConfig& cfg, const std::string& id,
          bool progress) {
  lopt::v1::JobStatus s;
  std::unique_ptr<lopt::ProgressBar> bar;
  int64_t last_step = -1;
  bool seen = false, reconnecting = false;
  auto last_contact = std::chrono::steady_clock::now();
  int64_t backoff_ms = 200;
  while (true) {
    auto ctx = lopt::MakeStreamContext(cfg);
    lopt::v1::WatchJobRequest req;
    req.set_job_id(id);
    auto reader = stub.Watch(ctx.get(), req);
    while (reader->Read(&s)) {
      seen = true;
      reconnecting = false;
      backoff_ms = 200;
      last_contact = std::chrono::steady_clock::now();
      if (progress) {
        if (!bar) bar = std::make_unique<lopt::ProgressBar>(id, s.total_steps(), true);
        bar->Update(s.outer_step(),
                    absl::StrFormat("meta-loss %.4f a=%.2f %.0f particle-steps/s workers %d",
                                    s.meta_loss(), s.alpha(), s.inner_particle_steps_per_second(),
                                    s.workers()));
      } else if (s.outer_step() != last_step || Terminal(s.state())) {
        printf("%s\n", Line(s).c_str());
        fflush(stdout);
      }
      last_step = s.outer_step();
      if (Terminal(s.state())) break;
    }
    grpc::Status st = reader->Finish();
    if (Terminal(s.state())) break;
    // Only a learner that went away after the job was seen is waited for.
    if (!st.ok() && (!seen || st.error_code() != grpc::StatusCode::UNAVAILABLE))
      return FailRpc(st);
    if (std::chrono::steady_clock::now() - last_contact >
        std::chrono::milliseconds(kWatchReconnectMs))
      return st.ok() ? Fail(absl::StrCat("lost the learner for more than ",
                                         kWatchReconnectMs / 1000, " s"))
                     : FailRpc(st);
    if (!reconnecting) {
      reconnecting = true;
      fprintf(stderr, "loptctl: lost the learner (%s); reconnecting\n",
              st.ok() ? "stream ended" : st.error_message().c_str());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
    backoff_ms = std::min<int64_t>(2000, backoff_ms * 2);
  }
  if (bar) bar->Finish(absl::StrFormat("%s, meta-loss %.4f", StateName(s.state()), s.meta_loss()));
  printf("job %s %s at outer step %lld/%lld%s%s\n", s.job_id().c_str(), StateName(s.state()).c_str(),
         static_cast<long long>(s.outer_step()), static_cast<long long>(s.total_steps()),
         s.error().empty() ? "" : ": ", s.error().c_str());
  return s.state() == lopt::v1::SUCCEEDED ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto f = lopt::ParseFlagDefs(argc, argv, 1, kFlags);
  if (!f.ok()) return Fail(absl::StrCat(f.status().message(), "\n", kUsage), 2);
  if (f->Has("help") || f->positional.empty()) {
    printf("%s", lopt::FlagsHelp(kUsage, kFlags).c_str());
    return f->Has("help") ? 0 : 2;
  }
  auto timeout = f->GetInt("timeout-ms", 10000);
  if (!timeout.ok()) return Fail(std::string(timeout.status().message()), 2);
  auto token = lopt::ReadTokenFile(f->Get("auth-token-file"));
  if (!token.ok()) return Fail(std::string(token.status().message()), 2);
  lopt::ClientConfig cfg{f->Get("learner"), *token, *timeout};
  if (auto s = lopt::LoadClientTls(f->Get("tls-ca-file"), &cfg); !s.ok())
    return Fail(std::string(s.message()), 2);
  auto channel = lopt::MakeChannel(cfg);
  auto stub = JobService::NewStub(channel);
  const std::string cmd = f->positional[0];
  auto arg = [&](const char* what) -> std::string {
    return f->positional.size() > 1 ? f->positional[1] : "";
  };
  bool progress = !f->Has("no-progress");

  if (cmd == "health") {
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    auto ctx = lopt::MakeContext(cfg);
    grpc::Status s = health->Check(ctx.get(), req, &resp);
    if (!s.ok()) return FailRpc(s);
    bool serving = resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
    printf("%s\n", serving ? "SERVING" : "NOT_SERVING");
    return serving ? 0 : 1;
  }
  if (cmd == "submit") {
    std::string path = arg("file");
    if (path.empty()) return Fail("submit needs a job file", 2);
    std::ifstream in(path);
    if (!in) return Fail(absl::StrCat("cannot read job file ", path), 2);
    std::stringstream ss;
    ss << in.rdbuf();
    // The request's strings are proto3 strings: gRPC would refuse a request
    // that is not UTF-8 with INTERNAL and no message.
    if (auto s = lopt::CheckJobTextUtf8(ss.str(), lopt::SanitizeUtf8(path)); !s.ok())
      return Fail(std::string(s.message()), 2);
    lopt::v1::SubmitJobRequest req;
    req.set_job_text(ss.str());
    req.set_source_name(lopt::SanitizeUtf8(path));
    lopt::v1::SubmitJobResponse resp;
    auto ctx = lopt::MakeContext(cfg);
    grpc::Status s = stub->Submit(ctx.get(), req, &resp);
    if (!s.ok()) return FailRpc(s);
    printf("%s\n", resp.job_id().c_str());
    fflush(stdout);
    if (f->Has("watch")) return Watch(*stub, cfg, resp.job_id(), progress);
    return 0;
  }
  if (cmd == "list") {
    lopt::v1::ListJobsResponse resp;
    auto ctx = lopt::MakeContext(cfg);
    grpc::Status s = stub->List(ctx.get(), lopt::v1::ListJobsRequest(), &resp);
    if (!s.ok()) return FailRpc(s);
    for (const auto& j : resp.jobs()) printf("%s\n", Line(j).c_str());
    if (resp.jobs().empty()) printf("no jobs\n");
    return 0;
  }
  std::string id = arg("id");
  if (id.empty()) return Fail(absl::StrCat(cmd, " needs a job id"), 2);
  if (cmd == "status") {
    lopt::v1::GetJobRequest req;
    req.set_job_id(id);
    lopt::v1::JobStatus resp;
    auto ctx = lopt::MakeContext(cfg);
    grpc::Status s = stub->Get(ctx.get(), req, &resp);
    if (!s.ok()) return FailRpc(s);
    printf("%s\n", resp.DebugString().c_str());
    return 0;
  }
  if (cmd == "watch") return Watch(*stub, cfg, id, progress);
  if (cmd == "cancel") {
    lopt::v1::CancelJobRequest req;
    req.set_job_id(id);
    lopt::v1::JobStatus resp;
    auto ctx = lopt::MakeContext(cfg);
    grpc::Status s = stub->Cancel(ctx.get(), req, &resp);
    if (!s.ok()) return FailRpc(s);
    printf("%s\n", Line(resp).c_str());
    return 0;
  }
  if (cmd == "export") {
    std::string out = f->Get("out");
    if (out.empty()) return Fail("export needs --out FILE", 2);
    lopt::v1::ExportOptimizerRequest req;
    req.set_job_id(id);
    auto ctx = lopt::MakeContext(cfg, std::max<int64_t>(*timeout, 60000));
    auto reader = stub->ExportOptimizer(ctx.get(), req);
    std::string bytes;
    lopt::v1::Chunk c;
    while (reader->Read(&c)) {
      if (c.offset() != static_cast<int64_t>(bytes.size()) ||
          lopt::Crc32(c.data().data(), c.data().size()) != c.crc32())
        return Fail("export stream is corrupt (offset or checksum mismatch)");
      bytes += c.data();
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) return FailRpc(s);
    std::string tmp = out + ".tmp";
    {
      std::ofstream o(tmp, std::ios::binary);
      o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!o) return Fail(absl::StrCat("cannot write ", tmp));
    }
    if (std::rename(tmp.c_str(), out.c_str()) != 0) return Fail(absl::StrCat("cannot write ", out));
    printf("wrote %s (%zu bytes)\n", out.c_str(), bytes.size());
    return 0;
  }
  return Fail(absl::StrCat("unknown command '", cmd, "'\n", kUsage), 2);
}
