#include "tests/support/service_cluster.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace lopt::testing {

using namespace std::chrono_literals;

std::string TestBinary(const std::string& built) {
  const char* dir = std::getenv("LOPT_TEST_BIN_DIR");
  if (dir == nullptr || *dir == '\0') return built;
  return absl::StrCat(dir, "/", built.substr(built.rfind('/') + 1));
}

std::string MakeTestDir(const std::string& prefix, const std::string& name) {
  std::string d = absl::StrCat(::testing::TempDir(), prefix, "_", name, "_", getpid());
  RunCommand("rm -rf '" + d + "' && mkdir -p '" + d + "'");
  return d;
}

void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string SmallJobText(const std::string& name, int steps, int shards, int staleness,
                         int checkpoint_every, int seed) {
  return absl::StrCat(
      "name: \"", name, "\"\nseed: ", seed, "\n",
      "task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }\n",
      "pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }\n",
      "budget { outer_steps: ", steps, " checkpoint_every: ", checkpoint_every, " }\n",
      "cluster { shards: ", shards, " max_staleness: ", staleness, " }\n");
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

std::string Scrape(int port) {
  absl::StatusOr<std::string> body;
  for (int i = 0; i < 3; ++i) {
    body = HttpGet(port, "/metrics");
    if (body.ok()) return *body;
  }
  ADD_FAILURE() << "cannot scrape 127.0.0.1:" << port << ": " << body.status();
  return "";
}

TlsFiles MakeTlsFiles(const std::string& dir) {
  const std::string d = dir + "/tls";
  auto [code, out] = RunCommand(absl::StrCat(
      "set -e; mkdir -p ", d, "; cd ", d, "; ",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=lopt-test-ca "
      "-keyout ca.key -out ca.pem; ",
      "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
      "-keyout other.key -out other_ca.pem; ",
      "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key "
      "-out server.csr; ",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf; ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile ext.cnf -out server.pem"));
  EXPECT_EQ(code, 0) << out;
  return {d + "/ca.pem", d + "/server.pem", d + "/server.key", d + "/other_ca.pem"};
}

ServiceCluster::ServiceCluster(ServiceBinaries binaries, std::string dir)
    : bin_(std::move(binaries)), dir_(std::move(dir)), buffer_db_(dir_ + "/buffer") {
  bin_.buffer = TestBinary(bin_.buffer);
  bin_.learner = TestBinary(bin_.learner);
  bin_.worker = TestBinary(bin_.worker);
  bin_.loptctl = TestBinary(bin_.loptctl);
}

const TlsFiles& ServiceCluster::EnableTls() {
  tls_ = MakeTlsFiles(dir_);
  return tls_;
}

void ServiceCluster::StartBuffer() {
  if (buffer_port_ == 0) buffer_port_ = FreePort();
  std::vector<std::string> args = {bin_.buffer, absl::StrCat("--listen=127.0.0.1:", buffer_port_),
                                   "--metrics-listen=127.0.0.1:0", "--db-path=" + buffer_db_};
  if (!tls_.ca.empty())
    for (std::string a : {"--tls-cert-file=" + tls_.cert, "--tls-key-file=" + tls_.key})
      args.push_back(a);
  if (!token_file_.empty()) args.push_back("--auth-token-file=" + token_file_);
  args.insert(args.end(), buffer_args_.begin(), buffer_args_.end());
  buffer_.reset();
  auto p = ChildProcess::Start("buffer", args, "msg=serving");
  ASSERT_TRUE(p.ok()) << p.status();
  buffer_ = std::move(*p);
}

std::vector<std::string> ServiceCluster::LearnerArgs(int port) const {
  std::vector<std::string> args = {bin_.learner,
                                   absl::StrCat("--listen=127.0.0.1:", port),
                                   "--metrics-listen=127.0.0.1:0",
                                   "--state-dir=" + state_dir(),
                                   "--worker-timeout-ms=4000",
                                   "--heartbeat-interval-ms=200",
                                   "--threads=1"};
  if (!tls_.ca.empty())
    for (std::string a : {"--tls-cert-file=" + tls_.cert, "--tls-key-file=" + tls_.key,
                          "--tls-ca-file=" + tls_.ca})
      args.push_back(a);
  if (!token_file_.empty()) args.push_back("--auth-token-file=" + token_file_);
  return args;
}

void ServiceCluster::StartLearner(bool ignore_sigxfsz) {
  if (learner_port_ == 0) learner_port_ = FreePort();
  std::vector<std::string> args = LearnerArgs(learner_port_);
  if (buffer_port_ != 0) args.push_back(absl::StrCat("--buffer=127.0.0.1:", buffer_port_));
  if (ignore_sigxfsz)
    args.insert(args.begin(), {"/bin/sh", "-c", "trap '' XFSZ; exec \"$0\" \"$@\""});
  learner_.reset();
  auto p = ChildProcess::Start("learner", args, "msg=serving");
  ASSERT_TRUE(p.ok()) << p.status();
  learner_ = std::move(*p);
}

void ServiceCluster::StartWorker(const std::string& name, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {bin_.worker, "--learner=" + learner_target(),
                                   "--metrics-listen=127.0.0.1:0", "--name=" + name,
                                   "--threads=1"};
  if (buffer_port_ != 0) args.push_back(absl::StrCat("--buffer=127.0.0.1:", buffer_port_));
  if (!tls_.ca.empty()) args.push_back("--tls-ca-file=" + tls_.ca);
  if (!token_file_.empty()) args.push_back("--auth-token-file=" + token_file_);
  args.insert(args.end(), extra.begin(), extra.end());
  workers_.erase(name);
  auto p = ChildProcess::Start(name, args, "msg=connected");
  ASSERT_TRUE(p.ok()) << p.status();
  workers_[name] = std::move(*p);
}

std::string ServiceCluster::learner_target() const {
  return absl::StrCat("127.0.0.1:", learner_port_);
}

std::string ServiceCluster::Ctl(const std::string& args) const {
  return absl::StrCat(bin_.loptctl, " --learner=", learner_target(),
                      tls_.ca.empty() ? "" : " --tls-ca-file=" + tls_.ca,
                      token_file_.empty() ? "" : " --auth-token-file=" + token_file_, " ", args);
}

std::pair<int, std::string> ServiceCluster::RunCtl(const std::string& args) const {
  return RunCommand(Ctl(args));
}

std::pair<int, std::string> ServiceCluster::TrySubmit(const std::string& text,
                                                      const std::string& flags) {
  const std::string path = absl::StrCat(dir_, "/job", ++jobs_, ".textproto");
  WriteTextFile(path, text);
  return RunCtl(absl::StrCat("submit ", path, flags.empty() ? "" : " ", flags));
}

std::string ServiceCluster::Submit(const std::string& text, bool watch, std::string* output) {
  auto [code, out] = TrySubmit(text, watch ? "--watch --no-progress" : "");
  if (output) *output = out;
  EXPECT_EQ(code, 0) << out;
  return out.substr(0, out.find('\n'));
}

std::string ServiceCluster::PollStatus(const std::string& id, const std::string& want,
                                       std::chrono::milliseconds timeout) const {
  std::string last;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    last = RunCtl("status " + id).second;
    if (last.find(want) != std::string::npos) break;
    std::this_thread::sleep_for(200ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return last;
}

double ServiceCluster::LearnerMetric(const std::string& metric, const std::string& label) {
  return MetricValue(Scrape(learner_->metrics_port()), metric, label);
}

}  // namespace lopt::testing
