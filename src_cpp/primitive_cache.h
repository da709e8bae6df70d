// The primitive cache of the oneDNN kernels: a small, thread-safe map from a
// shape to what was built for it, bounded, least recently used first out.
// Creating a oneDNN primitive costs far more than running it on one batch,
// and a model uses few shapes.  (oneDNN's own primitive cache would spare the
// kernel generation too, but not the primitive descriptor's creation, which
// costs as much as running these small ops once.)  Hits and misses are
// counted, so that tests can observe reuse.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <utility>

namespace bnq {

template <typename Key, typename Value, size_t Capacity>
class PrimitiveCache {
 public:
  // The value for `key`; built by `make()` (with the cache locked) when
  // absent.  Returned by copy: oneDNN objects are shared handles, so the
  // copy stays valid after the entry is evicted.
  template <typename Make>
  Value Get(const Key& key, Make make) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first == key) {
        ++hits_;
        entries_.splice(entries_.begin(), entries_, it);
        return entries_.front().second;
      }
    }
    ++misses_;
    entries_.emplace_front(key, make());
    if (entries_.size() > Capacity) entries_.pop_back();
    return entries_.front().second;
  }

  // (hits, misses) so far.
  std::pair<uint64_t, uint64_t> Counts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {hits_, misses_};
  }

 private:
  std::mutex mutex_;
  uint64_t hits_ = 0, misses_ = 0;
  std::list<std::pair<Key, Value>> entries_;  // front = most recent
};

}  // namespace bnq
