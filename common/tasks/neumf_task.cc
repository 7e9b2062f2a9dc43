#include "common/tasks/neumf_task.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <tuple>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tasks/activation.h"
#include "common/tasks/loss_and_grad.h"

namespace lopt {
namespace {

torch::Tensor FromInts(const std::vector<int32_t>& v) {
  return torch::tensor(at::ArrayRef<int32_t>(v.data(), v.size()), torch::kInt32);
}

// What every task of one data set shares: a process builds many (LHOPT's
// task instances, ELO's shards and mixture entries, the meta-test), and at
// MovieLens-1M's size these are ~20 MB a copy. Made once a data set, test
// split and device, and kept while a task uses them.
struct SharedTensors {
  std::shared_ptr<const ImplicitFeedback> data;  // keeps the key's address taken
  torch::Tensor train_user, train_item;          // CPU int32: batches are drawn there
  std::unique_ptr<NegativeSampler> sampler;
  torch::Tensor eval_users, eval_items;          // on the task's device
};

std::shared_ptr<const SharedTensors> SharedTensorsFor(std::shared_ptr<const ImplicitFeedback> data,
                                                      const v1::NeumfSpec& spec,
                                                      torch::Device device) {
  using Key = std::tuple<const ImplicitFeedback*, int64_t, int64_t, uint64_t, std::string>;
  static std::mutex mu;
  static std::map<Key, std::weak_ptr<const SharedTensors>> cache;
  std::lock_guard<std::mutex> lock(mu);
  const Key key{data.get(), spec.eval_users(), spec.eval_negatives(), spec.seed(), device.str()};
  if (auto it = cache.find(key); it != cache.end())
    if (auto hit = it->second.lock()) return hit;
  for (auto it = cache.begin(); it != cache.end();)
    it = it->second.expired() ? cache.erase(it) : std::next(it);
  auto t = std::make_shared<SharedTensors>();
  t->data = data;
  t->train_user = FromInts(data->train_user);
  t->train_item = FromInts(data->train_item);
  t->sampler = std::make_unique<NegativeSampler>(data);
  RankingCandidates c =
      MakeRankingCandidates(*data, spec.eval_users(), spec.eval_negatives(), spec.seed());
  t->eval_users = c.users.to(device);
  t->eval_items = c.items.to(device);
  cache[key] = t;
  return t;
}

class NeumfTask : public Task {
 public:
  NeumfTask(const v1::NeumfSpec& spec, std::shared_ptr<const ImplicitFeedback> data,
            torch::Device device)
      : spec_(spec),
        data_(std::move(data)),
        device_(device),
        g_(spec.gmf_dim()),
        m_(spec.mlp_embedding_dim()),
        users_(spec.num_users()),
        items_(spec.num_items()) {
    layers_.assign(spec.mlp_layers().begin(), spec.mlp_layers().end());
    if (layers_.empty()) layers_ = {32, 16, 8};
    shapes_ = {{users_, g_}, {items_, g_}, {users_, m_}, {items_, m_}};
    int64_t in = 2 * m_;
    for (int64_t w : layers_) {
      shapes_.push_back({in, w});
      shapes_.push_back({w});
      in = w;
    }
    shapes_.push_back({g_ + in, 1});
    shapes_.push_back({1});
    shared_ = SharedTensorsFor(data_, spec, device_);
  }

  torch::Device device() const override { return device_; }

  std::string name() const override {
    return absl::StrCat("neumf_g", g_, "_m", m_, "_", absl::StrJoin(layers_, "x"), "_neg",
                        spec_.negatives());
  }
  const std::vector<std::vector<int64_t>>& param_shapes() const override { return shapes_; }

  // NCF's initialisation: embeddings N(0, 0.01^2); layers N(0, 1/fan_in),
  // biases 0.
  TaskState Init(int64_t groups, int64_t replicas, torch::Generator& gen) const override {
    TaskState s;
    auto normal = [&](std::vector<int64_t> shape, double sd) {
      shape.insert(shape.begin(), groups);
      return RepeatGroups(torch::randn(shape, gen) * sd, replicas).to(device_);
    };
    auto zeros = [&](std::vector<int64_t> shape) {
      shape.insert(shape.begin(), groups * replicas);
      return torch::zeros(shape, torch::TensorOptions().device(device_));
    };
    for (int k = 0; k < 4; ++k) s.params.push_back(normal(shapes_[k], 0.01));
    for (size_t k = 4; k < shapes_.size(); k += 2) {
      s.params.push_back(normal(shapes_[k], 1.0 / std::sqrt(double(shapes_[k][0]))));
      s.params.push_back(zeros(shapes_[k + 1]));
    }
    return s;
  }

  // x: [groups, B (1 + negatives), 2] int64 (user, item): the B positives,
  // then their negatives (negatives each, in order); y: [groups, B (1 +
  // negatives)] float labels.
  Batch SampleBatch(int64_t groups, torch::Generator& gen) const override {
    const int64_t b = spec_.batch_size(), k = spec_.negatives(), n = groups * b;
    torch::Tensor pick = torch::randint(shared_->train_user.size(0), {n}, gen);
    torch::Tensor users = shared_->train_user.index_select(0, pick).to(torch::kInt64);
    torch::Tensor items = shared_->train_item.index_select(0, pick).to(torch::kInt64);
    torch::Tensor neg_users = users.repeat_interleave(k);
    torch::Tensor neg_items = shared_->sampler->Sample(neg_users, gen);
    torch::Tensor u = torch::cat({users.view({groups, b}), neg_users.view({groups, b * k})}, 1);
    torch::Tensor i = torch::cat({items.view({groups, b}), neg_items.view({groups, b * k})}, 1);
    torch::Tensor y = torch::cat({torch::ones({groups, b}), torch::zeros({groups, b * k})}, 1);
    return Batch{torch::stack({u, i}, -1).to(device_), y.to(device_)};
  }

  torch::Tensor LossAndGrad(const TaskState& s, const Batch& batch,
                            std::vector<torch::Tensor>* grads) const override {
    const int64_t reps = s.num_particles() / batch.x.size(0);
    torch::Tensor x = RepeatGroups(batch.x, reps);  // [P, M, 2]
    torch::Tensor y = RepeatGroups(batch.y, reps);  // [P, M]
    auto loss_of = [&](const std::vector<torch::Tensor>& p) {
      torch::Tensor logits = Logits(p, x.select(2, 0), x.select(2, 1));
      return torch::binary_cross_entropy_with_logits(logits, y, {}, {}, at::Reduction::None)
          .mean(1);
    };
    return LossAndGradOf(s.params, loss_of, grads);
  }

  // The test split in chunks of users (bounded memory at any P): the test
  // loss is the mean binary cross-entropy over each user's 1 + N pairs
  // (label 1 for the test item), HR@10 and NDCG@10 the ranking of the test
  // item among them.
  EvalResult Evaluate(const TaskState& s) const override {
    torch::NoGradGuard no_grad;
    const int64_t p = s.num_particles();
    const torch::Tensor& eval_users = shared_->eval_users;
    const torch::Tensor& eval_items = shared_->eval_items;
    const int64_t e = eval_users.size(0), c = eval_items.size(1);
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 18) / (p * c));
    auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
    torch::Tensor loss = torch::zeros({p}, f32), hits = torch::zeros({p}, f32),
                  gains = torch::zeros({p}, f32);
    torch::Tensor labels = torch::zeros({1, 1, c}, f32);
    labels.select(2, 0).fill_(1);
    for (int64_t lo = 0; lo < e; lo += chunk) {
      const int64_t n = std::min(chunk, e - lo);
      torch::Tensor items = eval_items.slice(0, lo, lo + n);                   // [n, c]
      torch::Tensor users = eval_users.slice(0, lo, lo + n).unsqueeze(1).expand({n, c});
      torch::Tensor logits =
          Logits(s.params, users.reshape({1, n * c}), items.reshape({1, n * c})).view({p, n, c});
      loss += torch::binary_cross_entropy_with_logits(logits, labels.expand({p, n, c}), {}, {},
                                                      at::Reduction::None)
                  .sum({1, 2});
      auto [h, g] = RankingHitsAndGains(logits, kRankingCutoff);
      hits += h.sum(1);
      gains += g.sum(1);
    }
    EvalResult r;
    r.loss = (loss / double(e * c)).cpu();
    r.accuracy = torch::full({p}, std::nan(""));
    r.hit_rate = (hits / double(e)).cpu();
    r.ndcg = (gains / double(e)).cpu();
    return r;
  }

  double MaxMetaLoss() const override { return 1.5 * std::log(2.0); }

 private:
  // Logits [P, N] of pairs (users, items), each [P, N] or [1, N] (shared by
  // every particle) int64.
  torch::Tensor Logits(const std::vector<torch::Tensor>& p, const torch::Tensor& users,
                       const torch::Tensor& items) const {
    const int64_t np = p[0].size(0), n = users.size(1);
    auto rows = [&](const torch::Tensor& table, const torch::Tensor& idx) {  // [P, N, d]
      return table.gather(1, idx.unsqueeze(-1).expand({np, n, table.size(2)}));
    };
    torch::Tensor gmf = rows(p[0], users) * rows(p[1], items);
    torch::Tensor h = torch::cat({rows(p[2], users), rows(p[3], items)}, 2);
    size_t k = 4;
    for (size_t l = 0; l < layers_.size(); ++l, k += 2)
      h = Activate(torch::baddbmm(p[k + 1].unsqueeze(1), h, p[k]), spec_.activation());
    return torch::baddbmm(p[k + 1].unsqueeze(1), torch::cat({gmf, h}, 2), p[k]).squeeze(2);
  }

  v1::NeumfSpec spec_;
  std::shared_ptr<const ImplicitFeedback> data_;
  torch::Device device_;
  int64_t g_, m_, users_, items_;
  std::vector<int64_t> layers_;
  std::vector<std::vector<int64_t>> shapes_;
  std::shared_ptr<const SharedTensors> shared_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const ImplicitFeedback>> LoadNeumfData(const v1::NeumfSpec& spec) {
  static std::mutex mu;
  static std::map<std::tuple<std::string, int64_t, int64_t, int64_t, int64_t>,
                  std::shared_ptr<const ImplicitFeedback>>
      cache;
  std::string file = spec.data_path();
  struct stat st;
  if (::stat(file.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) file += "/ratings.dat";
  std::shared_ptr<const ImplicitFeedback> data;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (::stat(file.c_str(), &st) == 0) {
      auto key = std::make_tuple(file, int64_t(st.st_size),
                                 int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                                 int64_t(spec.num_users()), int64_t(spec.num_items()));
      if (auto it = cache.find(key); it != cache.end()) {
        data = it->second;
      } else {
        auto loaded = LoadMovieLensRatings(file, spec.num_users(), spec.num_items());
        if (!loaded.ok()) return loaded.status();
        data = std::make_shared<const ImplicitFeedback>(*std::move(loaded));
        if (cache.size() >= 8) cache.clear();
        cache[key] = data;
      }
    } else {
      auto loaded = LoadMovieLensRatings(file, spec.num_users(), spec.num_items());
      if (!loaded.ok()) return loaded.status();  // NOT_FOUND, naming the file
      data = std::make_shared<const ImplicitFeedback>(*std::move(loaded));
    }
  }
  if (data->num_items < 2)
    return absl::InvalidArgumentError(
        absl::StrCat("neumf: ", file, " rates ", data->num_items, " item(s); at least 2 are needed"));
  if (data->train_user.empty())
    return absl::InvalidArgumentError(absl::StrCat(
        "neumf: ", file, " has no training positives (each user's only rating is its test item)"));
  const auto most = std::max_element(data->user_positives.begin(), data->user_positives.end());
  if (*most + int64_t{spec.eval_negatives()} > data->num_items)
    return absl::InvalidArgumentError(absl::StrCat(
        "neumf: a user of ", file, " rated ", *most, " of its ", data->num_items,
        " items, leaving fewer than task.neumf.eval_negatives (", spec.eval_negatives(),
        ") to rank the test item among: lower eval_negatives"));
  return data;
}

NegativeSampler::NegativeSampler(std::shared_ptr<const ImplicitFeedback> data)
    : data_(std::move(data)) {
  const auto& k = data_->positive_keys;
  keys_ = torch::tensor(at::ArrayRef<int64_t>(k.data(), k.size()), torch::kInt64);
}

torch::Tensor NegativeSampler::Sample(const torch::Tensor& users, torch::Generator& gen) const {
  const int64_t n_items = data_->num_items;
  torch::Tensor u = users.to(torch::kInt64);
  torch::Tensor items = torch::randint(n_items, {u.size(0)}, gen);
  if (keys_.numel() == 0) return items;
  const int64_t last = keys_.size(0) - 1;
  // Redraw the positives until none is left: every user leaves at least
  // eval_negatives >= 1 items unrated (LoadNeumfData), so this ends.
  torch::Tensor todo = torch::arange(u.size(0));
  while (todo.numel() > 0) {
    torch::Tensor keys = u.index_select(0, todo) * n_items + items.index_select(0, todo);
    torch::Tensor at = torch::searchsorted(keys_, keys).clamp_max(last);
    torch::Tensor hit = keys_.index_select(0, at) == keys;
    todo = todo.masked_select(hit);
    if (todo.numel() == 0) break;
    items.index_put_({todo}, torch::randint(n_items, {todo.size(0)}, gen));
  }
  return items;
}

RankingCandidates MakeRankingCandidates(const ImplicitFeedback& data, int64_t eval_users,
                                        int64_t eval_negatives, uint64_t seed) {
  const int64_t U = data.num_users, I = data.num_items;
  const int64_t e = (eval_users <= 0 || eval_users >= U) ? U : eval_users;
  const int64_t c = 1 + eval_negatives;
  RankingCandidates r;
  r.users = torch::empty({e}, torch::kInt64);
  r.items = torch::empty({e, c}, torch::kInt64);
  auto users = r.users.accessor<int64_t, 1>();
  auto items = r.items.accessor<int64_t, 2>();
  std::mt19937_64 rng(seed ^ 0x4e65754d46ULL);
  std::vector<char> taken(I, 0);
  for (int64_t k = 0; k < e; ++k) {
    const int64_t u = e == U ? k : k * U / e;
    users[k] = u;
    items[k][0] = data.test_item[u];
    for (int64_t j = 1; j < c;) {
      const int64_t it = int64_t(rng() % uint64_t(I));
      if (taken[it] || data.IsPositive(u, it)) continue;
      taken[it] = 1;
      items[k][j++] = it;
    }
    for (int64_t j = 1; j < c; ++j) taken[items[k][j]] = 0;
  }
  return r;
}

std::pair<torch::Tensor, torch::Tensor> RankingHitsAndGains(const torch::Tensor& scores,
                                                            int64_t k) {
  torch::Tensor test = scores.narrow(-1, 0, 1);
  torch::Tensor others = scores.narrow(-1, 1, scores.size(-1) - 1);
  torch::Tensor above = (others >= test) | torch::isnan(others) | torch::isnan(test);
  torch::Tensor rank = above.sum(-1).to(torch::kFloat32);  // 0: first
  torch::Tensor hit = (rank < double(k)).to(torch::kFloat32);
  torch::Tensor gain = hit / torch::log2(rank + 2);
  return {hit, gain};
}

std::pair<torch::Tensor, torch::Tensor> RankingMetrics(const torch::Tensor& scores, int64_t k) {
  auto [hit, gain] = RankingHitsAndGains(scores, k);
  return {hit.mean(-1), gain.mean(-1)};
}

std::unique_ptr<Task> MakeNeumfTask(const v1::NeumfSpec& spec,
                                    std::shared_ptr<const ImplicitFeedback> data,
                                    torch::Device device) {
  return std::make_unique<NeumfTask>(spec, std::move(data), device);
}

}  // namespace lopt
