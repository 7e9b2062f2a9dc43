// neumf: Neural Collaborative Filtering (He et al. 2017) on implicit
// feedback, as MLPerf's recommendation benchmark trains and evaluates it,
// particle-batched like every family of common/tasks/task.h: each embedding table
// is [P, rows, dim], the rows of a batch are gathered for all particles in
// one call, the MLP tower runs as batched matmuls. No loop over particles.
//
// Per particle, for a (user u, item i) pair:
//   gmf   = P_u * Q_i                              (gmf_dim, elementwise)
//   mlp   = act(... act([U_u, V_i] W_1 + b_1) ... W_L + b_L)
//   logit = [gmf, mlp] w + c
// trained with binary cross-entropy on each training positive (label 1) and
// `negatives` items the user never rated (label 0), drawn afresh every batch.
//
// Parameters, in order: P [users, g], Q [items, g], U [users, m],
// V [items, m], then each MLP layer's W [in, out] and b [out], then the
// fusion layer's w [g + last, 1] and c [1].
#pragma once

#include <cstdint>
#include <memory>
#include <utility>

#include <torch/types.h>

#include "absl/status/statusor.h"
#include "common/tasks/movielens.h"
#include "common/tasks/task.h"
#include "lopt/v1/job.pb.h"

namespace lopt {

// The cut-off of the ranking metrics (MLPerf: HR@10, NDCG@10).
inline constexpr int64_t kRankingCutoff = 10;

// LoadMovieLensRatings, cached by path, size and modification time (a
// process builds many tasks of one data set), and checked for the test
// split: every user must leave at least `eval_negatives` items unrated.
absl::StatusOr<std::shared_ptr<const ImplicitFeedback>> LoadNeumfData(const v1::NeumfSpec& spec);

// Draws, for each user of `users` ([n] int64, CPU), an item uniformly among
// the data's items that the user never rated (neither training nor test
// positives), from `gen`: rejection sampling, vectorised over the batch.
class NegativeSampler {
 public:
  explicit NegativeSampler(std::shared_ptr<const ImplicitFeedback> data);
  torch::Tensor Sample(const torch::Tensor& users, torch::Generator& gen) const;  // [n] int64

 private:
  std::shared_ptr<const ImplicitFeedback> data_;
  torch::Tensor keys_;  // sorted positives, user * num_items + item
};

// The test split: `eval_users` users evenly spaced over all (0: every user)
// and for each its test item in column 0 followed by `eval_negatives`
// distinct items it never rated, drawn from `seed`.
struct RankingCandidates {
  torch::Tensor users;  // [E] int64
  torch::Tensor items;  // [E, 1 + eval_negatives] int64
};
RankingCandidates MakeRankingCandidates(const ImplicitFeedback& data, int64_t eval_users,
                                        int64_t eval_negatives, uint64_t seed);

// Per-user hit and NDCG at `k` of scores [P, E, 1 + N] whose column 0 is the
// held-out item: its rank is the number of other items that score at least
// as high (ties and NaN count against it, so a constant or diverged model
// scores no hits); hit = rank < k, ndcg = hit / log2(rank + 2). Returns
// {hits, gains}, each [P, E] float32.
std::pair<torch::Tensor, torch::Tensor> RankingHitsAndGains(const torch::Tensor& scores, int64_t k);
// Their means over users, [P] each: HR@k, NDCG@k.
std::pair<torch::Tensor, torch::Tensor> RankingMetrics(const torch::Tensor& scores, int64_t k);

// The task on loaded data (REQUIRES: a spec that passes ValidateJob with
// defaults filled, data from LoadNeumfData(spec)). On `device`: the test
// split and the model live there; batches are drawn on the CPU generators,
// so a CUDA task draws the same batches as a CPU one.
std::unique_ptr<Task> MakeNeumfTask(const v1::NeumfSpec& spec,
                                    std::shared_ptr<const ImplicitFeedback> data,
                                    torch::Device device = torch::kCPU);

}  // namespace lopt
