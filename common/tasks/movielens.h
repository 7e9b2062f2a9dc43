// MovieLens' ratings.dat format (UserID::MovieID::Rating::Timestamp, one
// rating a line) for the neumf task family: a reader that turns it into
// implicit feedback with a leave-one-out split, and a generator of a
// synthetic set of MovieLens-1M's size (`lopt gen-movielens`), so that the
// family runs with no download. No LibTorch here: plain vectors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lopt {

// Implicit feedback: every rating is a positive. Users and items are
// renumbered densely (0 .. num_users-1, 0 .. num_items-1) in the order of
// their ids in the file. Each user's latest interaction (the largest
// timestamp; ties: the one later in the file) is the user's test item; the
// others are training positives. A (user, item) pair rated twice counts once
// (its latest rating).
struct ImplicitFeedback {
  int64_t num_users = 0;
  int64_t num_items = 0;
  std::vector<int32_t> train_user;  // training positives, grouped by user
  std::vector<int32_t> train_item;
  std::vector<int32_t> test_item;   // [num_users]
  // Every positive (training and test) as user * num_items + item, sorted:
  // the set the negative samplers never draw from.
  std::vector<int64_t> positive_keys;
  // Positives (training and test) of each user.
  std::vector<int32_t> user_positives;  // [num_users]

  bool IsPositive(int64_t user, int64_t item) const;
};

// Reads `path`: a ratings.dat file, or a directory holding one. Errors:
// NOT_FOUND for a missing path; INVALID_ARGUMENT for a line that is not
// four '::'-separated integers (naming the path and line), an empty file,
// more than kMaxDataBytes, and more distinct users or items than
// `max_users` / `max_items` (the task's table rows).
absl::StatusOr<ImplicitFeedback> LoadMovieLensRatings(const std::string& path, int64_t max_users,
                                                      int64_t max_items);

// Parses ratings.dat text already in memory (`source` names it in errors).
absl::StatusOr<ImplicitFeedback> ParseMovieLensRatings(const std::string& text,
                                                       const std::string& source,
                                                       int64_t max_users, int64_t max_items);

// The synthetic set. A low-rank preference model with a popularity skew:
// user and item factors u, v ~ N(0, I_rank), item popularity Zipf-like
// (the item of popularity rank k has weight k^-zipf_exponent, ranks a random
// permutation of the items), and each user's items drawn without
// replacement with probability proportional to
// popularity * exp(affinity * <u, v> / sqrt(rank)). Users' interaction
// counts are heavy-tailed (log-normal) with at least min(20, interactions /
// users) each (MovieLens-1M keeps users with 20 ratings or more) and at most
// half the items, summing to exactly `interactions`; every item is rated at
// least once. Ratings 1-5 follow the affinity; timestamps are seconds in
// MovieLens-1M's range (April 2000 to February 2003), distinct within a
// user. Lines are grouped by user (ids 1..users), items ids 1..items.
struct MovieLensGenOptions {
  int64_t users = 6040;
  int64_t items = 3706;
  int64_t interactions = 1000209;
  uint64_t seed = 0;
  int64_t rank = 8;
  double zipf_exponent = 0.8;
  double affinity = 2.5;
};

// INVALID_ARGUMENT naming the option unless the counts can be met: users >=
// 1, items >= 2, interactions in [max(users, items), users * (items / 2)],
// rank >= 1.
absl::Status ValidateMovieLensGenOptions(const MovieLensGenOptions& o);

// The whole file's text; the same options give the same bytes.
absl::StatusOr<std::string> GenerateMovieLensRatings(const MovieLensGenOptions& o);

// Writes `dir`/ratings.dat (creating `dir`) and returns its path.
absl::StatusOr<std::string> WriteMovieLensRatings(const MovieLensGenOptions& o,
                                                  const std::string& dir);

}  // namespace lopt
