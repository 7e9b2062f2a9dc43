#include "common/tasks/movielens.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/spec/job_limits.h"
#include "common/util/files.h"

namespace lopt {
namespace {

namespace fs = std::filesystem;

struct Rating {
  int64_t user, item, timestamp, line;
};

// Parses an integer field [p, end) exactly; false on anything else.
bool ParseInt(const char* p, const char* end, int64_t* v) {
  while (p < end && (*p == ' ' || *p == '\t')) ++p;
  while (end > p && (end[-1] == ' ' || end[-1] == '\t')) --end;
  if (p == end) return false;
  auto r = std::from_chars(p, end, *v);
  return r.ec == std::errc() && r.ptr == end;
}

// Deterministic draws (std's distributions are implementation-defined).
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed ^ 0x6d6f766965ULL) {}
  uint64_t Bits() { return g_(); }
  // Uniform in (0, 1).
  double Uniform() { return (double(g_() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double Normal() {  // Box-Muller
    const double u = Uniform(), v = Uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * v);
  }
  int64_t Below(int64_t n) { return int64_t(g_() % uint64_t(n)); }
  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (int64_t i = int64_t(v->size()) - 1; i > 0; --i) std::swap((*v)[i], (*v)[Below(i + 1)]);
  }

 private:
  std::mt19937_64 g_;
};

// MovieLens-1M's first and last timestamps.
constexpr int64_t kFirstTimestamp = 956703932;
constexpr int64_t kLastTimestamp = 1046454590;

}  // namespace

bool ImplicitFeedback::IsPositive(int64_t user, int64_t item) const {
  return std::binary_search(positive_keys.begin(), positive_keys.end(), user * num_items + item);
}

absl::StatusOr<ImplicitFeedback> ParseMovieLensRatings(const std::string& text,
                                                       const std::string& source,
                                                       int64_t max_users, int64_t max_items) {
  std::vector<Rating> ratings;
  ratings.reserve(text.size() / 24 + 1);
  const char* p = text.data();
  const char* end = p + text.size();
  int64_t line = 0;
  while (p < end) {
    const char* eol = static_cast<const char*>(std::memchr(p, '\n', end - p));
    if (eol == nullptr) eol = end;
    ++line;
    const char* e = eol;
    if (e > p && e[-1] == '\r') --e;
    if (e > p) {
      int64_t v[4];
      int fields = 0;
      const char* f = p;
      bool ok = true;
      while (ok && fields < 4) {
        const char* sep = fields < 3 ? std::search(f, e, "::", "::" + 2) : e;
        if (sep == e && fields < 3) { ok = false; break; }
        ok = ParseInt(f, sep, &v[fields++]);
        f = sep + 2;
      }
      if (!ok || v[0] < 0 || v[1] < 0)
        return absl::InvalidArgumentError(absl::StrCat(
            source, ":", line, ": expected UserID::MovieID::Rating::Timestamp (non-negative integers), got '",
            std::string(p, std::min<size_t>(e - p, 80)), "'"));
      ratings.push_back({v[0], v[1], v[3], line});
    }
    p = eol + 1;
  }
  if (ratings.empty())
    return absl::InvalidArgumentError(absl::StrCat(source, " holds no ratings"));

  // Dense ids in the order of the file's ids.
  auto dense = [](std::vector<int64_t> ids) {
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
  };
  std::vector<int64_t> users, items;
  users.reserve(ratings.size());
  items.reserve(ratings.size());
  for (const auto& r : ratings) users.push_back(r.user), items.push_back(r.item);
  users = dense(std::move(users));
  items = dense(std::move(items));
  if (int64_t(users.size()) > max_users)
    return absl::InvalidArgumentError(absl::StrCat(
        source, " has ", users.size(), " distinct users, more than task.neumf.num_users (", max_users,
        "): raise num_users"));
  if (int64_t(items.size()) > max_items)
    return absl::InvalidArgumentError(absl::StrCat(
        source, " has ", items.size(), " distinct items, more than task.neumf.num_items (", max_items,
        "): raise num_items"));
  for (auto& r : ratings) {
    r.user = std::lower_bound(users.begin(), users.end(), r.user) - users.begin();
    r.item = std::lower_bound(items.begin(), items.end(), r.item) - items.begin();
  }
  std::sort(ratings.begin(), ratings.end(), [](const Rating& a, const Rating& b) {
    return std::tie(a.user, a.timestamp, a.line) < std::tie(b.user, b.timestamp, b.line);
  });

  ImplicitFeedback d;
  d.num_users = users.size();
  d.num_items = items.size();
  d.test_item.assign(d.num_users, -1);
  d.user_positives.assign(d.num_users, 0);
  d.train_user.reserve(ratings.size());
  d.train_item.reserve(ratings.size());
  d.positive_keys.reserve(ratings.size());
  std::vector<char> seen(d.num_items, 0);
  std::vector<int32_t> kept;
  for (size_t b = 0; b < ratings.size();) {
    size_t e = b;
    while (e < ratings.size() && ratings[e].user == ratings[b].user) ++e;
    const int32_t u = int32_t(ratings[b].user);
    // Latest first; a pair rated twice keeps its latest rating.
    kept.clear();
    for (size_t k = e; k-- > b;) {
      const int32_t it = int32_t(ratings[k].item);
      if (seen[it]) continue;
      seen[it] = 1;
      kept.push_back(it);
    }
    for (int32_t it : kept) seen[it] = 0;
    d.test_item[u] = kept[0];
    for (size_t k = kept.size(); k-- > 1;) {  // back in time order
      d.train_user.push_back(u);
      d.train_item.push_back(kept[k]);
    }
    for (int32_t it : kept) d.positive_keys.push_back(int64_t(u) * d.num_items + it);
    d.user_positives[u] = int32_t(kept.size());
    b = e;
  }
  std::sort(d.positive_keys.begin(), d.positive_keys.end());
  return d;
}

absl::StatusOr<ImplicitFeedback> LoadMovieLensRatings(const std::string& path, int64_t max_users,
                                                      int64_t max_items) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) file = (fs::path(path) / "ratings.dat").string();
  if (!fs::exists(file, ec))
    return absl::NotFoundError(absl::StrCat(
        "neumf: no such file: ", file,
        " (MovieLens' ratings.dat; `lopt gen-movielens --out DIR` writes a synthetic one)"));
  if (auto s = CheckDataFile(file); !s.ok())
    return absl::Status(s.code(), absl::StrCat("neumf: ", s.message()));
  auto text = ReadFile(file, "ratings file");
  if (!text.ok()) return text.status();
  return ParseMovieLensRatings(*text, file, max_users, max_items);
}

absl::Status ValidateMovieLensGenOptions(const MovieLensGenOptions& o) {
  if (o.users < 1 || o.users > (1 << 24))
    return absl::InvalidArgumentError(absl::StrCat("--users must be in [1, 16777216], got ", o.users));
  if (o.items < 2 || o.items > (1 << 24))
    return absl::InvalidArgumentError(absl::StrCat("--items must be in [2, 16777216], got ", o.items));
  if (o.rank < 1 || o.rank > 1024)
    return absl::InvalidArgumentError(absl::StrCat("--rank must be in [1, 1024], got ", o.rank));
  const int64_t lo = std::max(o.users, o.items);
  const int64_t hi = std::min<int64_t>(o.users * (o.items / 2), int64_t{40} << 20);
  if (o.interactions < lo || o.interactions > hi)
    return absl::InvalidArgumentError(absl::StrCat(
        "--interactions must be in [", lo, ", ", hi,
        "] (every user and every item at least once, a user at most half the items, at most ",
        int64_t{40} << 20, " in all), got ", o.interactions));
  if (!(o.zipf_exponent >= 0) || !(o.affinity >= 0))
    return absl::InvalidArgumentError("zipf_exponent and affinity must be >= 0");
  return absl::OkStatus();
}

absl::StatusOr<std::string> GenerateMovieLensRatings(const MovieLensGenOptions& o) {
  if (auto s = ValidateMovieLensGenOptions(o); !s.ok()) return s;
  Rng rng(o.seed);
  const int64_t U = o.users, I = o.items, R = o.rank, N = o.interactions;
  std::vector<double> uf(U * R), vf(I * R);
  for (double& x : uf) x = rng.Normal();
  for (double& x : vf) x = rng.Normal();
  // Popularity: Zipf-like over a random ranking of the items.
  std::vector<int64_t> order(I);
  std::iota(order.begin(), order.end(), 0);
  rng.Shuffle(&order);
  std::vector<double> log_pop(I);
  for (int64_t k = 0; k < I; ++k) log_pop[order[k]] = -o.zipf_exponent * std::log(double(k + 1));

  // Interactions a user: at least min_c, at most cap, heavy-tailed, summing to N.
  const int64_t min_c = std::min<int64_t>(20, N / U);
  const int64_t cap = std::max<int64_t>(1, I / 2);
  std::vector<int64_t> count(U, min_c);
  {
    std::vector<double> w(U);
    double total = 0;
    for (double& x : w) total += (x = std::exp(1.2 * rng.Normal()));
    const double extra = double(N - U * min_c);
    int64_t given = U * min_c;
    for (int64_t u = 0; u < U; ++u) {
      const int64_t add = std::min<int64_t>(cap - min_c, int64_t(std::floor(extra * w[u] / total)));
      count[u] += add;
      given += add;
    }
    std::vector<int64_t> users(U);
    std::iota(users.begin(), users.end(), 0);
    rng.Shuffle(&users);
    for (int64_t k = 0; given < N; k = (k + 1) % U)
      if (count[users[k]] < cap) ++count[users[k]], ++given;
  }

  // Each user's items without replacement, by Gumbel top-k over
  // log popularity + affinity * <u, v> / sqrt(rank).
  std::vector<std::vector<int32_t>> chosen(U);
  std::vector<double> key(I);
  std::vector<int32_t> idx(I);
  std::vector<int64_t> item_count(I, 0);
  auto affinity = [&](int64_t u, int64_t i) {
    double s = 0;
    for (int64_t r = 0; r < R; ++r) s += uf[u * R + r] * vf[i * R + r];
    return s / std::sqrt(double(R));
  };
  for (int64_t u = 0; u < U; ++u) {
    for (int64_t i = 0; i < I; ++i) {
      key[i] = log_pop[i] + o.affinity * affinity(u, i) - std::log(-std::log(rng.Uniform()));
      idx[i] = int32_t(i);
    }
    const int64_t n = count[u];
    std::nth_element(idx.begin(), idx.begin() + (n - 1), idx.end(),
                     [&](int32_t a, int32_t b) { return key[a] > key[b] || (key[a] == key[b] && a < b); });
    chosen[u].assign(idx.begin(), idx.begin() + n);
    std::sort(chosen[u].begin(), chosen[u].end());
    for (int32_t i : chosen[u]) ++item_count[i];
  }
  // Every item rated at least once: a missing item replaces an item of a
  // random user that others rated too.
  for (int64_t j = 0; j < I; ++j) {
    int64_t tries = 0;
    while (item_count[j] == 0) {
      if (++tries > 100 * (U + I) + 1000000)
        return absl::InternalError("gen-movielens: could not give every item a rating");
      const int64_t u = rng.Below(U);
      auto& c = chosen[u];
      const int64_t k = rng.Below(int64_t(c.size()));
      if (item_count[c[k]] < 2 || std::binary_search(c.begin(), c.end(), int32_t(j))) continue;
      --item_count[c[k]];
      c[k] = int32_t(j);
      ++item_count[j];
      std::sort(c.begin(), c.end());
    }
  }

  std::string out;
  out.reserve(size_t(N) * 26);
  std::vector<int64_t> times;
  std::vector<int64_t> perm;
  for (int64_t u = 0; u < U; ++u) {
    const auto& c = chosen[u];
    const int64_t n = c.size();
    // Timestamps: a start in the first 80% of the range, then gaps of mean
    // a few days (shorter for heavy raters), distinct.
    const double span = double(kLastTimestamp - kFirstTimestamp);
    int64_t t = kFirstTimestamp + int64_t(rng.Uniform() * 0.8 * span);
    const double mean_gap = std::max(1.0, std::min(3.0 * 86400, (kLastTimestamp - t) / double(n + 1)));
    times.resize(n);
    for (int64_t k = 0; k < n; ++k) {
      t += 1 + int64_t(-std::log(rng.Uniform()) * mean_gap);
      times[k] = t;
    }
    // The order in which the user rated the items: random (the lines stay
    // in MovieID order, so the test item is found by its timestamp).
    perm.resize(n);
    std::iota(perm.begin(), perm.end(), 0);
    rng.Shuffle(&perm);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t i = c[k];
      const double s = affinity(u, i);
      const int64_t rating =
          std::clamp<int64_t>(std::llround(3.6 + 0.9 * s + 0.8 * rng.Normal()), 1, 5);
      absl::StrAppendFormat(&out, "%d::%d::%d::%d\n", u + 1, i + 1, rating, times[perm[k]]);
    }
  }
  return out;
}

absl::StatusOr<std::string> WriteMovieLensRatings(const MovieLensGenOptions& o,
                                                  const std::string& dir) {
  auto text = GenerateMovieLensRatings(o);
  if (!text.ok()) return text.status();
  if (auto s = MakeDirs(dir); !s.ok()) return s;
  const std::string path = (fs::path(dir) / "ratings.dat").string();
  if (auto s = WriteFileAtomically(path, *text); !s.ok()) return s;
  return path;
}

}  // namespace lopt
