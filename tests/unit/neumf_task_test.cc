// The neumf task family: MovieLens' format, the synthetic generator, the
// negative samplers, HR/NDCG, particle batching, the forward pass against
// an independent per-particle reference, validation at the door, and the
// family inside the meta-test and an LHOPT mixture.
#include "common/tasks/neumf_task.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "common/elo/evaluation.h"
#include "common/elo/replay_buffer.h"
#include "common/lhopt/lhopt_episode.h"
#include "common/spec/job_limits.h"
#include "common/tasks/movielens.h"
#include "common/tasks/task.h"
#include "common/util/remove_tree.h"
#include "google/protobuf/text_format.h"
#include "kinds/job_door.h"
#include "learner/lhopt_job.h"

namespace lopt {
namespace {

namespace fs = std::filesystem;

fs::path DataDir() {
  return fs::temp_directory_path() / ("lopt_neumf_" + std::to_string(::getpid()));
}
struct RemoveDataDir : public ::testing::Environment {
  void TearDown() override { lopt::RemoveTree(DataDir()).IgnoreError(); }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new RemoveDataDir);

MovieLensGenOptions SmallGen(uint64_t seed = 1) {
  MovieLensGenOptions o;
  o.users = 120;
  o.items = 80;
  o.interactions = 3000;
  o.seed = seed;
  return o;
}

// A small synthetic set written once per process.
std::string SmallDataDir() {
  static const std::string dir = [] {
    auto path = WriteMovieLensRatings(SmallGen(), (DataDir() / "small").string());
    EXPECT_TRUE(path.ok()) << path.status();
    return (DataDir() / "small").string();
  }();
  return dir;
}

v1::NeumfSpec SmallSpec() {
  v1::NeumfSpec s;
  s.set_data_path(SmallDataDir());
  s.set_num_users(120);
  s.set_num_items(80);
  s.set_gmf_dim(4);
  s.set_mlp_embedding_dim(6);
  s.add_mlp_layers(8);
  s.add_mlp_layers(4);
  s.set_batch_size(16);
  s.set_negatives(4);
  s.set_eval_negatives(20);
  return s;
}

std::unique_ptr<Task> SmallTask(const v1::NeumfSpec& spec = SmallSpec()) {
  v1::TaskSpec t;
  *t.mutable_neumf() = spec;
  auto task = MakeTask(t, 0, torch::kCPU);
  EXPECT_TRUE(task.ok()) << task.status();
  return task.ok() ? *std::move(task) : nullptr;
}

// ---------------------------------------------------------------- ratings

TEST(MovieLens, ReadsTheFormatRenumbersAndSplitsLeaveOneOutByTimestamp) {
  // Gapped ids, lines out of time order, CRLF, a pair rated twice, a tie.
  const std::string text =
      "7::30::5::100\n"
      "7::10::3::300\r\n"
      "7::20::4::200\n"
      "3::20::1::50\n"
      "3::30::2::60\n"
      "3::20::5::70\n"   // (3, 20) again, later: one positive
      "\n"
      "9::10::4::80\n"
      "9::40::4::80\n";  // tie at 80: the later line is the test item
  auto d = ParseMovieLensRatings(text, "mem", 10, 10);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_users, 3);  // 3, 7, 9 -> 0, 1, 2
  EXPECT_EQ(d->num_items, 4);  // 10, 20, 30, 40 -> 0, 1, 2, 3
  EXPECT_EQ(d->test_item, (std::vector<int32_t>{1, 0, 3}));  // 3: 20 @70; 7: 10 @300; 9: 40
  // Training positives, grouped by user, in time order.
  EXPECT_EQ(d->train_user, (std::vector<int32_t>{0, 1, 1, 2}));
  EXPECT_EQ(d->train_item, (std::vector<int32_t>{2, 2, 1, 0}));
  EXPECT_EQ(d->user_positives, (std::vector<int32_t>{2, 3, 2}));
  EXPECT_TRUE(d->IsPositive(0, 1));
  EXPECT_TRUE(d->IsPositive(0, 2));
  EXPECT_FALSE(d->IsPositive(0, 0));
  EXPECT_FALSE(d->IsPositive(2, 1));
  EXPECT_EQ(d->positive_keys.size(), 7u);
}

TEST(MovieLens, RefusesMalformedLinesAndTooManyUsersOrItems) {
  auto bad = ParseMovieLensRatings("1::2::3::4\n1::x::3::4\n", "r.dat", 10, 10);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("r.dat:2: expected UserID::MovieID::Rating::Timestamp"),
            std::string::npos)
      << bad.status();
  EXPECT_FALSE(ParseMovieLensRatings("1,2,3,4\n", "r", 10, 10).ok());
  EXPECT_FALSE(ParseMovieLensRatings("1::2::3\n", "r", 10, 10).ok());
  EXPECT_FALSE(ParseMovieLensRatings("", "r", 10, 10).ok());
  auto users = ParseMovieLensRatings("1::1::1::1\n2::1::1::1\n3::2::1::1\n", "r", 2, 10);
  EXPECT_NE(users.status().message().find("3 distinct users, more than task.neumf.num_users (2)"),
            std::string::npos)
      << users.status();
  auto items = ParseMovieLensRatings("1::1::1::1\n1::2::1::2\n", "r", 5, 1);
  EXPECT_NE(items.status().message().find("num_items"), std::string::npos);
  EXPECT_EQ(LoadMovieLensRatings("/nonexistent/ml", 10, 10).status().code(),
            absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------- generator

TEST(MovieLensGen, SameSeedSameBytesOtherSeedOtherBytes) {
  auto a = GenerateMovieLensRatings(SmallGen(3));
  auto b = GenerateMovieLensRatings(SmallGen(3));
  auto c = GenerateMovieLensRatings(SmallGen(4));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

// Counts, format and ranges of a generated set; `o` its options.
void CheckGenerated(const std::string& text, const MovieLensGenOptions& o) {
  std::istringstream in(text);
  std::string line;
  int64_t lines = 0, min_t = INT64_MAX, max_t = 0;
  std::set<int64_t> users, items, pairs;
  std::vector<int64_t> per_user(o.users + 1, 0);
  std::map<int64_t, std::set<int64_t>> times;
  const std::regex format(R"(^(\d+)::(\d+)::([1-5])::(\d+)$)");
  std::smatch m;
  while (std::getline(in, line)) {
    ++lines;
    ASSERT_TRUE(std::regex_match(line, m, format)) << "line " << lines << ": " << line;
    const int64_t u = std::stoll(m[1]), i = std::stoll(m[2]), t = std::stoll(m[4]);
    ASSERT_GE(u, 1);
    ASSERT_LE(u, o.users);
    ASSERT_GE(i, 1);
    ASSERT_LE(i, o.items);
    users.insert(u);
    items.insert(i);
    EXPECT_TRUE(pairs.insert(u * (o.items + 1) + i).second) << "pair rated twice: " << line;
    EXPECT_TRUE(times[u].insert(t).second) << "a user's timestamps must differ: " << line;
    ++per_user[u];
    min_t = std::min(min_t, t);
    max_t = std::max(max_t, t);
  }
  EXPECT_EQ(lines, o.interactions);
  EXPECT_EQ(int64_t(users.size()), o.users);
  EXPECT_EQ(int64_t(items.size()), o.items);
  const int64_t min_c = std::min<int64_t>(20, o.interactions / o.users);
  for (int64_t u = 1; u <= o.users; ++u) {
    EXPECT_GE(per_user[u], min_c) << u;
    EXPECT_LE(per_user[u], o.items / 2) << u;
  }
  EXPECT_GE(min_t, 956703932);  // MovieLens-1M's span
  EXPECT_LE(min_t, 1046454590);
}

TEST(MovieLensGen, SmallSetHasTheRightCountsAndFormat) {
  auto o = SmallGen(5);
  auto text = GenerateMovieLensRatings(o);
  ASSERT_TRUE(text.ok());
  CheckGenerated(*text, o);
}

// The default is MovieLens-1M's size: 6,040 users, 3,706 items, 1,000,209
// ratings; with a Zipf-like popularity (the most popular item is rated far
// more often than the median one) and heavy-tailed users.
TEST(MovieLensGen, DefaultIsMovieLens1MSized) {
  MovieLensGenOptions o;
  auto text = GenerateMovieLensRatings(o);
  ASSERT_TRUE(text.ok());
  auto d = ParseMovieLensRatings(*text, "gen", 6040, 3706);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_users, 6040);
  EXPECT_EQ(d->num_items, 3706);
  EXPECT_EQ(int64_t(d->train_user.size()) + d->num_users, 1000209);
  std::vector<int64_t> pop(d->num_items, 0);
  for (int32_t i : d->train_item) ++pop[i];
  std::sort(pop.begin(), pop.end());
  EXPECT_GT(pop.back(), 10 * pop[pop.size() / 2]);
  std::vector<int32_t> act = d->user_positives;
  std::sort(act.begin(), act.end());
  EXPECT_GE(act.front(), 20);
  EXPECT_GT(act.back(), 5 * act[act.size() / 2]);
}

TEST(MovieLensGen, RefusesCountsItCannotMeet) {
  MovieLensGenOptions o = SmallGen();
  o.interactions = o.users * (o.items / 2) + 1;
  EXPECT_NE(ValidateMovieLensGenOptions(o).message().find("--interactions"), std::string::npos);
  o = SmallGen();
  o.items = 1;
  EXPECT_NE(ValidateMovieLensGenOptions(o).message().find("--items"), std::string::npos);
  o = SmallGen();
  o.interactions = 10;
  EXPECT_FALSE(GenerateMovieLensRatings(o).ok());
}

// ---------------------------------------------------------------- samplers

TEST(NeumfSampler, NeverDrawsAPositiveAndReachesEveryOtherItem) {
  auto data = LoadNeumfData(SmallSpec());
  ASSERT_TRUE(data.ok()) << data.status();
  const auto& d = **data;
  NegativeSampler sampler(*data);
  torch::Generator gen = MakeGenerator(7, 0, 0);
  torch::Tensor users = torch::randint(d.num_users, {200000}, gen);
  torch::Tensor items = sampler.Sample(users, gen);
  ASSERT_EQ(items.sizes(), users.sizes());
  auto u = users.accessor<int64_t, 1>();
  auto it = items.accessor<int64_t, 1>();
  std::vector<std::set<int64_t>> drawn(d.num_users);
  for (int64_t k = 0; k < users.size(0); ++k) {
    ASSERT_GE(it[k], 0);
    ASSERT_LT(it[k], d.num_items);
    ASSERT_FALSE(d.IsPositive(u[k], it[k])) << "user " << u[k] << " item " << it[k];
    drawn[u[k]].insert(it[k]);
  }
  // ~1,700 draws a user over ~55 unrated items: every one of them is drawn.
  for (int64_t user = 0; user < d.num_users; ++user)
    EXPECT_EQ(int64_t(drawn[user].size()), d.num_items - d.user_positives[user]) << user;
}

TEST(NeumfSampler, TestCandidatesAreTheHeldOutItemAndDistinctUnratedItems) {
  auto data = LoadNeumfData(SmallSpec());
  ASSERT_TRUE(data.ok());
  const auto& d = **data;
  RankingCandidates c = MakeRankingCandidates(d, 0, 20, 9);
  ASSERT_EQ(c.items.sizes(), torch::IntArrayRef({d.num_users, 21}));
  for (int64_t k = 0; k < d.num_users; ++k) {
    const int64_t u = c.users[k].item<int64_t>();
    EXPECT_EQ(u, k);
    EXPECT_EQ(c.items[k][0].item<int64_t>(), d.test_item[u]);
    std::set<int64_t> seen;
    for (int64_t j = 1; j < 21; ++j) {
      const int64_t it = c.items[k][j].item<int64_t>();
      EXPECT_FALSE(d.IsPositive(u, it)) << u << " " << it;
      EXPECT_TRUE(seen.insert(it).second) << "item drawn twice for user " << u;
    }
  }
  EXPECT_TRUE(torch::equal(c.items, MakeRankingCandidates(d, 0, 20, 9).items));
  EXPECT_FALSE(torch::equal(c.items, MakeRankingCandidates(d, 0, 20, 10).items));
  RankingCandidates some = MakeRankingCandidates(d, 30, 20, 9);
  EXPECT_EQ(some.users.size(0), 30);
  EXPECT_EQ(some.users[1].item<int64_t>(), 4);  // evenly spaced: 120 / 30
}

// ---------------------------------------------------------------- metrics

TEST(NeumfMetrics, HitRatioAndNdcgOnAHandMadeRanking) {
  // Two particles, three users, the held-out item in column 0 among 12.
  torch::Tensor s = torch::zeros({2, 3, 13});
  for (int64_t j = 1; j < 13; ++j) {
    s[0][0][j] = -double(j);         // user 0: held-out item first (rank 0)
    s[0][1][j] = j <= 3 ? 5.0 : -1.0;  // user 1: three items above it (rank 3)
    s[0][2][j] = j <= 10 ? 5.0 : -1.0;  // user 2: ten above (rank 10: a miss at 10)
  }
  s[0][0][0] = 1;
  s[0][1][0] = 1;
  s[0][2][0] = 1;
  // Particle 1: a tie with every other item counts against the held-out
  // item; NaN is a miss; rank 9 is the last hit.
  s[1][0].fill_(2.0);
  s[1][1][0] = std::nan("");
  for (int64_t j = 1; j < 13; ++j) s[1][2][j] = j <= 9 ? 3.0 : 0.0;
  s[1][2][0] = 1;
  auto [hr, ndcg] = RankingMetrics(s, 10);
  EXPECT_NEAR(hr[0].item<double>(), 2.0 / 3, 1e-6);
  EXPECT_NEAR(ndcg[0].item<double>(), (1.0 + 1.0 / std::log2(5.0)) / 3, 1e-6);
  EXPECT_NEAR(hr[1].item<double>(), 1.0 / 3, 1e-6);
  EXPECT_NEAR(ndcg[1].item<double>(), (1.0 / std::log2(11.0)) / 3, 1e-6);
  auto [hr1, ndcg1] = RankingMetrics(s, 1);  // HR@1: only user 0 of particle 0
  EXPECT_NEAR(hr1[0].item<double>(), 1.0 / 3, 1e-6);
  EXPECT_NEAR(ndcg1[0].item<double>(), 1.0 / 3, 1e-6);
  EXPECT_EQ(hr1[1].item<double>(), 0.0);
}

// ---------------------------------------------------------------- the task

TEST(NeumfTask, ShapesAndAnUntrainedModelNearChance) {
  auto task = SmallTask();
  ASSERT_TRUE(task);
  const auto& shapes = task->param_shapes();
  ASSERT_EQ(shapes.size(), 4u + 2 * 2 + 2);
  EXPECT_EQ(shapes[0], (std::vector<int64_t>{120, 4}));
  EXPECT_EQ(shapes[3], (std::vector<int64_t>{80, 6}));
  EXPECT_EQ(shapes[4], (std::vector<int64_t>{12, 8}));
  EXPECT_EQ(shapes[8], (std::vector<int64_t>{4 + 4, 1}));
  EXPECT_EQ(task->name(), "neumf_g4_m6_8x4_neg4");
  torch::Generator gen = MakeGenerator(1, 0, 0);
  TaskState s = task->Init(2, 1, gen);
  Batch b = task->SampleBatch(2, gen);
  ASSERT_EQ(b.x.sizes(), torch::IntArrayRef({2, 16 * 5, 2}));
  ASSERT_EQ(b.y.sizes(), torch::IntArrayRef({2, 16 * 5}));
  EXPECT_EQ(b.y.sum().item<double>(), 2 * 16);  // one positive in five
  torch::Tensor loss = task->LossAndGrad(s, b, nullptr);
  EXPECT_NEAR(loss.mean().item<double>(), std::log(2.0), 0.05);
  EvalResult ev = task->Evaluate(s);
  ASSERT_TRUE(ev.hit_rate.defined());
  EXPECT_EQ(ev.hit_rate.sizes(), torch::IntArrayRef({2}));
  EXPECT_TRUE(torch::isnan(ev.accuracy).all().item<bool>());
  EXPECT_NEAR(task->MaxMetaLoss(), 1.5 * std::log(2.0), 1e-12);
}

// The positives of a batch are training positives; its negatives are never
// positives of their user, and each follows its positive's user.
TEST(NeumfTask, BatchesPairTrainingPositivesWithUnratedItems) {
  auto task = SmallTask();
  auto data = LoadNeumfData(SmallSpec());
  ASSERT_TRUE(task && data.ok());
  const auto& d = **data;
  std::set<int64_t> train;
  for (size_t k = 0; k < d.train_user.size(); ++k)
    train.insert(int64_t(d.train_user[k]) * d.num_items + d.train_item[k]);
  torch::Generator gen = MakeGenerator(2, 0, 0);
  for (int rep = 0; rep < 20; ++rep) {
    Batch b = task->SampleBatch(3, gen);
    auto x = b.x.accessor<int64_t, 3>();
    for (int64_t g = 0; g < 3; ++g)
      for (int64_t k = 0; k < 16; ++k) {
        EXPECT_TRUE(train.count(x[g][k][0] * d.num_items + x[g][k][1])) << "not a training positive";
        for (int64_t n = 0; n < 4; ++n) {
          const int64_t at = 16 + k * 4 + n;
          EXPECT_EQ(x[g][at][0], x[g][k][0]);
          EXPECT_FALSE(d.IsPositive(x[g][at][0], x[g][at][1]));
        }
      }
  }
}

// Each particle computes what it computes alone: P = 6 (3 groups x 2
// replicas) against each particle with P = 1 on its group's batch, in
// loss, gradients and every test metric.
TEST(NeumfTask, ParticleBatchingEqualsEachParticleAlone) {
  auto task = SmallTask();
  ASSERT_TRUE(task);
  torch::Generator gen = MakeGenerator(3, 0, 0);
  TaskState s = task->Init(3, 2, gen);
  // Make the replicas differ too (as after some steps of training).
  for (auto& p : s.params) p.add_(torch::randn(p.sizes(), gen) * 0.05);
  Batch batch = task->SampleBatch(3, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(s, batch, &grads);
  ASSERT_EQ(loss.sizes(), torch::IntArrayRef({6}));
  EvalResult ev = task->Evaluate(s);
  for (int64_t i = 0; i < 6; ++i) {
    TaskState one;
    for (const auto& p : s.params) one.params.push_back(p.slice(0, i, i + 1));
    const int64_t g = i % 3;
    Batch b1{batch.x.slice(0, g, g + 1), batch.y.slice(0, g, g + 1)};
    std::vector<torch::Tensor> g1;
    torch::Tensor l1 = task->LossAndGrad(one, b1, &g1);
    EXPECT_NEAR(l1.item<double>(), loss[i].item<double>(), 1e-6) << i;
    for (size_t k = 0; k < g1.size(); ++k)
      EXPECT_TRUE(torch::allclose(g1[k][0], grads[k][i], 1e-5, 1e-8)) << i << " " << k;
    EvalResult e1 = task->Evaluate(one);
    EXPECT_NEAR(e1.loss.item<double>(), ev.loss[i].item<double>(), 1e-6);
    EXPECT_EQ(e1.hit_rate.item<double>(), ev.hit_rate[i].item<double>());
    EXPECT_NEAR(e1.ndcg.item<double>(), ev.ndcg[i].item<double>(), 1e-6);
  }
}

// The batched forward pass against NeuMF written out for one particle with
// plain 2-D ops (rows picked one pair at a time): the same loss, and
// autograd's gradients of that reference equal the task's.
TEST(NeumfTask, ForwardAndGradientsMatchAPerPairReference) {
  v1::NeumfSpec spec = SmallSpec();
  spec.set_activation(v1::TANH);  // smooth, and not the default
  auto task = SmallTask(spec);
  ASSERT_TRUE(task);
  torch::Generator gen = MakeGenerator(4, 0, 0);
  TaskState s = task->Init(2, 1, gen);
  for (auto& p : s.params) p.add_(torch::randn(p.sizes(), gen) * 0.3);
  Batch batch = task->SampleBatch(2, gen);
  std::vector<torch::Tensor> grads;
  torch::Tensor loss = task->LossAndGrad(s, batch, &grads);
  for (int64_t p = 0; p < 2; ++p) {
    std::vector<torch::Tensor> w;
    for (const auto& t : s.params) w.push_back(t[p].detach().clone().requires_grad_(true));
    auto x = batch.x[p];
    auto y = batch.y[p];
    torch::Tensor total = torch::zeros({});
    const int64_t n = x.size(0);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t u = x[k][0].item<int64_t>(), i = x[k][1].item<int64_t>();
      torch::Tensor gmf = w[0][u] * w[1][i];
      torch::Tensor h = torch::cat({w[2][u], w[3][i]});
      h = torch::tanh(torch::matmul(h, w[4]) + w[5]);
      h = torch::tanh(torch::matmul(h, w[6]) + w[7]);
      torch::Tensor logit = torch::matmul(torch::cat({gmf, h}), w[8]).squeeze() + w[9].squeeze();
      const double label = y[k].item<double>();
      // -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))]
      total = total - (label * torch::log_sigmoid(logit) + (1 - label) * torch::log_sigmoid(-logit));
    }
    torch::Tensor mean = total / double(n);
    EXPECT_NEAR(mean.item<double>(), loss[p].item<double>(), 1e-5) << p;
    auto ref = torch::autograd::grad({mean}, w);
    for (size_t k = 0; k < w.size(); ++k)
      EXPECT_TRUE(torch::allclose(ref[k], grads[k][p], 1e-4, 1e-7)) << p << " " << k;
  }
}

// AdamW trains it: the training loss falls and the held-out items climb the
// ranking, well above an untrained model's HR@10 (about 10 / 21 here).
TEST(NeumfTask, AdamWTrainsItAndTheMetaTestReportsHitRateAndNdcg) {
  auto task = SmallTask();
  ASSERT_TRUE(task);
  MetaTestConfig c;
  c.steps = 300;
  c.seeds = 2;
  c.adamw_lrs = {1e-2};
  c.record_every = 50;
  c.test_every = 100;
  MetaTestReport r = RunMetaTest(*task, c, {});
  ASSERT_EQ(r.runs.size(), 2u);
  for (const auto& run : r.runs) {
    EXPECT_LT(run.final_train_loss, run.curve.front() - 0.1) << run.final_train_loss;
    EXPECT_GT(run.test_hit_rate, 0.6);
    EXPECT_GT(run.test_ndcg, 0.3);
    EXPECT_LE(run.test_ndcg, run.test_hit_rate);
    EXPECT_EQ(run.test_hr_curve.size(), 3u);
    EXPECT_EQ(run.test_ndcg_curve.size(), 3u);
    EXPECT_NEAR(run.test_hr_curve.back(), run.test_hit_rate, 1e-6);
  }
}

// ---------------------------------------------------------------- the door

v1::JobSpec NeumfJob() {
  v1::JobSpec job;
  *job.mutable_task()->mutable_neumf() = SmallSpec();
  FillJobDefaults(&job);
  return job;
}

TEST(NeumfJob, DefaultsAndAValidJob) {
  v1::JobSpec job;
  job.mutable_task()->mutable_neumf()->set_data_path("/tmp/ratings.dat");
  FillJobDefaults(&job);
  EXPECT_EQ(std::vector<int>(job.task().neumf().mlp_layers().begin(),
                             job.task().neumf().mlp_layers().end()),
            (std::vector<int>{32, 16, 8}));
  EXPECT_TRUE(ValidateJob(job).ok()) << ValidateJob(job);
  // MovieLens-1M's tables at the defaults, 16 particles: well under 8 GiB.
  EXPECT_LT(EstimateUnitBytes(job), int64_t{4} << 30);
  EXPECT_GT(EstimateUnitBytes(job), int64_t{200} << 20);
}

TEST(NeumfJob, BadFieldsAreRefusedNamingTheField) {
  struct Case {
    std::function<void(v1::NeumfSpec*)> edit;
    std::string message;
  };
  std::vector<Case> cases = {
      {[](v1::NeumfSpec* s) { s->clear_data_path(); },
       "task.neumf.data_path must name a MovieLens ratings.dat file"},
      {[](v1::NeumfSpec* s) { s->set_data_path("/dev/zero"); },
       "task.neumf.data_path must be a regular file or a directory"},
      {[](v1::NeumfSpec* s) { s->set_num_users(0); }, "task.neumf.num_users must be in [1, "},
      {[](v1::NeumfSpec* s) { s->set_num_items(1); }, "task.neumf.num_items must be in [2, "},
      {[](v1::NeumfSpec* s) { s->set_gmf_dim(0); }, "task.neumf.gmf_dim must be in [1, 4096], got 0"},
      {[](v1::NeumfSpec* s) { s->set_mlp_embedding_dim(-2); }, "task.neumf.mlp_embedding_dim"},
      {[](v1::NeumfSpec* s) { s->set_mlp_layers(1, 0); }, "task.neumf.mlp_layers[1] must be in [1, 65536], got 0"},
      {[](v1::NeumfSpec* s) { s->set_negatives(0); }, "task.neumf.negatives must be in [1, 1024], got 0"},
      {[](v1::NeumfSpec* s) { s->set_batch_size(0); }, "task.neumf.batch_size"},
      {[](v1::NeumfSpec* s) { s->set_eval_negatives(80); },
       "task.neumf.eval_negatives must be < num_items (80)"},
      {[](v1::NeumfSpec* s) { s->set_eval_users(121); }, "task.neumf.eval_users must be in [0, 120], got 121"},
      {[](v1::NeumfSpec* s) { s->set_activation(v1::ACTIVATION_UNSPECIFIED); },
       "task.neumf.activation must be one of"},
      // Tables too big for a worker: the memory estimate names the fields.
      {[](v1::NeumfSpec* s) {
         s->set_num_users(1 << 24);
         s->set_gmf_dim(512);
       },
       "task.neumf.{num_users, num_items, gmf_dim"},
  };
  for (const auto& c : cases) {
    v1::JobSpec job = NeumfJob();
    c.edit(job.mutable_task()->mutable_neumf());
    absl::Status s = ValidateJob(job);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s << "\nwanted: " << c.message;
  }
  // The same inside an LHOPT mixture, with the entry's path.
  auto lh = JobFromText(R"(
    task { noisy_quadratic {} }
    lhopt { tasks { task { noisy_quadratic {} } }
            tasks { task { neumf { data_path: "/tmp" negatives: 0 } } } })",
                        "mix");
  EXPECT_EQ(lh.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(lh.status().message().find("lhopt.tasks[1].task.neumf.negatives must be in [1, 1024]"),
            std::string::npos)
      << lh.status();
}

TEST(NeumfJob, DataThatDoesNotFitTheTablesIsRefusedAtLoad) {
  v1::NeumfSpec spec = SmallSpec();
  spec.set_num_users(100);  // the data has 120
  v1::TaskSpec t;
  *t.mutable_neumf() = spec;
  auto task = MakeTask(t, 0, torch::kCPU);
  EXPECT_EQ(task.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(task.status().message().find("more than task.neumf.num_users (100)"), std::string::npos)
      << task.status();
  spec = SmallSpec();
  spec.set_eval_negatives(79);  // users rate up to 40 of the 80 items
  *t.mutable_neumf() = spec;
  task = MakeTask(t, 0, torch::kCPU);
  EXPECT_NE(task.status().message().find("lower eval_negatives"), std::string::npos) << task.status();
  spec = SmallSpec();
  spec.set_data_path("/nonexistent/ml-1m");
  *t.mutable_neumf() = spec;
  EXPECT_EQ(MakeTask(t, 0, torch::kCPU).status().code(), absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------- LHOPT

// A mixture entry of an LHOPT job: a unit of PPO episodes runs on it (its
// baseline, the controller's decisions, the rewards) and reports HR/NDCG.
TEST(NeumfJob, RunsAsAnEntryOfAnLhoptMixture) {
  v1::NeumfSpec spec = SmallSpec();
  std::string spec_text;
  google::protobuf::TextFormat::PrintToString(spec, &spec_text);
  auto job = JobFromText(absl::StrCat(R"(
    name: "lhopt_neumf" seed: 3
    task { neumf { )", spec_text, R"( } }
    lhopt {
      tasks { task { neumf { )", spec_text, R"( } } }
      min_inner_steps: 20 max_inner_steps: 30 min_decisions: 2 max_decisions: 4
      particles: 2 episodes_per_iteration: 2 iterations: 1 hidden_size: 8
      curve_points: 3 baseline_refresh_iterations: 1 instances_per_task: 1
    })"),
                         "neumf_lhopt");
  ASSERT_TRUE(job.ok()) << job.status();
  LhoptJob lj(*job);
  InMemoryReplayBuffer buffer;
  LhoptEpisodeRunner runner(*job, &buffer, "t");
  LhoptUnit unit = lj.Start();
  ASSERT_TRUE(unit.task.has_neumf());
  auto r = runner.Run(unit);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(int64_t(r->segments.size()), 2);
  EXPECT_TRUE(torch::isfinite(r->episode_rewards).all().item<bool>());
}

}  // namespace
}  // namespace lopt
