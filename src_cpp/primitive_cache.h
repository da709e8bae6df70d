// The primitive cache of the oneDNN kernels: a small, thread-safe map from a
// shape to what was built for it, bounded, least recently used first out.
// Creating a oneDNN primitive costs far more than running it on one batch,
// and a model uses few shapes.
#pragma once

#include <cstddef>
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
        entries_.splice(entries_.begin(), entries_, it);
        return entries_.front().second;
      }
    }
    entries_.emplace_front(key, make());
    if (entries_.size() > Capacity) entries_.pop_back();
    return entries_.front().second;
  }

 private:
  std::mutex mutex_;
  std::list<std::pair<Key, Value>> entries_;  // front = most recent
};

}  // namespace bnq
