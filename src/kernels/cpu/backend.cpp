// The backend tables (backend.h): `cpu_ref` = the float instantiation of ref.h, `cpu` = the fast
// ops of this directory; backend_get() looks a table up by name; alibi_slopes (DESIGN.md §2.1).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cpu/attn_block.h"
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/sample.h"
#include "kernels/cpu/ref.h"

namespace longctx {

// balanced: half = H/2, a_k = 2^(−8k/half), k = 1..half: head k−1 gets −a_k, head half+k−1 gets
// +a_k.  neg: s_i = −2^(−8(i+1)/H).  pos: s_i = +2^(−8(i+1)/H).  none: 0.
void alibi_slopes(float* slopes, Alibi kind, int H) {
  LCX_CHECK(H >= 1, "alibi_slopes: number of heads must be >= 1, got {}", H);
  switch (kind) {
    case Alibi::none:
      for (int i = 0; i < H; i++) slopes[i] = 0.0f;
      break;
    case Alibi::neg:
    case Alibi::pos: {
      float sign = kind == Alibi::neg ? -1.0f : 1.0f;
      for (int i = 0; i < H; i++) slopes[i] = sign * float(std::exp2(-8.0 * (i + 1) / H));
      break;
    }
    case Alibi::balanced: {
      LCX_CHECK(H % 2 == 0,
                "alibi 'balanced' needs an even number of heads (half negative, half positive "
                "slopes), got {} heads; use alibi 'neg', 'pos' or 'none'", H);
      int half = H / 2;
      for (int k = 1; k <= half; k++) {
        float a = float(std::exp2(-8.0 * k / half));
        slopes[k - 1] = -a;
        slopes[half + k - 1] = a;
      }
      break;
    }
  }
}

namespace {

// ---- host memory, shared by cpu and cpu_ref
void* host_alloc(size_t bytes) {
  void* p = std::calloc(std::max<size_t>(bytes, 1), 1);
  LCX_CHECK(p, "out of host memory allocating {} bytes", bytes);
  return p;
}
void host_release(void* p) { std::free(p); }
void host_copy(void* dst, const void* src, size_t bytes, Copy) { std::memcpy(dst, src, bytes); }
void host_zero(float* x, size_t n) { std::memset(x, 0, n * sizeof(float)); }
void host_add(float* y, const float* x, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}
void host_scale(float* x, size_t n, float a) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) x[i] *= a;
}
// Fixed chunks summed in order: bitwise reproducible whatever the thread count (an OpenMP
// reduction's combine order is not), which bit-exact resume relies on.
template <bool squares>
double host_sum(const float* x, size_t n) {
  constexpr size_t chunk = 1 << 16;
  std::vector<double> partial((n + chunk - 1) / chunk, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t c = 0; c < partial.size(); c++) {
    double s = 0.0;
    for (size_t i = c * chunk; i < std::min(n, (c + 1) * chunk); i++)
      s += squares ? double(x[i]) * x[i] : double(x[i]);
    partial[c] = s;
  }
  double sum = 0.0;
  for (double s : partial) sum += s;
  return sum;
}

void host_sync() {}
size_t host_peak_bytes() { return 0; }
void host_copy_async(void* dst, const void* src, size_t bytes, Copy, Stream) {
  std::memcpy(dst, src, bytes);
}
// Events on synchronous streams: nothing to wait for; a distinct non-null handle each.
void* host_event_create() { return new char; }
void host_event_release(void* ev) { delete static_cast<char*>(ev); }
void host_event_record(void*, Stream) {}
void host_stream_wait(Stream, void*) {}

// matmul_forward_group / matmul_backward_group (backend.h) on a host backend: its own matmul op
// once per projection (nothing to share on the host); the first dinp GEMM takes the caller's
// Grad, the others add to it.
using MatmulForward = void (*)(float*, const float*, const float*, int, int, int);
using MatmulBackward = void (*)(float*, float*, const float*, const float*, const float*, int,
                                int, int, Grad);
template <MatmulForward matmul_forward>
void host_matmul_forward_group(float* const* out, const float* inp, const float* const* weight,
                               int T, int C, const int* OC, int G) {
  LCX_CHECK(G >= 1, "matmul_forward_group: G = {} projections, need >= 1", G);
  for (int g = 0; g < G; g++) matmul_forward(out[g], inp, weight[g], T, C, OC[g]);
}
template <MatmulBackward matmul_backward>
void host_matmul_backward_group(float* dinp, float* const* dweight, const float* const* dout,
                                const float* inp, const float* const* weight, int T, int C,
                                const int* OC, int G, Grad dinp_mode) {
  LCX_CHECK(G >= 1, "matmul_backward_group: G = {} projections, need >= 1", G);
  for (int g = 0; g < G; g++)
    matmul_backward(dinp, dweight[g], dout[g], inp, weight[g], T, C, OC[g],
                    g == 0 ? dinp_mode : Grad::add);
}

// decode_attn_forward (backend.h) on a host backend through its own attention ops: per sequence,
// store the new entry in slot p % C, then attend as one query after the window's entries (Tk),
// read in place from the ring when they do not wrap past its end, else gathered oldest first
// into a per-thread copy. Several sequences run in parallel (the attention op serially inside);
// one runs on the caller's thread (the attention op parallelises inside).
using SwatForward = void (*)(float*, const float*, const float*, const float*, const AttnShape&);
using SoftmaxForward = void (*)(float*, float*, const float*, const float*, const float*,
                                const AttnShape&);
template <SwatForward swat, SoftmaxForward softmax_fwd>
void host_decode_attn_forward(float* out, const float* q, const float* k_new, const float* v_new,
                              const KvRing* rings, int S, const AttnShape& s, bool softmax) {
  LCX_CHECK(S >= 0, "decode_attn_forward: negative number of sequences {}", S);
  AttnShape one = s;
  one.T = 1, one.Tk = 0, one.cu_seqlens = nullptr, one.n_docs = 0;
  ref::attn_check(one, "decode_attn_forward");  // before the parallel loop: no throw inside it
  for (int i = 0; i < S; i++)
    LCX_CHECK(rings[i].k && rings[i].v && rings[i].capacity >= 1 && rings[i].pos >= 0,
              "decode_attn_forward: ring {} is invalid (capacity {}, position {})", i,
              rings[i].capacity, rings[i].pos);
  const size_t kvd = size_t(s.Hkv) * s.D, qd = size_t(s.H) * s.D;
  auto decode_one = [&](int i) {
    const KvRing& r = rings[i];
    const int64_t p = r.pos, C = r.capacity;
    std::memcpy(r.k + size_t(p % C) * kvd, k_new + i * kvd, kvd * sizeof(float));
    std::memcpy(r.v + size_t(p % C) * kvd, v_new + i * kvd, kvd * sizeof(float));
    const int64_t lo = std::max({int64_t(0), p - s.window + 1, p - C + 1}), first = lo % C;
    const int n = int(p - lo + 1);
    const float *K = r.k + size_t(first) * kvd, *V = r.v + size_t(first) * kvd;
    thread_local std::vector<float> gk, gv;
    if (first + n > C) {  // the window wraps: [first, C) then [0, rest)
      const size_t head = size_t(C - first) * kvd, all = size_t(n) * kvd;
      gk.resize(all), gv.resize(all);
      std::memcpy(gk.data(), K, head * sizeof(float));
      std::memcpy(gv.data(), V, head * sizeof(float));
      std::memcpy(gk.data() + head, r.k, (all - head) * sizeof(float));
      std::memcpy(gv.data() + head, r.v, (all - head) * sizeof(float));
      K = gk.data(), V = gv.data();
    }
    AttnShape a = one;
    a.Tk = n;
    if (softmax) {
      std::vector<float> lse(size_t(s.H));
      softmax_fwd(out + i * qd, lse.data(), q + i * qd, K, V, a);
    } else {
      swat(out + i * qd, q + i * qd, K, V, a);
    }
  };
  if (S == 1) {
    decode_one(0);
    return;
  }
#pragma omp parallel for schedule(dynamic)
  for (int i = 0; i < S; i++) decode_one(i);
}

}  // namespace

#define LONGCTX_HOST_MEMORY                                                                    \
  false, host_alloc, host_release, host_copy, host_zero, host_add, host_scale, host_sum<false>, \
      host_sum<true>, host_sync, host_peak_bytes, host_alloc, host_release, host_copy_async,   \
      host_event_create, host_event_release, host_event_record, host_stream_wait

const Backend& backend_cpu_ref() {
  static const Backend b = {
      "cpu_ref",
      LONGCTX_HOST_MEMORY,
      ref::matmul_forward<float>,
      ref::matmul_backward<float>,
      host_matmul_forward_group<ref::matmul_forward<float>>,
      host_matmul_backward_group<ref::matmul_backward<float>>,
      ref::embedding_forward<float>,
      ref::embedding_backward<float>,
      ref::rmsnorm_forward<float>,
      ref::rmsnorm_backward<float>,
      ref::rope_forward<float>,
      ref::rope_backward<float>,
      ref::swat_forward<float>,
      ref::swat_backward<float>,
      ref::softmax_attn_forward<float>,
      ref::softmax_attn_backward<float>,
      host_decode_attn_forward<ref::swat_forward<float>, ref::softmax_attn_forward<float>>,
      ref::attn_block_forward<float>,
      ref::attn_block_backward<float>,
      attn_block_merge<float>,
      ref::swiglu_forward<float>,
      ref::swiglu_backward<float>,
      ref::lm_head_xent<float>,
      ref::adamw_update<float>,
      ref::sample_rows,
  };
  return b;
}

const Backend& backend_cpu() {
  static const Backend b = {
      "cpu",
      LONGCTX_HOST_MEMORY,
      cpu::matmul_forward,
      cpu::matmul_backward,
      host_matmul_forward_group<cpu::matmul_forward>,
      host_matmul_backward_group<cpu::matmul_backward>,
      cpu::embedding_forward,
      cpu::embedding_backward,
      cpu::rmsnorm_forward,
      cpu::rmsnorm_backward,
      cpu::rope_forward,
      cpu::rope_backward,
      cpu::swat_forward,
      cpu::swat_backward,
      cpu::softmax_attn_forward,
      cpu::softmax_attn_backward,
      host_decode_attn_forward<cpu::swat_forward, cpu::softmax_attn_forward>,
      cpu::attn_block_forward,
      cpu::attn_block_backward,
      attn_block_merge<float>,
      cpu::swiglu_forward,
      cpu::swiglu_backward,
      cpu::lm_head_xent,
      cpu::adamw_update,
      cpu::sample_rows,
  };
  return b;
}

#ifndef LONGCTX_HAVE_CUDA
const Backend& backend_cuda() {
  fail("this build has no CUDA backend: rebuild with -DLONGCTX_CUDA=ON on a machine with nvcc");
}
bool cuda_available() { return false; }
#endif

const Backend& backend_get(const char* name) {
  std::string n = name ? name : "";
  if (n == "cpu") return backend_cpu();
  if (n == "cpu_ref") return backend_cpu_ref();
  if (n == "cuda") return backend_cuda();
  fail("unknown backend '{}': known backends are 'cpu', 'cpu_ref', 'cuda'", n);
}

}  // namespace longctx
