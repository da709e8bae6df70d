// The buffer plan of a compiled region: every intermediate value gets a
// buffer once, at build time, and values whose lifetimes do not overlap share
// one (greedy, in step order, best fit by size).  Nothing is allocated per
// forward.  Inputs and outputs are MXNet's buffers and are not planned.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "region_steps.h"

namespace bnq {
namespace region {

class BufferPlan {
 public:
  // Sets `data` of every intermediate value in `values` (aliases get their
  // root's buffer).  Throws std::bad_alloc when memory runs out.
  void Assign(const std::vector<std::unique_ptr<Step>>& steps, std::vector<Value>* values);

  size_t total_bytes() const { return total_bytes_; }
  size_t buffer_count() const { return buffers_.size(); }

 private:
  struct Freer {
    void operator()(void* p) const;
  };
  std::vector<std::unique_ptr<void, Freer>> buffers_;
  size_t total_bytes_ = 0;
};

}  // namespace region
}  // namespace bnq
