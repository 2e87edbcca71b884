// The backend tables (backend.h): `cpu_ref` = the float instantiation of ref.h, `cpu` = the fast
// ops of this directory; backend_get() looks a table up by name; alibi_slopes (DESIGN.md §2.1).
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "kernels/backend.h"
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

const Backend& backend_cpu_ref() {
  static const Backend b = {
      "cpu_ref",
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
      cpu::swiglu_forward,
      cpu::swiglu_backward,
      cpu::lm_head_xent,
      cpu::adamw_update,
  };
  return b;
}

const Backend& backend_get(const char* name) {
  std::string n = name ? name : "";
  if (n == "cpu") return backend_cpu();
  if (n == "cpu_ref") return backend_cpu_ref();
  fail("unknown backend '{}': known backends are 'cpu', 'cpu_ref'{}", n,
       n == "cuda" ? " (this build has no CUDA backend: rebuild with -DLONGCTX_CUDA=ON on a machine "
                     "with nvcc)"
                   : "");
}

}  // namespace longctx
