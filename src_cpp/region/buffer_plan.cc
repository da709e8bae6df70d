#include "buffer_plan.h"

#include <algorithm>
#include <cstdlib>
#include <new>

namespace bnq {
namespace region {
namespace {

constexpr size_t kAlignment = 64;  // a cache line, as oneDNN prefers

int Root(const std::vector<Value>& values, int v) {
  while (values[v].alias_of >= 0) v = values[v].alias_of;
  return v;
}

}  // namespace

void BufferPlan::Freer::operator()(void* p) const { std::free(p); }

void BufferPlan::Assign(const std::vector<std::unique_ptr<Step>>& steps,
                        std::vector<Value>* values) {
  const int n = static_cast<int>(values->size());
  std::vector<int> first(n, -1), last(n, -1);
  std::vector<size_t> need(n, 0);
  for (int s = 0; s < static_cast<int>(steps.size()); ++s) {
    for (const auto* uses : {&steps[s]->writes(), &steps[s]->reads()}) {
      for (int v : *uses) {
        if ((*values)[v].kind != ValueKind::kIntermediate) continue;
        const int r = Root(*values, v);
        if (first[r] < 0) first[r] = s;
        last[r] = std::max(last[r], s);
        need[r] = std::max(need[r], (*values)[v].bytes());
      }
    }
  }
  std::vector<int> order;
  for (int v = 0; v < n; ++v) {
    if (first[v] >= 0) order.push_back(v);
  }
  std::sort(order.begin(), order.end(), [&](int a, int b) { return first[a] < first[b]; });

  struct Slot {
    size_t size;
    int busy_until;  // last step that uses it
  };
  std::vector<Slot> slots;
  std::vector<int> slot_of(n, -1);
  for (int v : order) {
    int best = -1;
    for (int i = 0; i < static_cast<int>(slots.size()); ++i) {
      if (slots[i].busy_until >= first[v]) continue;
      // Best fit: the smallest free slot that holds it, else the largest one.
      if (best < 0) {
        best = i;
        continue;
      }
      const bool fits = slots[i].size >= need[v], best_fits = slots[best].size >= need[v];
      if ((fits && (!best_fits || slots[i].size < slots[best].size)) ||
          (!fits && !best_fits && slots[i].size > slots[best].size)) {
        best = i;
      }
    }
    if (best < 0) {
      slots.push_back({0, -1});
      best = static_cast<int>(slots.size()) - 1;
    }
    slots[best].size = std::max(slots[best].size, need[v]);
    slots[best].busy_until = last[v];
    slot_of[v] = best;
  }

  buffers_.clear();
  total_bytes_ = 0;
  for (const Slot& slot : slots) {
    const size_t size = (std::max<size_t>(slot.size, 1) + kAlignment - 1) / kAlignment * kAlignment;
    void* p = std::aligned_alloc(kAlignment, size);
    if (p == nullptr) throw std::bad_alloc();
    buffers_.emplace_back(p);
    total_bytes_ += size;
  }
  for (int v = 0; v < n; ++v) {
    Value& value = (*values)[v];
    if (value.kind != ValueKind::kIntermediate) continue;
    const int r = Root(*values, v);
    if (slot_of[r] >= 0) value.data = buffers_[slot_of[r]].get();
  }
}

}  // namespace region
}  // namespace bnq
