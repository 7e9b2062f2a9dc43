// Issue 12's defects, each reproduced with real processes (lopt-learner,
// lopt-buffer, lopt-worker, loptctl, lopt) the way a careless or hostile
// operator met them: two learners on one state directory, a full disk at a
// job's end, invalid UTF-8 in a job's name, a second server on a taken port,
// data paths and spec sizes that exhaust a worker's memory.
//
// The full disk is a file-size limit (RLIMIT_FSIZE, set on the running
// learner with prlimit(2)) with SIGXFSZ ignored: every write past the limit
// fails with EFBIG, which stops root too (chmod does not), needs no mount
// and can be lifted without a restart, as freeing space would be.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint.h"
#include "common/job_spec.h"
#include "common/optimizer_file.h"
#include "tests/support/child_process.h"

namespace lopt {
namespace {

using lopt::testing::ChildProcess;
using lopt::testing::FreePort;
using lopt::testing::HttpGet;
using lopt::testing::RunCommand;
using namespace std::chrono_literals;

// The binaries under test: this build's, or with LOPT_TEST_BIN_DIR set,
// another build's (to see a test fail on the code before its fix).
std::string Bin(const char* built) {
  const char* dir = std::getenv("LOPT_TEST_BIN_DIR");
  if (dir == nullptr || *dir == '\0') return built;
  const std::string b(built);
  return absl::StrCat(dir, "/", b.substr(b.rfind('/') + 1));
}

std::string TempDir(const std::string& name) {
  std::string d = absl::StrCat(::testing::TempDir(), "lopt_faults_", name, "_", getpid());
  RunCommand("rm -rf '" + d + "' && mkdir -p '" + d + "'");
  return d;
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string JobText(const std::string& name, int steps, int checkpoint_every) {
  return absl::StrCat(
      "name: \"", name, "\"\nseed: 5\n",
      "task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }\n",
      "pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }\n",
      "budget { outer_steps: ", steps, " checkpoint_every: ", checkpoint_every, " }\n",
      "cluster { shards: 1 max_staleness: 0 }\n");
}

double MetricValue(const std::string& text, const std::string& metric, const std::string& label) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::string l(line);
    if (l.rfind(metric + "{", 0) != 0 && l.rfind(metric + " ", 0) != 0) continue;
    if (!label.empty() && l.find(label) == std::string::npos) continue;
    return std::stod(l.substr(l.rfind(' ') + 1));
  }
  return -1;
}

// A learner, optionally a buffer and workers, on loopback; loptctl drives them.
class Services {
 public:
  explicit Services(const std::string& name) : dir_(TempDir(name)) {}

  std::string state_dir() const { return dir_ + "/learner"; }
  const std::string& dir() const { return dir_; }

  std::vector<std::string> LearnerArgs(int port) const {
    return {Bin(LOPT_LEARNER_BINARY),      absl::StrCat("--listen=127.0.0.1:", port),
            "--metrics-listen=127.0.0.1:0", "--state-dir=" + state_dir(),
            "--worker-timeout-ms=4000", "--heartbeat-interval-ms=200", "--threads=1"};
  }

  // `ignore_sigxfsz`: through /bin/sh with SIGXFSZ ignored (kept across
  // exec), so that a file-size limit makes writes fail instead of killing it.
  void StartLearner(bool ignore_sigxfsz = false) {
    if (port_ == 0) port_ = FreePort();
    std::vector<std::string> args = LearnerArgs(port_);
    if (buffer_) args.push_back(absl::StrCat("--buffer=127.0.0.1:", buffer_->grpc_port()));
    if (ignore_sigxfsz)
      args.insert(args.begin(), {"/bin/sh", "-c", "trap '' XFSZ; exec \"$0\" \"$@\""});
    auto p = ChildProcess::Start("learner", args, "msg=serving");
    ASSERT_TRUE(p.ok()) << p.status();
    learner_ = std::move(*p);
  }

  void StartBuffer() {
    auto p = ChildProcess::Start("buffer",
                                 {Bin(LOPT_BUFFER_BINARY), "--listen=127.0.0.1:0",
                                  "--metrics-listen=127.0.0.1:0", "--db-path=" + dir_ + "/buffer"},
                                 "msg=serving");
    ASSERT_TRUE(p.ok()) << p.status();
    buffer_ = std::move(*p);
  }

  void StartWorker(const std::string& name) {
    std::vector<std::string> args = {Bin(LOPT_WORKER_BINARY), "--learner=" + target(),
                                     "--metrics-listen=", "--name=" + name, "--threads=1"};
    if (buffer_) args.push_back(absl::StrCat("--buffer=127.0.0.1:", buffer_->grpc_port()));
    auto p = ChildProcess::Start(name, args, "msg=connected");
    ASSERT_TRUE(p.ok()) << p.status();
    workers_.push_back(std::move(*p));
  }

  std::string target() const { return absl::StrCat("127.0.0.1:", port_); }
  std::pair<int, std::string> Ctl(const std::string& args) const {
    return RunCommand(absl::StrCat(Bin(LOPT_LOPTCTL_BINARY), " --learner=", target(), " ", args));
  }
  // Submits the job text; returns (exit code, output).
  std::pair<int, std::string> Submit(const std::string& text) {
    const std::string path = absl::StrCat(dir_, "/job", ++jobs_, ".textproto");
    WriteFile(path, text);
    return Ctl("submit " + path);
  }
  std::string SubmitOk(const std::string& text) {
    auto [code, out] = Submit(text);
    EXPECT_EQ(code, 0) << out;
    return out.substr(0, out.find('\n'));
  }
  ChildProcess& learner() { return *learner_; }
  std::unique_ptr<ChildProcess>& learner_ptr() { return learner_; }

 private:
  std::string dir_;
  int port_ = 0;
  int jobs_ = 0;
  std::unique_ptr<ChildProcess> learner_, buffer_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
};

// The status of a job as loptctl prints it (JobStatus's text form), polled
// until it contains `want` or `timeout` passes; the last one seen.
std::string PollStatus(const Services& s, const std::string& id, const std::string& want,
                       std::chrono::milliseconds timeout) {
  std::string last;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    last = s.Ctl("status " + id).second;
    if (last.find(want) != std::string::npos) break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return last;
}

// --- 1. Two learners on one --state-dir ------------------------------------

TEST(ServicesFaults, SecondLearnerOnAStateDirInUseRefusesToStartAndNamesTheHolder) {
  Services s("twolearners");
  s.StartLearner();
  const pid_t holder = s.learner().pid();
  // The second learner, on another port, the same directory.
  std::string cmd;
  for (const auto& a : s.LearnerArgs(FreePort())) absl::StrAppend(&cmd, a, " ");
  auto [code, out] = RunCommand("timeout 60 " + cmd);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(absl::StrCat("--state-dir ", s.state_dir(), " is in use by another process (pid ",
                                  holder, " on host ")),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("msg=serving"), std::string::npos) << out;
  EXPECT_TRUE(s.learner().running());
  // The lock dies with its holder, however it ends: a LOCK file left by a
  // kill -9 does not block the next learner.
  s.learner().Kill9();
  s.StartLearner();
  EXPECT_TRUE(s.learner().running());
}

// --- Lesser: a learner told to stop checkpoints its jobs --------------------

TEST(ServicesFaults, SigtermStopsTheLearnerCleanlyAndItCheckpointsItsJobsFirst) {
  Services s("sigterm");
  s.StartBuffer();
  s.StartLearner();
  s.StartWorker("w1");
  // No periodic checkpoint before the end: only the stop can save progress.
  const std::string id = s.SubmitOk(JobText("stop", 400, 1000));
  ASSERT_TRUE(s.learner().WaitForLine("step=5 ", 120s)) << s.learner().Output();
  EXPECT_EQ(s.learner().Stop(), 0) << "a SIGTERM must end the learner with a clean exit";
  EXPECT_TRUE(s.learner().WaitForLine("msg=\"checkpointed the unfinished jobs\" jobs=1", 1s))
      << s.learner().Output();
  s.StartLearner();
  ASSERT_TRUE(s.learner().WaitForLine("msg=\"resuming job from its checkpoint\"", 5s));
  std::smatch m;
  const std::string out = s.learner().Output();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("resuming job from its checkpoint\" job=" + id +
                                                   " outer_step=([0-9]+)")))
      << out;
  EXPECT_GE(std::stoi(m[1]), 5) << "the steps done before the SIGTERM were lost";
}

// --- Lesser: loptctl watch follows a job across a learner restart ----------

TEST(ServicesFaults, WatchFollowsTheJobAcrossAKillNineOfTheLearner) {
  Services s("watch");
  s.StartBuffer();
  s.StartLearner();
  s.StartWorker("w1");
  const int kSteps = 30;
  const std::string id = s.SubmitOk(JobText("watched", kSteps, 4));
  auto watch = ChildProcess::Start(
      "watch", {Bin(LOPT_LOPTCTL_BINARY), "--learner=" + s.target(), "watch", id, "--no-progress"},
      id);
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_TRUE(s.learner().WaitForLine("step=5 ", 120s));
  s.learner().Kill9();
  std::this_thread::sleep_for(1s);  // the watcher notices the learner is gone
  s.StartLearner();                 // same port and state directory
  EXPECT_TRUE((*watch)->WaitForLine(
      absl::StrCat("job ", id, " succeeded at outer step ", kSteps, "/", kSteps), 180s))
      << (*watch)->Output();
  for (int i = 0; i < 100 && (*watch)->running(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_EQ((*watch)->Stop(), 0) << "loptctl watch's exit code";
  EXPECT_EQ((*watch)->CountLines("reconnecting"), 1) << (*watch)->Output();
}

// --- 4. A second server on a taken gRPC port -------------------------------

TEST(ServicesFaults, ServersRefuseAPortAnotherServerHolds) {
  Services s("port");
  const int taken = FreePort();
  auto first = ChildProcess::Start(
      "buffer1",
      {Bin(LOPT_BUFFER_BINARY), absl::StrCat("--listen=127.0.0.1:", taken), "--metrics-listen=",
       "--db-path=" + s.dir() + "/buffer1"},
      "msg=serving");
  ASSERT_TRUE(first.ok()) << first.status();
  auto [code, out] = RunCommand(absl::StrCat("timeout 30 ", Bin(LOPT_BUFFER_BINARY),
                                             " --listen=127.0.0.1:", taken,
                                             " --metrics-listen= --db-path=", s.dir(), "/buffer2"));
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(absl::StrCat("cannot listen on 127.0.0.1:", taken, ": the port is in use")),
            std::string::npos)
      << out;
  // The learner's builder is the same one: a learner on the buffer's port.
  std::string cmd;
  for (const auto& a : s.LearnerArgs(taken)) absl::StrAppend(&cmd, a, " ");
  std::tie(code, out) = RunCommand("timeout 60 " + cmd);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(absl::StrCat("cannot listen on 127.0.0.1:", taken)), std::string::npos) << out;
  EXPECT_TRUE((*first)->running());
}

// --- 2. A full disk at a job's end -----------------------------------------

// The soft limit only: raising it again needs no privilege.
void SetFileSizeLimit(pid_t pid, rlim_t bytes) {
  rlimit lim{};
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, nullptr, &lim), 0) << std::strerror(errno);
  lim.rlim_cur = bytes;
  ASSERT_EQ(prlimit(pid, RLIMIT_FSIZE, &lim, nullptr), 0) << std::strerror(errno);
}

TEST(ServicesFaults, AJobSucceedsOnlyOnceItsResultIsOnDiskAndRetriesUntilItIs) {
  Services s("fulldisk");
  s.StartBuffer();
  s.StartLearner(/*ignore_sigxfsz=*/true);
  const int kSteps = 6;
  const std::string text = JobText("fulldisk", kSteps, 2);
  const std::string id = s.SubmitOk(text);  // its first checkpoint is on disk
  const std::string job_dir = s.state_dir() + "/jobs/" + id;
  // The disk fills: no write of the learner's gets past 16 bytes.
  SetFileSizeLimit(s.learner().pid(), 16);
  auto [code, out] = s.Submit(JobText("refused", 2, 1));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("RESOURCE_EXHAUSTED"), std::string::npos) << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;

  s.StartWorker("w1");
  // Every step is done, yet the job is not succeeded: its result is not saved.
  std::string st = PollStatus(s, id, absl::StrCat("outer_step: ", kSteps), 120s);
  ASSERT_NE(st.find(absl::StrCat("outer_step: ", kSteps)), std::string::npos) << st;
  st = PollStatus(s, id, "File too large", 10s);
  EXPECT_NE(st.find("state: RUNNING"), std::string::npos) << st;
  EXPECT_NE(st.find("its steps are done but its result is not saved yet"), std::string::npos) << st;
  EXPECT_NE(st.find("optimizer.lopt"), std::string::npos) << st;
  EXPECT_NE(st.find("File too large (errno 27)"), std::string::npos) << st;
  EXPECT_FALSE(FileExists(job_dir + "/optimizer.lopt"));
  // The learner retries every second while the disk stays full: wait for the
  // second try rather than race it (the status shows the first).
  absl::StatusOr<std::string> metrics;
  for (int i = 0; i < 100; ++i) {
    metrics = HttpGet(s.learner().metrics_port(), "/metrics");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    if (MetricValue(*metrics, "lopt_checkpoint_failures_total", "file=\"trained\"") >= 2) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(MetricValue(*metrics, "lopt_checkpoint_failures_total", "file=\"trained\""), 2)
      << "retried while the disk stays full";
  EXPECT_GE(MetricValue(*metrics, "lopt_checkpoint_failures_total", "file=\"checkpoint\""), 1)
      << "the checkpoint at step 2 or 4 failed";
  std::tie(code, out) = s.Ctl(absl::StrCat("export ", id, " --out ", s.dir(), "/x.lopt"));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("File too large"), std::string::npos) << out;

  // Space comes back: the job succeeds by itself, its result exports.
  SetFileSizeLimit(s.learner().pid(), RLIM_INFINITY);
  std::tie(code, out) = s.Ctl(absl::StrCat("watch ", id, " --no-progress"));
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(absl::StrCat("succeeded at outer step ", kSteps, "/", kSteps)), std::string::npos)
      << out;
  EXPECT_TRUE(FileExists(job_dir + "/optimizer.lopt"));
  const std::string exported = s.dir() + "/trained.lopt";
  std::tie(code, out) = s.Ctl(absl::StrCat("export ", id, " --out ", exported));
  ASSERT_EQ(code, 0) << out;
  auto file = LoadOptimizerFile(exported);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->file.outer_step(), kSteps);

  // And it stays succeeded across a restart (its checkpoint says so).
  s.learner().Kill9();
  s.StartLearner();
  st = s.Ctl("status " + id).second;
  EXPECT_NE(st.find("state: SUCCEEDED"), std::string::npos) << st;
  EXPECT_NE(st.find(absl::StrCat("outer_step: ", kSteps)), std::string::npos) << st;
  EXPECT_EQ(st.find("error:"), std::string::npos) << st;
}

// --- 3. Invalid UTF-8 in a job --------------------------------------------

TEST(ServicesFaults, AJobNameThatIsNotUtf8IsRefusedAndABadStoredRecordIsSkipped) {
  Services s("utf8");
  s.StartLearner();
  const std::string good = s.SubmitOk(JobText("good", 4, 2));
  // A name that is not UTF-8 is refused at the door, naming the field...
  auto [code, out] = s.Submit(JobText("bad\\377name", 4, 2));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  EXPECT_NE(out.find("name is not valid UTF-8 (byte 0xff at offset 3)"), std::string::npos) << out;
  // ...and list still answers.
  std::tie(code, out) = s.Ctl("list");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(good), std::string::npos) << out;

  // A record stored before names were checked (its checkpoint edited to one).
  const std::string other = s.SubmitOk(JobText("other", 4, 2));
  s.learner().Kill9();  // both jobs are on disk since their submission
  const std::string path = s.state_dir() + "/jobs/" + other + "/checkpoint.pt";
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto tensors = DeserializeTensors(*bytes);
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  for (auto& [k, v] : *tensors)
    if (k == "spec") {
      v1::JobSpec spec;
      ASSERT_TRUE(spec.ParseFromString(TensorString(v)));
      spec.set_name("other\xff");
      v = StringTensor(spec.SerializeAsString());
    }
  auto edited = SerializeTensors(*tensors);
  ASSERT_TRUE(edited.ok());
  ASSERT_TRUE(WriteFileAtomically(path, *edited).ok());

  s.StartLearner();
  std::tie(code, out) = s.Ctl("list");
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(good), std::string::npos) << out;
  EXPECT_EQ(out.find(other), std::string::npos) << out;
  std::tie(code, out) = s.Ctl("status " + good);
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(s.learner().WaitForLine(
      absl::StrCat("skipping a job whose stored spec is invalid\" job=", other), 1s))
      << s.learner().Output();
}

// --- 5. Specs that exhaust a worker's memory --------------------------------

TEST(ServicesFaults, DevZeroDataAndOversizedUnitsAreRefusedByValidateSubmitAndEval) {
  Services s("memory");
  s.StartLearner();
  const std::string dev_zero =
      "name: \"z\"\ntask { byte_lm { data_path: \"/dev/zero\" } }\n"
      "lhopt { tasks { task { byte_lm { data_path: \"/dev/zero\" } } weight: 1 } }\n";
  const std::string huge =
      "name: \"huge\"\ntask { fmnist_mlp { hidden_sizes: 4096 } }\npes { num_tasks: 4096 }\n";
  for (const auto& [text, want] :
       std::vector<std::pair<std::string, std::string>>{
           {dev_zero, "task.byte_lm.data_path must be a regular file or a directory of them, got "
                      "/dev/zero: a character device"},
           {huge, "one work unit of this job would need about "}}) {
    const std::string path = s.dir() + "/spec.textproto";
    WriteFile(path, text);
    auto [code, out] = RunCommand(absl::StrCat(Bin(LOPT_LOPT_BINARY), " validate ", path));
    EXPECT_NE(code, 0) << out;
    EXPECT_NE(out.find(want), std::string::npos) << out;
    std::tie(code, out) = s.Submit(text);
    EXPECT_NE(code, 0) << out;
    EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
    EXPECT_NE(out.find(want), std::string::npos) << out;
  }
  auto [code, out] = s.Ctl("list");
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out.find("huge"), std::string::npos) << out;
}

// --- 6. A wrong token is reported as such ----------------------------------

TEST(ServicesFaults, AWorkerWithAWrongTokenLogsUnauthenticatedNotCancelled) {
  Services s("token");
  WriteFile(s.dir() + "/right", "right-token\n");
  WriteFile(s.dir() + "/wrong", "wrong-token\n");
  const int port = FreePort();
  std::vector<std::string> args = s.LearnerArgs(port);
  args.push_back("--auth-token-file=" + s.dir() + "/right");
  auto learner = ChildProcess::Start("learner", args, "msg=serving");
  ASSERT_TRUE(learner.ok()) << learner.status();
  auto worker = ChildProcess::Start(
      "worker",
      {Bin(LOPT_WORKER_BINARY), absl::StrCat("--learner=127.0.0.1:", port), "--metrics-listen=",
       "--name=w", "--threads=1", "--auth-token-file=" + s.dir() + "/wrong"},
      "the learner refused this worker's credentials", 20s);
  ASSERT_TRUE(worker.ok()) << worker.status();
  EXPECT_TRUE((*worker)->WaitForLine("code=UNAUTHENTICATED", 1s)) << (*worker)->Output();
  EXPECT_EQ((*worker)->CountLines("code=1 "), 0) << "CANCELLED: " << (*worker)->Output();
  auto [code, out] = RunCommand(absl::StrCat(Bin(LOPT_LOPTCTL_BINARY), " --learner=127.0.0.1:", port,
                                             " --auth-token-file=", s.dir(), "/wrong list"));
  EXPECT_NE(code, 0) << out;
  EXPECT_NE(out.find("UNAUTHENTICATED: wrong bearer token"), std::string::npos) << out;
}

}  // namespace
}  // namespace lopt
