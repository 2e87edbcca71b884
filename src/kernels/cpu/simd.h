// 16-lane fp32 vectors (GCC/Clang vector extensions: one zmm with AVX-512, two ymm otherwise)
// and the transcendental functions the fast ops need.
#pragma once
#include <cstdint>
#include <cstring>

namespace longctx::cpu {

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
// unaligned variants for loads/stores at arbitrary float addresses
typedef float v16f_u __attribute__((vector_size(64), aligned(4)));

// Pins a vector in a register. GCC otherwise folds re-used loads into the FMAs as memory
// operands; with one 512-bit load per cycle that caps a register-blocked tile GEMM at one FMA
// per cycle (measured 116 vs 259 GFLOP/s for a 64×64×64 tile on one core).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LCX_IN_REGISTER(x) asm("" : "+v"(x))
#else
#define LCX_IN_REGISTER(x) (void)0
#endif

inline v16f load16(const float* p) { return *reinterpret_cast<const v16f_u*>(p); }
inline void store16(float* p, v16f x) { *reinterpret_cast<v16f_u*>(p) = x; }
// (not `v16f{} + x`: 0 + x is not x for x = −0, so GCC emits a scalar add before the broadcast)
inline v16f splat16(float x) { return v16f{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
inline v16f iota16() { return v16f{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }
inline v16f min16(v16f a, v16f b) { return a < b ? a : b; }
inline v16f max16(v16f a, v16f b) { return a > b ? a : b; }

// exp(x) by 2^n · e^r, n = round(x/ln2), |r| ≤ ln2/2 (Cody–Waite split of ln2), degree-6 Taylor
// polynomial for e^r: relative error ≤ 2.3e-7 on x ∈ [−87, 88] (measured; σ built on it 2.7e-7),
// clamped outside (exp(−87) ≈ 1.6e-38).
inline v16f exp16(v16f x) {
  x = max16(min16(x, splat16(88.0f)), splat16(-87.0f));
  const v16f magic = splat16(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  v16f t = x * 1.44269504088896341f + magic;
  v16f n = t - magic;
  v16f r = x - n * 0.693145751953125f - n * 1.42860682030941723212e-6f;
  v16f p = splat16(1.0f / 720);
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  v16i ni = (v16i)t - (v16i)magic;                 // the integer n
  v16f scale = (v16f)((ni + 127) << 23);           // 2^n
  return p * scale;
}
// σ(x) = 1 / (1 + e^(−x))
inline v16f sigmoid16(v16f x) { return 1.0f / (1.0f + exp16(-x)); }

}  // namespace longctx::cpu
