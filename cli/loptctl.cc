// loptctl: the command-line client of the learner's JobService.
//
//   loptctl [--learner HOST:PORT] submit JOB.textproto [--watch]
//   loptctl list | status ID | watch ID | cancel ID | export ID --out FILE [--all] | health
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <google/protobuf/text_format.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/rpc/rpc.h"
#include "common/rpc/tensor_codec.h"
#include "common/spec/job_spec.h"
#include "common/util/checkpoint.h"
#include "common/util/flags.h"
#include "common/util/progress.h"
#include "common/util/utf8.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "lopt/v1/job_service.grpc.pb.h"
#include "lopt/v1/optimizer_file.pb.h"

namespace {

using lopt::v1::JobService;

const std::vector<lopt::FlagDef> kFlags = {
    {"learner", "localhost:50051", "learner host:port"},
    {"auth-token-file", "", "file with the learner's bearer token"},
    {"timeout-ms", "10000", "deadline of each call (watch: of each status)"},
    {"tls-ca-file", "", "PEM roots that sign the learner's certificate: talk TLS (empty: plaintext)"},
    {"out", "", "export: where to write the optimizer file (-o FILE too)"},
    {"all", "", "export: every file of the job's directory (trained file, job.textproto, summary.json, metrics.csv, training.png or rewards.png, eval/) into --out DIR", true},
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
    "  export ID --out FILE             write the (trained) optimizer file (-o FILE too)\n"
    "  export ID --all --out DIR        the job's run directory: trained file, job.textproto,\n"
    "                                   summary.json, metrics.csv, training.png (ELO) or\n"
    "                                   rewards.png (LHOPT), eval/ (meta-test report)\n"
    "  health                           exit 0 if the learner serves, 1 if not";

int Fail(const std::string& msg, int code = 1) {
  fprintf(stderr, "loptctl: %s\n", msg.c_str());
  return code;
}

// The learner's address, for errors that say where loptctl looked.
std::string g_learner;

int FailRpc(const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
       s.error_message().find("connect") != std::string::npos))
    return Fail(absl::StrCat("cannot reach a learner at ", g_learner, " (", s.error_message(),
                             "). Is lopt-learner running there? --learner HOST:PORT names "
                             "another address"));
  return Fail(absl::StrCat(lopt::FromGrpcStatus(s).ToString()));
}

const std::vector<std::string> kCommands = {"submit", "list",   "status", "watch",
                                            "cancel", "export", "health"};

// Levenshtein distance, for "did you mean".
size_t Distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
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
  if (!s.error().empty()) absl::StrAppend(&line, "  ", s.error());  // why it failed, or waits
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
  // Short forms: -o FILE is --out FILE (as deploy/README.md once showed), -h is --help.
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "-o") args[i] = "--out";
    else if (args[i] == "-h") args[i] = "--help";
    else if (args[i].size() > 1 && args[i][0] == '-' && args[i][1] != '-')
      return Fail(absl::StrCat("unknown flag ", args[i], "\n", kUsage), 2);
  }
  std::vector<char*> ptrs;
  for (auto& a : args) ptrs.push_back(a.data());
  argc = static_cast<int>(ptrs.size());
  argv = ptrs.data();
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
  const std::string cmd = f->positional[0];
  if (std::find(kCommands.begin(), kCommands.end(), cmd) == kCommands.end()) {
    std::string near;
    for (const auto& c : kCommands)
      if (Distance(cmd, c) <= 2 && (near.empty() || Distance(cmd, c) < Distance(cmd, near))) near = c;
    return Fail(absl::StrCat("unknown command '", cmd, "'",
                             near.empty() ? "" : absl::StrCat(" (did you mean '", near, "'?)"),
                             "\n", kUsage),
                2);
  }
  g_learner = f->Get("learner");
  lopt::ClientConfig cfg{f->Get("learner"), *token, *timeout};
  if (auto s = lopt::LoadClientTls(f->Get("tls-ca-file"), &cfg); !s.ok())
    return Fail(std::string(s.message()), 2);
  auto channel = lopt::MakeChannel(cfg);
  auto stub = JobService::NewStub(channel);
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
    auto text = lopt::ReadFile(path, "job file");
    if (!text.ok()) return Fail(std::string(text.status().message()), 2);
    // The request's strings are proto3 strings: gRPC would refuse a request
    // that is not UTF-8 with INTERNAL and no message.
    if (auto s = lopt::CheckJobTextUtf8(*text, lopt::SanitizeUtf8(path)); !s.ok())
      return Fail(std::string(s.message()), 2);
    lopt::v1::SubmitJobRequest req;
    req.set_job_text(*text);
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
  if (id.empty())
    return Fail(absl::StrCat(cmd, " needs a job id (loptctl list shows them)"), 2);
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
    if (out.empty())
      return Fail(f->Has("all") ? "export --all needs --out DIR" : "export needs --out FILE (or -o FILE)", 2);
    // One file of the job's directory ("": the trained file) as bytes.
    auto fetch = [&](const std::string& file, std::string* bytes) -> grpc::Status {
      lopt::v1::ExportOptimizerRequest req;
      req.set_job_id(id);
      req.set_file(file);
      auto ctx = lopt::MakeContext(cfg, std::max<int64_t>(*timeout, 60000));
      auto reader = stub->ExportOptimizer(ctx.get(), req);
      bytes->clear();
      lopt::v1::Chunk c;
      while (reader->Read(&c)) {
        if (c.offset() != static_cast<int64_t>(bytes->size()) ||
            lopt::Crc32(c.data().data(), c.data().size()) != c.crc32())
          return grpc::Status(grpc::StatusCode::DATA_LOSS,
                              "export stream is corrupt (offset or checksum mismatch)");
        *bytes += c.data();
      }
      return reader->Finish();
    };
    std::string bytes;
    if (grpc::Status s = fetch("", &bytes); !s.ok()) return FailRpc(s);
    if (!f->Has("all")) {
      if (auto s = lopt::WriteFileAtomically(out, bytes); !s.ok()) return Fail(std::string(s.message()));
      printf("wrote %s (%zu bytes)\n", out.c_str(), bytes.size());
      return 0;
    }
    // --all: the run directory as `lopt train --out` leaves it.
    if (auto s = lopt::MakeDirs(out + "/eval"); !s.ok()) return Fail(std::string(s.message()));
    lopt::v1::OptimizerFile probe;  // both trained formats start with version and architecture
    const bool controller = probe.ParseFromString(bytes) && probe.architecture() == "lhopt_lstm";
    std::vector<std::string> wrote = {controller ? "controller.lhopt" : "optimizer.lopt"};
    if (auto s = lopt::WriteFileAtomically(out + "/" + wrote[0], bytes); !s.ok())
      return Fail(std::string(s.message()));
    for (const char* file : {"job.textproto", "summary.json", "metrics.csv", "training.png",
                             "rewards.png", "yardstick.csv", "eval/report.json", "eval/table.txt",
                             "eval/curves.csv", "eval/test_curves.csv", "eval/curves.png"}) {
      grpc::Status s = fetch(file, &bytes);
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) continue;  // not (yet) there
      // A learner older than this loptctl does not know the file's name.
      if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
          s.error_message().find("no file '") != std::string::npos)
        continue;
      if (!s.ok()) return FailRpc(s);
      if (auto w = lopt::WriteFileAtomically(out + "/" + file, bytes); !w.ok())
        return Fail(std::string(w.message()));
      wrote.push_back(file);
    }
    // The snapshots its job keeps (budget.snapshot_every), for `lopt select --run OUT`.
    lopt::v1::JobSpec job;
    auto job_text = lopt::ReadFile(out + "/job.textproto");
    if (job_text.ok() && google::protobuf::TextFormat::ParseFromString(*job_text, &job) &&
        job.budget().snapshot_every() > 0) {
      const int64_t every = job.budget().snapshot_every(), last = job.budget().outer_steps();
      int kept = 0;
      for (int64_t step = every; step <= last + every - 1; step += every) {
        const std::string file = absl::StrFormat("snapshots/step_%06d.lopt", std::min(step, last));
        grpc::Status s = fetch(file, &bytes);
        if (s.error_code() == grpc::StatusCode::NOT_FOUND) continue;  // not (yet) there
        if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) break;  // an older learner
        if (!s.ok()) return FailRpc(s);
        if (auto w = lopt::MakeDirs(out + "/snapshots"); !w.ok()) return Fail(std::string(w.message()));
        if (auto w = lopt::WriteFileAtomically(out + "/" + file, bytes); !w.ok())
          return Fail(std::string(w.message()));
        ++kept;
      }
      if (kept > 0) wrote.push_back(absl::StrCat("snapshots/ (", kept, ")"));
    }
    printf("wrote %s/: %s\n", out.c_str(), absl::StrJoin(wrote, ", ").c_str());
    return 0;
  }
  return Fail(absl::StrCat("unknown command '", cmd, "'\n", kUsage), 2);  // not reached
}
