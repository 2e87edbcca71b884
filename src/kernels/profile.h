// Per-op profiler for any backend: backend_profiled() wraps an op table so that every compute or
// memory op is timed between two inner.sync() calls (so a device backend's queued work is
// charged to the op that queued it) and summed per op name into an OpProfile. The syncs make a
// profiled step slower than a free-running one; `longctx bench train --profile-ops` reports both.
#pragma once
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace longctx {

struct OpProfile {
  struct Entry {
    std::string op;  // the Backend member's name, e.g. "matmul_forward"
    int64_t calls = 0;
    double seconds = 0;  // wall time between the syncs around each call, summed
    double flops = 0;    // GEMM FLOPs (matmul_*, lm_head_xent); 0 for other ops
  };
  std::vector<Entry> entries;  // in order of first call
  int steps = 1;               // divides the totals in to_json's ms_per_step

  void add(const char* op, double seconds, double flops);
  double seconds() const;  // Σ over entries
  // [{op, calls, ms_total, ms_per_step, share (% of seconds()), tflops (when flops > 0)}],
  // slowest op first.
  nlohmann::json to_json() const;
};

// The rows of OpProfile::to_json() as a table (op, calls, ms/step, share %, TFLOP/s) on `out`:
// `--profile-ops` of bench train and of the commands that run the inference engine.
void print_op_table(std::FILE* out, const nlohmann::json& ops);

// An op table that runs `inner`'s ops, timing each into `prof` (see above). alloc/release/
// pinned_*/event_*/stream_wait/sync/peak_bytes are inner's own function pointers, so memory from
// either table may be released through the other. There is ONE profiled table per process: a
// later call re-points it at another profile (the returned reference is the same); wrapping a
// different inner backend is an error. Not thread-safe (ops are called from one host thread).
const Backend& backend_profiled(const Backend& inner, OpProfile& prof);

}  // namespace longctx
