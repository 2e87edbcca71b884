// KV cache of one sequence (DESIGN.md §2.2): per layer, a ring buffer of `capacity` entries,
// each the RoPE'd key (rotated at its ABSOLUTE position) and the value of one token, Hkv·D
// floats each; the entry of position p lives in slot p % capacity.
//   capacity = min(window, max_context): a SWAT model keeps the last w entries, whatever the
//   context length (memory is constant); a softmax-full model (window ≥ max_context) keeps every
//   entry up to max_context. Storage grows on demand up to capacity (a short chat does not pay
//   for a 1M-token cache); growth only happens before the ring first wraps, so slots stay put.
// A query at position m reads keys m−w+1..m: a chunk starting at position p needs the
// min(p, w−1) entries before it (kv_cache_gather) plus its own keys.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/config.h"

namespace longctx {

struct KvCache {
  const Backend* be = nullptr;
  int layers = 0, kvd = 0;  // kvd = Hkv·D floats per entry
  int window = 0;           // model window w
  int capacity = 0;         // ring entries per layer
  int rows = 0;             // entries allocated per layer (≤ capacity)
  int64_t n_past = 0;       // tokens consumed = absolute position of the next token
  std::vector<Buffer<float>> k, v;  // per layer: (rows, kvd)

  // Entries a chunk starting at n_past must read from the cache.
  int n_old() const;
  // Tokens that can still be appended (INT64_MAX-ish for a ring that may wrap).
  int64_t room() const;
  size_t bytes() const;  // allocated cache memory
};

KvCache kv_cache_init(const Config& c, int max_context, const Backend& be);
// Make room for `n` more tokens (throws Error when a bounded cache would overflow).
void kv_cache_reserve(KvCache& c, int n);
// dst ← src's tokens (caches of one engine): dst's storage is reused when it has at least src's
// rows (a recycled cache: the scheduler's n samples of one prefill), else grown; only src's
// filled slots are copied (a slot beyond them is never read before it is stored).
void kv_cache_assign(KvCache& dst, const KvCache& src);
// Copy the n_old() entries before n_past of layer l, oldest first, to k_out/v_out (n_old, kvd)
// in the backend's memory.
void kv_cache_gather(const KvCache& c, int l, float* k_out, float* v_out);
// Store n entries (n, kvd, backend memory) of layer l at positions n_past.. (only the last
// `capacity` survive).
void kv_cache_store(KvCache& c, int l, const float* k, const float* v, int n);

}  // namespace longctx
