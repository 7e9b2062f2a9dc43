// RocksReplayStore: named FIFO tables of encoded items (tensor headers plus
// payload bytes) in a RocksDB database. What the buffer server serves and
// what local mode can keep in a directory (through RocksReplayBuffer, the
// ReplayBuffer adapter in rocks_replay_buffer.h). It never decodes a payload,
// so it needs no LibTorch.
//
// Durability: every mutation (Put with its evictions, DeleteTable(s)) is one
// atomic RocksDB WriteBatch written with sync = true. When a method returns
// OK, its effect survives kill -9 and power loss; when it fails or the process
// dies first, none of it is visible after reopening (never a torn item).
// Opened with sync_writes = false (local mode, whose checkpoint holds the
// buffer's items) a mutation is still atomic and survives kill -9 of the
// process (it is in the OS's page cache), not power loss.
//
// Thread safety: every method may be called concurrently from any thread.
// Mutations are serialised; reads run concurrently with them and see a
// consistent item (a RocksDB snapshot taken with the item's index position).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lopt/v1/buffer_service.pb.h"

namespace rocksdb {
class DB;
}

namespace lopt {

// Table names: 1 to kMaxTableNameBytes bytes, no NUL byte (the on-disk keys
// use NUL as the separator after the name).
inline constexpr size_t kMaxTableNameBytes = 512;

// Payloads are stored in RocksDB values of this many bytes (the last one
// shorter). Part of the on-disk format.
inline constexpr int64_t kStoreValueBytes = int64_t{1} << 20;

// OK if `name` is a valid table name; otherwise INVALID_ARGUMENT naming
// `field` ("header.table", "table") and what is wrong.
absl::Status CheckTableName(const std::string& name, const std::string& field);

// Validates what Put needs from a header before any payload byte is read:
// table (as CheckTableName), capacity > 0, each tensor's dtype known, dims
// >= 0, num_bytes == product(shape) * dtype size, and payload_bytes == the
// sum of num_bytes. INVALID_ARGUMENT naming the first bad field
// ("header.tensors[2].num_bytes ..."). Does not look at key/index/table_size.
absl::Status CheckItemHeader(const v1::ItemHeader& header);

// One stored item as read back.
struct StoredItem {
  // table, tensors, payload_bytes, payload_crc32, and the reply fields key,
  // index (its position, 0 = oldest, when read) and table_size.
  v1::ItemHeader header;
  std::string payload;
};

struct PutResult {
  uint64_t key = 0;        // the new item's key: increasing across all tables
  int64_t table_size = 0;  // items in the table after the put
  int64_t evicted = 0;     // oldest items removed to keep within capacity
};

struct DeleteResult {
  int64_t tables_deleted = 0;
  int64_t items_deleted = 0;
};

struct StoreTotals {
  int64_t tables = 0;
  int64_t items = 0;
  int64_t bytes = 0;  // sum of the stored items' payload_bytes
};

class RocksReplayStore {
 public:
  // Opens (creating it and its parent directories if missing) the database
  // at `path` and rebuilds the tables' indexes by scanning the item metadata
  // (not the payloads). UNAVAILABLE if the directory cannot be created or the
  // database is locked by another process; DATA_LOSS if it is corrupt.
  // With min_free_bytes > 0 the store keeps that much of its disk free: Open
  // refuses (RESOURCE_EXHAUSTED) on a disk with less, and a put that would
  // leave less is refused before it reaches RocksDB, whose WAL writer must
  // not meet ENOSPC (Debian's build asserts and aborts).
  static absl::StatusOr<std::unique_ptr<RocksReplayStore>> Open(const std::string& path,
                                                                bool sync_writes = true,
                                                                int64_t min_free_bytes = 0);

  // Closes the database. REQUIRES: no call is in progress.
  ~RocksReplayStore();

  RocksReplayStore(const RocksReplayStore&) = delete;
  RocksReplayStore& operator=(const RocksReplayStore&) = delete;

  // Appends an item to header.table (creating the table), sets the table's
  // capacity to header.capacity and evicts the oldest items beyond it, all
  // in one synced write. INVALID_ARGUMENT if CheckItemHeader fails or
  // payload.size() != header.payload_bytes.
  // REQUIRES: crc32(payload) == header.payload_crc32. The caller has checked
  // it (the service while reassembling chunks); it is stored, not recomputed,
  // so that a 100 MB payload is hashed once on its way in.
  absl::StatusOr<PutResult> Put(const v1::ItemHeader& header, std::string_view payload);

  // The item at index floor(u * size) of `table`, oldest first, for u in
  // [0, 1). INVALID_ARGUMENT if u is outside [0, 1) (or NaN); NOT_FOUND if
  // the table does not exist or is empty. Counts a sample in the table's
  // stats. The payload is as stored: callers check header.payload_crc32.
  absl::StatusOr<StoredItem> Sample(const std::string& table, double u);

  // The item of `key` in `table`; NOT_FOUND if it is not there (never put,
  // evicted or deleted).
  absl::StatusOr<StoredItem> Get(const std::string& table, uint64_t key);

  // The keys of `table`, oldest first; empty if the table does not exist.
  std::vector<uint64_t> Keys(const std::string& table) const;

  // Items in `table`; 0 if it does not exist.
  int64_t Size(const std::string& table) const;

  // Deletes every table whose name starts with `prefix`, with its items,
  // in one synced write. INVALID_ARGUMENT if prefix is empty (that would be
  // every table: say so by deleting them one by one).
  absl::StatusOr<DeleteResult> DeleteTables(const std::string& prefix);

  // DeleteTables(prefix), and closes the prefix for good, in the same synced
  // write: from then on (across restarts too) a put to a table whose name
  // starts with `prefix` is refused with FAILED_PRECONDITION instead of
  // creating the table again. The learner closes a job's prefix ("<job_id>/")
  // when the job ends, so that a worker's late put leaves no orphan table.
  absl::StatusOr<DeleteResult> CloseTables(const std::string& prefix);

  // The closed prefix `table` falls under; empty if none.
  std::string ClosedPrefixOf(const std::string& table) const;

  // Deletes exactly the table `table` (OK, with zero counts, if it does not
  // exist).
  absl::StatusOr<DeleteResult> DeleteTable(const std::string& table);

  // Per-table stats (name, items, bytes, capacity, puts, samples) of the
  // tables whose name starts with `prefix` (empty: all), sorted by name.
  // puts survive a restart; samples count since Open.
  std::vector<v1::TableStats> Stats(const std::string& prefix = "") const;

  StoreTotals Totals() const;

  // Whether writes are refused since Open or the last Resume that
  // succeeded: a put found the disk under min_free_bytes, or a write failed
  // in RocksDB (which then refuses every write until DB::Resume). Reads go on.
  bool WritesFailing() const { return writes_failing_.load(); }

  // Once the disk has room again (min_free_bytes free) clears the refusal,
  // with RocksDB's DB::Resume() after a failed write. OK when writes were not
  // failing; the reason otherwise.
  absl::Status Resume();

 private:
  struct ItemRef {
    uint64_t key;
    int64_t bytes;
  };
  struct Table {
    int64_t capacity = 0;
    int64_t puts = 0;
    int64_t samples = 0;
    int64_t bytes = 0;
    std::deque<ItemRef> items;  // ascending keys: oldest first
  };
  struct Pick {
    ItemRef ref;
    int64_t index;
    int64_t table_size;
  };

  RocksReplayStore(std::unique_ptr<rocksdb::DB> db, bool sync_writes, std::string path,
                   int64_t min_free_bytes);
  // OK, or RESOURCE_EXHAUSTED when writing `bytes` would leave less than
  // min_free_bytes_ free.
  absl::Status CheckRoom(int64_t bytes) const;
  absl::Status Load();
  // Reads the item `pick` names from a snapshot taken by the caller under mu_.
  absl::StatusOr<StoredItem> ReadItem(const std::string& table, const Pick& pick,
                                      const void* snapshot);
  // The names of the tables that start with `prefix` (takes mu_).
  std::vector<std::string> TablesWithPrefix(const std::string& prefix) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Deletes `names` (each present in tables_) in one synced write, which
  // with `close_prefix` non-empty also records that prefix as closed.
  absl::StatusOr<DeleteResult> DeleteNamed(const std::vector<std::string>& names,
                                           const std::string& close_prefix = "")
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  std::string ClosedPrefixOfLocked(const std::string& table) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const std::unique_ptr<rocksdb::DB> db_;
  const bool sync_writes_;
  const std::string path_;
  const int64_t min_free_bytes_;
  std::atomic<bool> writes_failing_{false};
  // The write that failed. Until Resume, writes fail with it without
  // reaching RocksDB, whose WAL writer must not be written after an error.
  absl::Status write_error_ ABSL_GUARDED_BY(write_mu_);

  // Serialises mutations: a writer decides its evictions and writes them
  // without another writer changing the table in between.
  mutable absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  uint64_t next_key_ ABSL_GUARDED_BY(write_mu_) = 1;
  // Prefixes closed by CloseTables (records "c/<prefix>").
  std::set<std::string> closed_ ABSL_GUARDED_BY(write_mu_);

  // Guards the in-memory index. Invariant that lets readers drop mu_ before
  // reading the item: a key is added only after its write is durable, and
  // removed before the write that deletes it, so a snapshot taken under mu_
  // holds every key the index lists.
  mutable absl::Mutex mu_;
  std::map<std::string, Table> tables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lopt
