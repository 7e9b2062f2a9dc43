#include "buffer_server/rocks_store.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>

#include "absl/strings/str_cat.h"

namespace lopt {
namespace {

// On-disk layout, one key space:
//   "s/next_key"                      next key to hand out (8 bytes big-endian)
//   "t/" table                        TableStats: name, capacity, puts
//   "m/" table "\0" key(BE64)         ItemHeader: tensors, payload_bytes, crc, key
//   "d/" table "\0" key(BE64) i(BE32) the item's i-th kStoreValueBytes of payload
//   "c/" prefix                       a closed prefix (CloseTables), empty value
// Big-endian keys sort numerically, so a table's items iterate oldest first.
constexpr char kNextKeyKey[] = "s/next_key";

void AppendBE(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t ReadBE(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string TableKey(const std::string& table) { return "t/" + table; }
std::string ItemPrefix(char kind, const std::string& table) {
  std::string k;
  k.reserve(table.size() + 16);
  k.push_back(kind);
  k.push_back('/');
  k += table;
  k.push_back('\0');
  return k;
}
std::string MetaKey(const std::string& table, uint64_t key) {
  std::string k = ItemPrefix('m', table);
  AppendBE(&k, key, 8);
  return k;
}
std::string DataKey(const std::string& table, uint64_t key, int64_t i) {
  std::string k = ItemPrefix('d', table);
  AppendBE(&k, key, 8);
  AppendBE(&k, static_cast<uint64_t>(i), 4);
  return k;
}
// The smallest key after every key of `table` of this kind ("\1" follows "\0").
std::string ItemPrefixEnd(char kind, const std::string& table) {
  std::string k = ItemPrefix(kind, table);
  k.back() = '\1';
  return k;
}
int64_t NumValues(int64_t payload_bytes) {
  return (payload_bytes + kStoreValueBytes - 1) / kStoreValueBytes;
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsIOError() || s.IsBusy() || s.IsTimedOut() || s.IsTryAgain())
    return absl::UnavailableError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

// Bytes per element of each wire dtype (tensor.proto); 0 for unknown. The
// same table as the tensor codec's, without its torch types.
int64_t DTypeBytes(v1::DType d) {
  switch (d) {
    case v1::FLOAT32: case v1::INT32: return 4;
    case v1::FLOAT64: case v1::INT64: return 8;
    case v1::BFLOAT16: case v1::FLOAT16: return 2;
    case v1::UINT8: case v1::BOOL: return 1;
    default: return 0;
  }
}

}  // namespace

absl::Status CheckTableName(const std::string& name, const std::string& field) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " must not be empty"));
  if (name.size() > kMaxTableNameBytes)
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", name.size(),
                                                   " bytes; the limit is ", kMaxTableNameBytes));
  if (name.find('\0') != std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat(field, " must not contain a NUL byte"));
  return absl::OkStatus();
}

absl::Status CheckItemHeader(const v1::ItemHeader& h) {
  if (auto s = CheckTableName(h.table(), "header.table"); !s.ok()) return s;
  if (h.capacity() <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("header.capacity must be > 0, got ", h.capacity()));
  if (h.payload_bytes() < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("header.payload_bytes must be >= 0, got ", h.payload_bytes()));
  int64_t sum = 0;
  for (int i = 0; i < h.tensors_size(); ++i) {
    const v1::TensorHeader& t = h.tensors(i);
    const std::string field = absl::StrCat("header.tensors[", i, "] ('", t.name(), "')");
    int64_t elem = DTypeBytes(t.dtype());
    if (elem == 0)
      return absl::InvalidArgumentError(
          absl::StrCat(field, " has unknown dtype ", static_cast<int>(t.dtype())));
    int64_t n = 1;
    for (int64_t d : t.shape()) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat(field, " has a negative dim"));
      if (d > 0 && n > (int64_t{1} << 40) / d)
        return absl::InvalidArgumentError(absl::StrCat(field, " is too large"));
      n *= d;
    }
    if (t.num_bytes() != n * elem)
      return absl::InvalidArgumentError(absl::StrCat(field, ".num_bytes is ", t.num_bytes(),
                                                     " but its shape and dtype need ", n * elem));
    sum += t.num_bytes();
  }
  if (sum != h.payload_bytes())
    return absl::InvalidArgumentError(absl::StrCat("header.payload_bytes is ", h.payload_bytes(),
                                                   " but the tensors' num_bytes sum to ", sum));
  return absl::OkStatus();
}

RocksReplayStore::RocksReplayStore(std::unique_ptr<rocksdb::DB> db, bool sync_writes,
                                   std::string path, int64_t min_free_bytes)
    : db_(std::move(db)),
      sync_writes_(sync_writes),
      path_(std::move(path)),
      min_free_bytes_(min_free_bytes) {}

namespace {
// Bytes an unprivileged writer may still use on the file system of `path`.
int64_t FreeBytes(const std::string& path) {
  struct statvfs st;
  if (::statvfs(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}
absl::Status LowSpace(const std::string& path, int64_t free, int64_t bytes, int64_t min_free) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the buffer's disk (", path, ") has ", free, " bytes free; writing ", bytes,
      " bytes must leave --min-free-bytes ", min_free, ": free space there"));
}
}  // namespace

absl::Status RocksReplayStore::CheckRoom(int64_t bytes) const {
  if (min_free_bytes_ <= 0) return absl::OkStatus();
  const int64_t free = FreeBytes(path_);
  if (free >= 0 && free - bytes < min_free_bytes_)
    return LowSpace(path_, free, bytes, min_free_bytes_);
  return absl::OkStatus();
}

RocksReplayStore::~RocksReplayStore() {
  if (db_) db_->Close().PermitUncheckedError();
}

absl::StatusOr<std::unique_ptr<RocksReplayStore>> RocksReplayStore::Open(const std::string& path,
                                                                         bool sync_writes,
                                                                         int64_t min_free_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec)
    return absl::UnavailableError(
        absl::StrCat("cannot create the buffer directory ", path, ": ", ec.message()));
  // Opening writes (a new WAL, the MANIFEST): on a full disk RocksDB would
  // abort on an assertion instead of failing.
  if (const int64_t free = FreeBytes(path); min_free_bytes > 0 && free >= 0 && free < min_free_bytes)
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot open the buffer database at ", path, ": its disk has ", free,
        " bytes free, less than --min-free-bytes ", min_free_bytes, "; free space there"));
  rocksdb::Options options;
  options.create_if_missing = true;
  // States are large and written once: keep them in blob files so that
  // compaction moves only the small keys, and reclaim evicted ones as it goes.
  options.enable_blob_files = true;
  options.min_blob_size = 4096;
  options.enable_blob_garbage_collection = true;
  options.compression = rocksdb::kNoCompression;  // float payloads do not compress
  options.IncreaseParallelism(2);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, path, &raw);
  if (!s.ok()) {
    if (s.IsNoSpace())
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot open the buffer database at ", path,
          ": its disk is full; free space there and start again: ", s.ToString()));
    if (s.IsIOError())
      return absl::UnavailableError(absl::StrCat(
          "cannot open the buffer database at ", path,
          " (is another lopt-buffer using it?): ", s.ToString()));
    return FromRocks(s, absl::StrCat("cannot open the buffer database at ", path));
  }
  std::unique_ptr<RocksReplayStore> store(
      new RocksReplayStore(std::unique_ptr<rocksdb::DB>(raw), sync_writes, path, min_free_bytes));
  if (auto st = store->Load(); !st.ok()) return st;
  return store;
}

absl::Status RocksReplayStore::Resume() {
  if (!writes_failing_) return absl::OkStatus();
  absl::MutexLock wl(&write_mu_);
  if (auto room = CheckRoom(0); !room.ok()) return room;
  rocksdb::Status s = db_->Resume();
  if (!s.ok()) return FromRocks(s, "resuming writes");
  write_error_ = absl::OkStatus();
  writes_failing_ = false;
  return absl::OkStatus();
}

absl::Status RocksReplayStore::Load() {
  absl::MutexLock wl(&write_mu_);
  absl::MutexLock l(&mu_);
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kNextKeyKey, &value);
  if (s.ok()) {
    if (value.size() != 8) return absl::DataLossError("the buffer's next_key record is corrupt");
    next_key_ = ReadBE(value.data(), 8);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading the buffer's next key");
  }
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("c/"); it->Valid() && it->key().starts_with("c/"); it->Next())
    closed_.insert(std::string(it->key().data() + 2, it->key().size() - 2));
  for (it->Seek("t/"); it->Valid() && it->key().starts_with("t/"); it->Next()) {
    v1::TableStats meta;
    if (!meta.ParseFromArray(it->value().data(), it->value().size()))
      return absl::DataLossError(absl::StrCat("corrupt table record ", it->key().ToString()));
    Table& t = tables_[meta.name()];
    t.capacity = meta.capacity();
    t.puts = meta.puts();
  }
  for (it->Seek("m/"); it->Valid() && it->key().starts_with("m/"); it->Next()) {
    rocksdb::Slice k = it->key();
    if (k.size() < 2 + 1 + 8 || k[k.size() - 9] != '\0')
      return absl::DataLossError("corrupt item record key in the buffer database");
    std::string table(k.data() + 2, k.size() - 2 - 9);
    uint64_t key = ReadBE(k.data() + k.size() - 8, 8);
    v1::ItemHeader h;
    if (!h.ParseFromArray(it->value().data(), it->value().size()))
      return absl::DataLossError(absl::StrCat("corrupt item record ", key, " of table ", table));
    auto t = tables_.find(table);
    if (t == tables_.end())
      return absl::DataLossError(absl::StrCat("item ", key, " has no table record '", table, "'"));
    t->second.items.push_back({key, h.payload_bytes()});
    t->second.bytes += h.payload_bytes();
    next_key_ = std::max(next_key_, key + 1);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scanning the buffer database");
  return absl::OkStatus();
}

absl::StatusOr<PutResult> RocksReplayStore::Put(const v1::ItemHeader& header,
                                                std::string_view payload) {
  if (auto s = CheckItemHeader(header); !s.ok()) return s;
  if (static_cast<int64_t>(payload.size()) != header.payload_bytes())
    return absl::InvalidArgumentError(absl::StrCat("payload has ", payload.size(),
                                                   " bytes; header.payload_bytes says ",
                                                   header.payload_bytes()));
  const std::string& table = header.table();
  absl::MutexLock wl(&write_mu_);
  if (std::string closed = ClosedPrefixOfLocked(table); !closed.empty())
    return absl::FailedPreconditionError(absl::StrCat(
        "table '", table, "' is under '", closed,
        "', whose tables were deleted when its job ended: a late put cannot create them again"));
  if (!write_error_.ok()) return write_error_;
  if (auto room = CheckRoom(header.payload_bytes() + 4096); !room.ok()) {
    writes_failing_ = true;
    return room;
  }
  const uint64_t key = next_key_;

  v1::ItemHeader meta;
  meta.set_table(table);
  *meta.mutable_tensors() = header.tensors();
  meta.set_payload_bytes(header.payload_bytes());
  meta.set_payload_crc32(header.payload_crc32());
  meta.set_key(key);

  // Reserve the whole batch: growing it would copy a 100 MB payload again.
  rocksdb::WriteBatch batch(payload.size() + 64 * (NumValues(payload.size()) + 8) +
                            2 * meta.ByteSizeLong() + 2 * table.size() + 4096);
  for (int64_t i = 0, n = NumValues(payload.size()); i < n; ++i) {
    size_t off = static_cast<size_t>(i * kStoreValueBytes);
    rocksdb::Slice v(payload.data() + off,
                     std::min<size_t>(kStoreValueBytes, payload.size() - off));
    if (auto s = batch.Put(DataKey(table, key, i), v); !s.ok())
      return FromRocks(s, "building the put");
  }
  batch.Put(MetaKey(table, key), meta.SerializeAsString()).PermitUncheckedError();
  std::string next;
  AppendBE(&next, key + 1, 8);
  batch.Put(kNextKeyKey, next).PermitUncheckedError();

  // Decide the evictions and take them out of the index before the write
  // (see mu_'s invariant); put them back if the write fails.
  std::vector<ItemRef> evicted;
  int64_t puts;
  {
    absl::MutexLock l(&mu_);
    Table& t = tables_[table];
    while (!t.items.empty() &&
           static_cast<int64_t>(t.items.size()) + 1 > header.capacity()) {
      evicted.push_back(t.items.front());
      t.bytes -= t.items.front().bytes;
      t.items.pop_front();
    }
    puts = t.puts + 1;
  }
  for (const ItemRef& e : evicted) {
    batch.Delete(MetaKey(table, e.key)).PermitUncheckedError();
    for (int64_t i = 0, n = NumValues(e.bytes); i < n; ++i)
      batch.Delete(DataKey(table, e.key, i)).PermitUncheckedError();
  }
  v1::TableStats tmeta;
  tmeta.set_name(table);
  tmeta.set_capacity(header.capacity());
  tmeta.set_puts(puts);
  batch.Put(TableKey(table), tmeta.SerializeAsString()).PermitUncheckedError();

  rocksdb::WriteOptions wo;
  wo.sync = sync_writes_;
  rocksdb::Status s = db_->Write(wo, &batch);
  absl::MutexLock l(&mu_);
  Table& t = tables_[table];
  if (!s.ok()) {
    write_error_ = FromRocks(s, "the buffer cannot write (until its disk has room again)");
    writes_failing_ = true;
    for (auto e = evicted.rbegin(); e != evicted.rend(); ++e) {
      t.items.push_front(*e);
      t.bytes += e->bytes;
    }
    if (t.items.empty() && t.puts == 0) tables_.erase(table);
    return FromRocks(s, absl::StrCat("writing an item to table '", table, "'"));
  }
  next_key_ = key + 1;
  t.capacity = header.capacity();
  t.puts = puts;
  t.items.push_back({key, header.payload_bytes()});
  t.bytes += header.payload_bytes();
  return PutResult{key, static_cast<int64_t>(t.items.size()),
                   static_cast<int64_t>(evicted.size())};
}

absl::StatusOr<StoredItem> RocksReplayStore::ReadItem(const std::string& table, const Pick& pick,
                                                      const void* snapshot) {
  rocksdb::ReadOptions ro;
  ro.snapshot = static_cast<const rocksdb::Snapshot*>(snapshot);
  StoredItem out;
  std::string meta;
  rocksdb::Status s = db_->Get(ro, MetaKey(table, pick.ref.key), &meta);
  if (!s.ok())
    return FromRocks(s, absl::StrCat("reading item ", pick.ref.key, " of table '", table, "'"));
  if (!out.header.ParseFromString(meta))
    return absl::DataLossError(
        absl::StrCat("item ", pick.ref.key, " of table '", table, "' has a corrupt header"));
  out.header.set_index(pick.index);
  out.header.set_table_size(pick.table_size);
  const int64_t bytes = out.header.payload_bytes();
  out.payload.reserve(bytes);
  rocksdb::PinnableSlice v;
  for (int64_t i = 0, n = NumValues(bytes); i < n; ++i) {
    v.Reset();
    s = db_->Get(ro, db_->DefaultColumnFamily(), DataKey(table, pick.ref.key, i), &v);
    if (!s.ok())
      return FromRocks(s, absl::StrCat("reading part ", i, " of item ", pick.ref.key,
                                       " of table '", table, "'"));
    out.payload.append(v.data(), v.size());
  }
  if (static_cast<int64_t>(out.payload.size()) != bytes)
    return absl::DataLossError(absl::StrCat("item ", pick.ref.key, " of table '", table,
                                            "' has ", out.payload.size(),
                                            " payload bytes; its header says ", bytes));
  return out;
}

namespace {
// Releases a snapshot when the read is done.
struct SnapshotHolder {
  rocksdb::DB* db;
  const rocksdb::Snapshot* snap;
  ~SnapshotHolder() {
    if (snap) db->ReleaseSnapshot(snap);
  }
};
}  // namespace

absl::StatusOr<StoredItem> RocksReplayStore::Sample(const std::string& table, double u) {
  if (!(u >= 0.0 && u < 1.0))
    return absl::InvalidArgumentError(absl::StrCat("u must be in [0, 1), got ", u));
  Pick pick;
  SnapshotHolder snap{db_.get(), nullptr};
  {
    absl::MutexLock l(&mu_);
    auto it = tables_.find(table);
    if (it == tables_.end())
      return absl::NotFoundError(absl::StrCat("table '", table, "' does not exist"));
    Table& t = it->second;
    if (t.items.empty()) return absl::NotFoundError(absl::StrCat("table '", table, "' is empty"));
    const int64_t n = static_cast<int64_t>(t.items.size());
    const int64_t i = std::min<int64_t>(n - 1, static_cast<int64_t>(std::floor(u * n)));
    pick = {t.items[i], i, n};
    ++t.samples;
    snap.snap = db_->GetSnapshot();
  }
  return ReadItem(table, pick, snap.snap);
}

absl::StatusOr<StoredItem> RocksReplayStore::Get(const std::string& table, uint64_t key) {
  Pick pick;
  SnapshotHolder snap{db_.get(), nullptr};
  {
    absl::MutexLock l(&mu_);
    auto it = tables_.find(table);
    if (it == tables_.end())
      return absl::NotFoundError(absl::StrCat("table '", table, "' does not exist"));
    const auto& items = it->second.items;
    auto pos = std::lower_bound(items.begin(), items.end(), key,
                                [](const ItemRef& r, uint64_t k) { return r.key < k; });
    if (pos == items.end() || pos->key != key)
      return absl::NotFoundError(absl::StrCat("table '", table, "' has no item ", key,
                                              " (never put, evicted or deleted)"));
    pick = {*pos, static_cast<int64_t>(pos - items.begin()), static_cast<int64_t>(items.size())};
    snap.snap = db_->GetSnapshot();
  }
  return ReadItem(table, pick, snap.snap);
}

std::vector<uint64_t> RocksReplayStore::Keys(const std::string& table) const {
  absl::MutexLock l(&mu_);
  std::vector<uint64_t> keys;
  auto it = tables_.find(table);
  if (it == tables_.end()) return keys;
  keys.reserve(it->second.items.size());
  for (const ItemRef& r : it->second.items) keys.push_back(r.key);
  return keys;
}

int64_t RocksReplayStore::Size(const std::string& table) const {
  absl::MutexLock l(&mu_);
  auto it = tables_.find(table);
  return it == tables_.end() ? 0 : static_cast<int64_t>(it->second.items.size());
}

absl::StatusOr<DeleteResult> RocksReplayStore::DeleteNamed(const std::vector<std::string>& names,
                                                        const std::string& close_prefix) {
  DeleteResult result;
  const bool close = !close_prefix.empty() && closed_.count(close_prefix) == 0;
  if (names.empty() && !close) return result;
  if (!write_error_.ok()) return write_error_;
  rocksdb::WriteBatch batch;
  if (close) batch.Put("c/" + close_prefix, "").PermitUncheckedError();
  std::map<std::string, Table> removed;
  {
    absl::MutexLock l(&mu_);
    for (const std::string& name : names) {
      auto it = tables_.find(name);
      result.items_deleted += it->second.items.size();
      removed.insert(tables_.extract(it));
    }
  }
  for (const std::string& name : names) {
    batch.Delete(TableKey(name)).PermitUncheckedError();
    // One range tombstone a kind, however many items the table holds.
    batch.DeleteRange(ItemPrefix('m', name), ItemPrefixEnd('m', name)).PermitUncheckedError();
    batch.DeleteRange(ItemPrefix('d', name), ItemPrefixEnd('d', name)).PermitUncheckedError();
  }
  rocksdb::WriteOptions wo;
  wo.sync = sync_writes_;
  rocksdb::Status s = db_->Write(wo, &batch);
  if (!s.ok()) {
    write_error_ = FromRocks(s, "the buffer cannot write (until its disk has room again)");
    writes_failing_ = true;
    absl::MutexLock l(&mu_);
    tables_.merge(removed);
    return FromRocks(s, "deleting tables");
  }
  if (close) closed_.insert(close_prefix);
  result.tables_deleted = static_cast<int64_t>(names.size());
  return result;
}

std::string RocksReplayStore::ClosedPrefixOfLocked(const std::string& table) const {
  if (closed_.empty()) return "";
  // A closed prefix of `table` is one of its first n bytes, for some n.
  for (size_t n = 1; n <= table.size(); ++n) {
    auto it = closed_.find(table.substr(0, n));
    if (it != closed_.end()) return *it;
  }
  return "";
}

std::string RocksReplayStore::ClosedPrefixOf(const std::string& table) const {
  absl::MutexLock wl(&write_mu_);
  return ClosedPrefixOfLocked(table);
}

std::vector<std::string> RocksReplayStore::TablesWithPrefix(const std::string& prefix) const {
  absl::MutexLock l(&mu_);
  std::vector<std::string> names;
  for (auto it = tables_.lower_bound(prefix);
       it != tables_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it)
    names.push_back(it->first);
  return names;
}

absl::StatusOr<DeleteResult> RocksReplayStore::CloseTables(const std::string& prefix) {
  if (prefix.empty())
    return absl::InvalidArgumentError(
        "prefix must not be empty: an empty prefix would close every table");
  if (auto s = CheckTableName(prefix, "prefix"); !s.ok()) return s;
  absl::MutexLock wl(&write_mu_);
  return DeleteNamed(TablesWithPrefix(prefix), prefix);
}

absl::StatusOr<DeleteResult> RocksReplayStore::DeleteTables(const std::string& prefix) {
  if (prefix.empty())
    return absl::InvalidArgumentError(
        "prefix must not be empty: an empty prefix would delete every table");
  absl::MutexLock wl(&write_mu_);
  return DeleteNamed(TablesWithPrefix(prefix));
}

absl::StatusOr<DeleteResult> RocksReplayStore::DeleteTable(const std::string& table) {
  if (auto s = CheckTableName(table, "table"); !s.ok()) return s;
  absl::MutexLock wl(&write_mu_);
  bool exists;
  {
    absl::MutexLock l(&mu_);
    exists = tables_.count(table) > 0;
  }
  if (!exists) return DeleteResult{};
  return DeleteNamed({table});
}

std::vector<v1::TableStats> RocksReplayStore::Stats(const std::string& prefix) const {
  absl::MutexLock l(&mu_);
  std::vector<v1::TableStats> out;
  for (auto it = tables_.lower_bound(prefix);
       it != tables_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    v1::TableStats s;
    s.set_name(it->first);
    s.set_items(static_cast<int64_t>(it->second.items.size()));
    s.set_bytes(it->second.bytes);
    s.set_capacity(it->second.capacity);
    s.set_puts(it->second.puts);
    s.set_samples(it->second.samples);
    out.push_back(std::move(s));
  }
  return out;
}

StoreTotals RocksReplayStore::Totals() const {
  absl::MutexLock l(&mu_);
  StoreTotals t;
  t.tables = static_cast<int64_t>(tables_.size());
  for (const auto& [name, table] : tables_) {
    t.items += static_cast<int64_t>(table.items.size());
    t.bytes += table.bytes;
  }
  return t;
}

}  // namespace lopt
