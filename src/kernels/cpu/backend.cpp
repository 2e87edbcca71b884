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
      ref::attn_block_forward<float>,
      ref::attn_block_backward<float>,
      attn_block_merge<float>,
      ref::swiglu_forward<float>,
      ref::swiglu_backward<float>,
      ref::lm_head_xent<float>,
      ref::adamw_update<float>,
  };
  return b;
}

const Backend& backend_cpu() {
  static const Backend b = {
      "cpu",
      LONGCTX_HOST_MEMORY,
      cpu::matmul_forward,
      cpu::matmul_backward,
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
      cpu::attn_block_forward,
      cpu::attn_block_backward,
      attn_block_merge<float>,
      cpu::swiglu_forward,
      cpu::swiglu_backward,
      cpu::lm_head_xent,
      cpu::adamw_update,
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
