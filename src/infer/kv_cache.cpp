#include "infer/kv_cache.h"

#include <algorithm>
#include <climits>

#include "core/error.h"

namespace longctx {

KvCache kv_cache_init(const Config& c, int max_context, const Backend& be) {
  LCX_CHECK(max_context >= 1, "max_context must be ≥ 1, got {}", max_context);
  KvCache kv;
  kv.be = &be;
  kv.layers = c.num_hidden_layers;
  kv.kvd = c.num_key_value_heads * c.head_dim();
  kv.window = c.window;
  kv.capacity = std::min(c.window, max_context);
  kv.k.resize(kv.layers);
  kv.v.resize(kv.layers);
  return kv;
}

int KvCache::n_old() const {
  return int(std::min<int64_t>({n_past, int64_t(window) - 1, int64_t(capacity)}));
}

int64_t KvCache::room() const {
  // A ring holding the whole window may wrap forever; positions are int32 for RoPE.
  if (capacity >= window) return int64_t(INT32_MAX) - n_past;
  return int64_t(capacity) - n_past;
}

size_t KvCache::bytes() const { return size_t(layers) * 2 * size_t(rows) * kvd * sizeof(float); }

namespace {
// Storage of `rows` entries per layer, keeping the filled ones (n_past < rows before a wrap).
void resize_rows(KvCache& c, int rows) {
  const size_t keep = sizeof(float) * size_t(std::min<int64_t>(c.n_past, c.rows)) * c.kvd;
  for (auto* kv : {&c.k, &c.v})
    for (Buffer<float>& b : *kv) {
      Buffer<float> grown(*c.be, size_t(rows) * c.kvd);
      if (keep) c.be->copy(grown.data(), b.data(), keep, Copy::within);
      b = std::move(grown);
    }
  c.rows = rows;
}
}  // namespace

void kv_cache_reserve(KvCache& c, int n) {
  LCX_CHECK(n <= c.room(), "context of {} tokens exceeds the KV cache ({} tokens: the model's "
            "window {} and max_context {})", c.n_past + n, c.n_past + c.room(), c.window,
            c.capacity);
  const int64_t need = std::min<int64_t>(c.capacity, c.n_past + n);
  if (need <= c.rows) return;
  // Grow geometrically; before the first wrap (n_past < capacity) slot p % capacity == p, so
  // the n_past filled entries move over as they are.
  resize_rows(c, int(std::min<int64_t>(c.capacity, std::max<int64_t>(need, 2 * int64_t(c.rows)))));
}

void kv_cache_assign(KvCache& dst, const KvCache& src) {
  LCX_CHECK(dst.be == src.be && dst.layers == src.layers && dst.kvd == src.kvd && dst.capacity == src.capacity,
            "kv_cache_assign: the caches belong to different models or backends");
  dst.n_past = 0;  // nothing of dst's own survives
  if (dst.rows < src.rows) resize_rows(dst, src.rows);
  dst.n_past = src.n_past;
  const size_t bytes = sizeof(float) * size_t(std::min<int64_t>(src.n_past, src.rows)) * src.kvd;
  if (bytes == 0) return;
  for (int l = 0; l < src.layers; l++) {
    src.be->copy(dst.k[l].data(), src.k[l].data(), bytes, Copy::within);
    src.be->copy(dst.v[l].data(), src.v[l].data(), bytes, Copy::within);
  }
}

void kv_cache_gather(const KvCache& c, int l, float* k_out, float* v_out) {
  const int n = c.n_old(), kvd = c.kvd;
  const int64_t first = c.n_past - n;
  int done = 0;
  while (done < n) {  // at most two runs: up to the end of the ring, then from slot 0
    const int slot = int((first + done) % c.capacity);
    const int run = std::min(n - done, c.capacity - slot);
    const size_t bytes = sizeof(float) * size_t(run) * kvd;
    c.be->copy(k_out + size_t(done) * kvd, c.k[l].data() + size_t(slot) * kvd, bytes, Copy::within);
    c.be->copy(v_out + size_t(done) * kvd, c.v[l].data() + size_t(slot) * kvd, bytes, Copy::within);
    done += run;
  }
}

void kv_cache_store(KvCache& c, int l, const float* k, const float* v, int n) {
  const int kvd = c.kvd, keep = std::min(n, c.capacity);
  for (int i = n - keep; i < n;) {  // at most two runs: up to the end of the ring, then slot 0
    const int slot = int((c.n_past + i) % c.capacity);
    const int run = std::min(n - i, c.capacity - slot);
    const size_t bytes = sizeof(float) * size_t(run) * kvd;
    c.be->copy(c.k[l].data() + size_t(slot) * kvd, k + size_t(i) * kvd, bytes, Copy::within);
    c.be->copy(c.v[l].data() + size_t(slot) * kvd, v + size_t(i) * kvd, bytes, Copy::within);
    i += run;
  }
}

}  // namespace longctx
