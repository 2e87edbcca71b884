// Fused SWAT attention forward and backward on Hopper (see swat_attention.cuh for the math and
// layouts; bench/cuda/NOTES.md for the measurements behind every choice here).
//
// Both kernels use wgmma (sm_90a) with operands in 128-byte-swizzled shared memory, filled by
// cp.async rings, and one __syncthreads per tile (no producer warps, no TMA yet).
//   forward : one CTA per (64·NWG query rows, query head); warpgroup wg owns 64 rows. Per key
//             tile of BN keys: S = Q Kᵀ (wgmma SS), p = σ(z) = 0.5 + 0.5·tanh(z/2) (one MUFU
//             op, tanh.approx.f32) in registers, O += P V (wgmma RS, P as bf16 A fragments).
//             No running max, no rescaling. Two schedules: A (S_j issued with P_{j−1}V_{j−1})
//             and B (S_{j+1} issued before σ(S_j)); B is faster at D 128, A at D 64.
//   backward: one CTA per (128 keys, KV head); warpgroup wg owns 64 keys and keeps dK, dV in
//             registers over the query heads of the GQA group and the query tiles (64 rows) of
//             the band: Sᵀ = K Qᵀ, dPᵀ = V dOᵀ (SS), Pᵀ and dZᵀ = Pᵀ(1−Pᵀ)dPᵀ in registers,
//             dV += Pᵀ dO, dK += dZᵀ Q (RS), dZᵀ → shared memory, dQ = dZ K (SS, A M-major)
//             → fp32 atomics (red.global.add.v2.f32) into a workspace; a last kernel converts it.
//             The score function is a template parameter: σ (SWAT) or softmax, p = exp(z − lse_m)
//             and dZ = P(dP − Δ_m) with the row statistics lse_m (the forward's) and
//             Δ_m = dO_m·O_m (a pre-kernel, FlashAttention-2's preprocessing step).
// Masking: with lo(m) = max(m−w+1, doc_start(m)), pair (m,n) is live iff lo(m) ≤ n ≤ m;
// equivalently with hi(n) = min(n+w−1, doc_end(n)−1): n ≤ m ≤ hi(n). Both are monotone, so a
// tile's live range is known from its corners, and tiles fully inside the band skip the mask.
// m−n enters as (tile offset) + (local offsets), so z stays exact in fp32 at any position.
#include "swat_attention.cuh"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "warp.cuh"

namespace longctx::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// small device helpers

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte cp.async; src_bytes = 0 zero-fills the destination.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ float tanh_approx(float x) {
  float y;
  asm("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// σ(2x) = 0.5 + 0.5·tanh(x): one MUFU op.
__device__ __forceinline__ float sigmoid_of_twice(float x) {
  return fmaf(0.5f, tanh_approx(x), 0.5f);
}
// 2^x: one MUFU op
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}


// Document [start, end) holding token t: largest i with cu[i] ≤ t.
__device__ __forceinline__ void doc_of(const int* cu, int n_docs, int t, int& start, int& end) {
  int lo = 0, hi = n_docs - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (__ldg(cu + mid) <= t) lo = mid;
    else hi = mid - 1;
  }
  start = __ldg(cu + lo);
  end = __ldg(cu + lo + 1);
}
// lowest live key of query m (m < T)
__device__ __forceinline__ int key_lo(const int* cu, int n_docs, int m, int w) {
  int s, e;
  doc_of(cu, n_docs, m, s, e);
  return max(m - w + 1, s);
}
// highest live query of key n (n < T)
__device__ __forceinline__ int query_hi(const int* cu, int n_docs, int n, int w) {
  int s, e;
  doc_of(cu, n_docs, n, s, e);
  return min(n + w - 1, e - 1);
}

// ---------------------------------------------------------------------------------------------
// Hopper warpgroup MMA (wgmma) helpers. wgmma exists only in the sm_90a target; nvcc 13.0's
// `-arch=sm_90a` also runs a plain sm_90 device pass, in which these helpers compile to a trap
// (that code is never selected on an H100/H200, which runs the sm_90a machine code).
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SWAT_NO_WGMMA 1
#endif
// Shared-memory operands use the 128-byte swizzle: a tile
// of R rows × D columns is stored as D/64 column blocks [R][64]; 16-byte chunk c of row r sits
// at chunk c ^ (r & 7) of its 128-byte row (the hardware's Swizzle<3,4,3>; blocks 1024-aligned).

template <int ROWS>
__device__ __forceinline__ int swz128(int row, int chunk) {
  return (chunk >> 3) * ROWS * 64 + row * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

template <int D, int ROWS, int NTHREADS>
__device__ __forceinline__ void load_tile128(__nv_bfloat16* tile, const __nv_bfloat16* base, int r0,
                                             int T, long ld) {
  constexpr int CH = D / 8;
  const uint32_t s = smem_u32(tile);
#pragma unroll
  for (int i = threadIdx.x % NTHREADS; i < ROWS * CH; i += NTHREADS) {
    const int r = i / CH, c = i % CH;
    const int gr = r0 + r;
    const bool ok = gr < T;
    const __nv_bfloat16* src = base + (ok ? static_cast<long>(gr) * ld + c * 8 : 0);
    cp_async16(s + 2 * swz128<ROWS>(r, c), src, ok ? 16 : 0);
  }
}

// smem matrix descriptor, 128-byte swizzle; lbo/sbo in bytes
__device__ __forceinline__ uint64_t gmma_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((saddr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wgmma_fence() {
#ifndef SWAT_NO_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifndef SWAT_NO_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifndef SWAT_NO_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// keep the compiler from moving accesses of wgmma accumulators across waits
template <int N>
__device__ __forceinline__ void fence_regs(float* r) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

// ---- wgmma wrappers, generated (operand order as in the PTX ISA) ----
// d (64×64 fp32) (+)= A (64×16, smem) · B (16×64, smem)
__device__ __forceinline__ void wgmma_ss_n64_t00(float* d, uint64_t da, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

// d (64×128 fp32) (+)= A (64×16, smem) · B (16×128, smem)
__device__ __forceinline__ void wgmma_ss_n128_t00(float* d, uint64_t da, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

// d (64×32 fp32) (+)= A (64×16 bf16, registers) · B (16×32, smem, N-major)
__device__ __forceinline__ void wgmma_rs_n32_t1(float* d, const uint32_t* a, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

// d (64×64 fp32) (+)= A (64×16 bf16, registers) · B (16×64, smem, N-major)
__device__ __forceinline__ void wgmma_rs_n64_t1(float* d, const uint32_t* a, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

// d (64×128 fp32) (+)= A (64×16 bf16, registers) · B (16×128, smem, N-major)
__device__ __forceinline__ void wgmma_rs_n128_t1(float* d, const uint32_t* a, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

// d (64×32 fp32) (+)= A (64×16, smem, M-major) · B (16×32, smem, N-major)
__device__ __forceinline__ void wgmma_ss_n32_t11(float* d, uint64_t da, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

// d (64×64 fp32) (+)= A (64×16, smem, M-major) · B (16×64, smem, N-major)
__device__ __forceinline__ void wgmma_ss_n64_t11(float* d, uint64_t da, uint64_t db, int accumulate) {
#ifndef SWAT_NO_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(accumulate));
#else
  __trap();
#endif
}

template <int N>
__device__ __forceinline__ void wgmma_ss(float* d, uint64_t da, uint64_t db, int acc) {
  if constexpr (N == 64) wgmma_ss_n64_t00(d, da, db, acc);
  else wgmma_ss_n128_t00(d, da, db, acc);
}
template <int N>
__device__ __forceinline__ void wgmma_rs_t(float* d, const uint32_t* a, uint64_t db, int acc) {
  if constexpr (N == 32) wgmma_rs_n32_t1(d, a, db, acc);
  else if constexpr (N == 64) wgmma_rs_n64_t1(d, a, db, acc);
  else wgmma_rs_n128_t1(d, a, db, acc);
}
template <int N>
__device__ __forceinline__ void wgmma_ss_tt(float* d, uint64_t da, uint64_t db, int acc) {
  if constexpr (N == 32) wgmma_ss_n32_t11(d, da, db, acc);
  else wgmma_ss_n64_t11(d, da, db, acc);
}

struct Params {
  const __nv_bfloat16 *q, *k, *v, *dout;
  __nv_bfloat16 *out, *dk, *dv;
  float* dq_acc;
  const float *lse2, *delta;  // softmax backward: row statistics [H][ld_stats] (softmax_row_stats)
  const int* cu;
  const float* slopes;
  int T, H, Hkv, n_docs, w, ld_stats;
  float bias, scale;
  bool accumulate;
};

// ---------------------------------------------------------------------------------------------
// forward

// Forward (wgmma). One CTA per (64·NWG query rows, query head); warpgroup wg owns 64 rows. Per key
// tile j (BN keys): S_j = Q K_jᵀ (wgmma, both operands in shared memory), P_j = σ(S_j) in
// registers, O += P_j V_j (wgmma, P from registers). K/V tiles stream through a STAGES-deep
// cp.async ring. Schedule A (OVERLAP = false): S_j is issued with P_{j−1}V_{j−1} and σ(S_j)
// overlaps the latter (prefetch distance STAGES−2). Schedule B (OVERLAP = true): S_{j+1} is issued
// before σ(S_j), which then overlaps S_{j+1} and the tail of P_{j−1}V_{j−1} (distance STAGES−3).
template <int D, int NWG, int BN, int STAGES>
struct FwdV2 {
  static constexpr int BM = 64 * NWG, NT = 128 * NWG;
  static constexpr int kSmem = (BM * D + 2 * STAGES * BN * D) * 2 + 1024;
};

template <int STAGES_LEFT>
__device__ __forceinline__ void cp_async_wait_dyn(int n) {
  // wait until at most n groups are pending (n ≤ STAGES_LEFT, small)
  if constexpr (STAGES_LEFT <= 0) {
    cp_async_wait<0>();
  } else {
    if (n >= STAGES_LEFT) cp_async_wait<STAGES_LEFT>();
    else cp_async_wait_dyn<STAGES_LEFT - 1>(n);
  }
}

// P = σ(Z) over one S tile of a forward warpgroup, in place in the wgmma accumulator layout
// (thread t4 holds columns 2·t4 + {0,1} of each 8-column group, for rows r_m[0..1]):
// z = s·scale + s_h·(m − n) + b, halved for sigmoid_of_twice, with ALiBi split into a per-row
// constant rc and a per-8-column step. `full` tiles lie inside the band; only the others test
// the mask (a uniform branch).
template <int BN>
__device__ __forceinline__ void sigma_tile(float* s, int n0, bool full, float hs, float col_step,
                                           float bias, float slope, const float* cb,
                                           const int* r_lo, const int* r_m, int t4) {
  float rc[2][2];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int e = 0; e < 2; ++e)
      rc[r][e] = 0.5f * bias + 0.5f * slope * static_cast<float>(r_m[r] - n0) + cb[e];
  auto body = [&]<bool MASK>() {
#pragma unroll
    for (int jj = 0; jj < BN / 8; ++jj) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float x = fmaf(s[jj * 4 + e], hs, fmaf(static_cast<float>(jj), col_step, rc[e >> 1][e & 1]));
        float pv = sigmoid_of_twice(x);
        if constexpr (MASK) {
          const int n = n0 + jj * 8 + 2 * t4 + (e & 1);
          const int r = e >> 1;
          if (n < r_lo[r] || n > r_m[r]) pv = 0.f;
        }
        s[jj * 4 + e] = pv;
      }
    }
  };
  if (full) body.template operator()<false>();
  else body.template operator()<true>();
}

template <int D, int NWG, int BN, int STAGES, int MINB, bool OVERLAP>
__global__ void __launch_bounds__(128 * NWG, MINB) swat_fwd_v2(Params p) {
  using C = FwdV2<D, NWG, BN, STAGES>;
  constexpr int BM = C::BM, NT = C::NT;
  static_assert(STAGES >= (OVERLAP ? 4 : 3), "prefetch distance ≥ 1");
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(base);
  __nv_bfloat16* sK = sQ + BM * D;         // [STAGES][BN*D]
  __nv_bfloat16* sV = sK + STAGES * BN * D;  // [STAGES][BN*D]

  const int T = p.T, w = p.w, H = p.H;
  const int h = blockIdx.y, hk = h / (H / p.Hkv);
  const int m0 = blockIdx.x * BM;
  const int wg = threadIdx.x >> 7, wq = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const long ldq = static_cast<long>(H) * D, ldk = static_cast<long>(p.Hkv) * D;
  const __nv_bfloat16* qb = p.q + static_cast<long>(h) * D;
  const __nv_bfloat16* kb = p.k + static_cast<long>(hk) * D;
  const __nv_bfloat16* vb = p.v + static_cast<long>(hk) * D;

  const int m_last = min(m0 + BM, T) - 1;
  const int n_first = (key_lo(p.cu, p.n_docs, m0, w) / BN) * BN;
  const int n_tiles = (m_last - n_first) / BN + 1;

  // this warpgroup's 64 rows; this thread's two rows
  const int wm0 = m0 + wg * 64;
  const bool wg_on = wm0 < T;
  const int wm_last = min(wm0 + 63, T - 1);
  int lo_min = 0, lo_max = 0, r_lo[2] = {0, 0}, r_m[2];
  r_m[0] = wm0 + wq * 16 + g;
  r_m[1] = r_m[0] + 8;
  if (wg_on) {
    lo_min = key_lo(p.cu, p.n_docs, wm0, w);
    lo_max = key_lo(p.cu, p.n_docs, wm_last, w);
#pragma unroll
    for (int i = 0; i < 2; ++i)
      r_lo[i] = r_m[i] < T ? key_lo(p.cu, p.n_docs, r_m[i], w) : r_m[i] + 1;
  }
  const float slope = p.slopes[h];
  const float hs = 0.5f * p.scale;
  const float col_step = -4.0f * slope;  // −s/2 per 8 columns
  float cb[2];
#pragma unroll
  for (int e = 0; e < 2; ++e) cb[e] = -0.5f * slope * static_cast<float>(2 * t4 + e);

  float o[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.f;
  if constexpr (!OVERLAP) {
    // schedule A: S_j and P_{j−1}V_{j−1} issued together; σ(S_j) overlaps P_{j−1}V_{j−1}
    load_tile128<D, BM, NT>(sQ, qb, m0, T, ldq);
    load_tile128<D, BN, NT>(sK, kb, n_first, T, ldk);
    load_tile128<D, BN, NT>(sV, vb, n_first, T, ldk);
    cp_async_commit();
  #pragma unroll
    for (int st = 1; st < STAGES - 2; ++st) {
      if (st < n_tiles) {
        load_tile128<D, BN, NT>(sK + st * BN * D, kb, n_first + st * BN, T, ldk);
        load_tile128<D, BN, NT>(sV + st * BN * D, vb, n_first + st * BN, T, ldk);
      }
      cp_async_commit();
    }

    const uint32_t q_addr = smem_u32(sQ) + wg * 64 * 128;
    float s[BN / 2];
    uint32_t pf[BN / 16][4];
    bool p_live = false;

    for (int j = 0; j <= n_tiles; ++j) {
      // tile j has landed once at most STAGES−3 younger groups are pending
      cp_async_wait_dyn<STAGES - 3>(min(STAGES - 3, max(n_tiles - 1 - j, 0)));
      fence_proxy_async();
      __syncthreads();
      {
        const int jn = j + STAGES - 2;
        if (jn < n_tiles) {
          const int b = jn % STAGES;
          load_tile128<D, BN, NT>(sK + b * BN * D, kb, n_first + jn * BN, T, ldk);
          load_tile128<D, BN, NT>(sV + b * BN * D, vb, n_first + jn * BN, T, ldk);
        }
        cp_async_commit();
      }
      const int n0 = n_first + j * BN;
      const bool s_live = wg_on && j < n_tiles && n0 <= wm_last && n0 + BN - 1 >= lo_min;
      if (s_live || p_live) wgmma_fence();
      if (s_live) {
        const uint32_t k_addr = smem_u32(sK + (j % STAGES) * BN * D);
  #pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
          wgmma_ss<BN>(s, gmma_desc(q_addr + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024),
                       gmma_desc(k_addr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
        wgmma_commit();
      }
      if (p_live) {
        const uint32_t v_addr = smem_u32(sV + ((j + STAGES - 1) % STAGES) * BN * D);
  #pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
          wgmma_rs_t<D>(o, pf[kk], gmma_desc(v_addr + kk * 2048, BN * 128, 1024), 1);
        wgmma_commit();
      }
      if (s_live) {
        if (p_live) wgmma_wait<1>();
        else wgmma_wait<0>();
        fence_regs<BN / 2>(s);
        sigma_tile<BN>(s, n0, n0 >= lo_max && n0 + BN - 1 <= wm0, hs, col_step, p.bias, slope, cb,
                       r_lo, r_m, t4);
      }
      wgmma_wait<0>();
      fence_regs<D / 2>(o);
      if (s_live) {
  #pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
          pf[kk][0] = pack_bf16(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
          pf[kk][1] = pack_bf16(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
          pf[kk][2] = pack_bf16(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
          pf[kk][3] = pack_bf16(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
        }
      }
      p_live = s_live;
    }

  } else {
    // schedule B: S_{j+1} issued before σ(S_j)
    // cp.async groups: {Q, tile 0}, tile 1, …, tile DIST; then one group per iteration
    constexpr int DIST = STAGES - 3;
    load_tile128<D, BM, NT>(sQ, qb, m0, T, ldq);
    load_tile128<D, BN, NT>(sK, kb, n_first, T, ldk);
    load_tile128<D, BN, NT>(sV, vb, n_first, T, ldk);
    cp_async_commit();
  #pragma unroll
    for (int st = 1; st <= DIST; ++st) {
      if (st < n_tiles) {
        load_tile128<D, BN, NT>(sK + st * BN * D, kb, n_first + st * BN, T, ldk);
        load_tile128<D, BN, NT>(sV + st * BN * D, vb, n_first + st * BN, T, ldk);
      }
      cp_async_commit();
    }

    const uint32_t q_addr = smem_u32(sQ) + wg * 64 * 128;
    float sn[BN / 2];  // accumulator of S_{j+1}
    uint32_t pf[BN / 16][4];  // P_j as bf16 A fragments

    auto issue_s = [&](float* sd, int j) {
      const uint32_t k_addr = smem_u32(sK + (j % STAGES) * BN * D);
      wgmma_fence();
  #pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss<BN>(sd, gmma_desc(q_addr + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024),
                     gmma_desc(k_addr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
    };

    cp_async_wait<DIST>();
    fence_proxy_async();
    __syncthreads();
    issue_s(sn, 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs<BN / 2>(sn);

    // Iteration j: S_{j+1} = Q K_{j+1}ᵀ is issued first (into sn), then σ(S_j) runs on the MUFU
    // while the tensor cores work on S_{j+1} and the tail of O += P_{j−1} V_{j−1}; then P_j is
    // packed to bf16 A fragments and O += P_j V_j is issued. S_j is read from a plain copy (sc)
    // and pf is written only after the wait that retires the P·V reading it, so ptxas can keep
    // the wgmma pipeline asynchronous. Every tile of the CTA's range is computed by every
    // warpgroup (the mask zeroes dead pairs): the wgmma groups are the same on every path.
    // The ring slot refilled at iteration j held tile j−2, whose P·V every warpgroup waited for.
    float sc[BN / 2];
  #pragma unroll
    for (int i = 0; i < BN / 2; ++i) sc[i] = sn[i];
    for (int j = 0; j < n_tiles; ++j) {
      cp_async_wait<DIST - 1>();  // tile j+1 landed
      fence_proxy_async();
      __syncthreads();
      {
        const int jn = j + 1 + DIST;
        if (jn < n_tiles) {
          const int b = jn % STAGES;
          load_tile128<D, BN, NT>(sK + b * BN * D, kb, n_first + jn * BN, T, ldk);
          load_tile128<D, BN, NT>(sV + b * BN * D, vb, n_first + jn * BN, T, ldk);
        }
        cp_async_commit();
      }
      if (j + 1 < n_tiles) issue_s(sn, j + 1);
      wgmma_commit();
      const int n0 = n_first + j * BN;
      sigma_tile<BN>(sc, n0, n0 >= lo_max && n0 + BN - 1 <= wm0, hs, col_step, p.bias, slope, cb,
                     r_lo, r_m, t4);
      wgmma_wait<1>();  // O += P_{j−1} V_{j−1} retired: pf is free
      fence_regs<D / 2>(o);
  #pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        pf[kk][0] = pack_bf16(sc[(2 * kk) * 4 + 0], sc[(2 * kk) * 4 + 1]);
        pf[kk][1] = pack_bf16(sc[(2 * kk) * 4 + 2], sc[(2 * kk) * 4 + 3]);
        pf[kk][2] = pack_bf16(sc[(2 * kk + 1) * 4 + 0], sc[(2 * kk + 1) * 4 + 1]);
        pf[kk][3] = pack_bf16(sc[(2 * kk + 1) * 4 + 2], sc[(2 * kk + 1) * 4 + 3]);
      }
      const uint32_t v_addr = smem_u32(sV + (j % STAGES) * BN * D);
      wgmma_fence();
  #pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk)
        wgmma_rs_t<D>(o, pf[kk], gmma_desc(v_addr + kk * 2048, BN * 128, 1024), 1);
      wgmma_commit();
      wgmma_wait<1>();  // S_{j+1} retired (P_j V_j may still run)
      fence_regs<BN / 2>(sn);
  #pragma unroll
      for (int i = 0; i < BN / 2; ++i) sc[i] = sn[i];
    }
    wgmma_wait<0>();
    fence_regs<D / 2>(o);

  }
  cp_async_wait<0>();

  if (!wg_on) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int m = r_m[r];
    if (m >= T) continue;
    __nv_bfloat16* dst = p.out + static_cast<long>(m) * ldq + static_cast<long>(h) * D;
#pragma unroll
    for (int jj = 0; jj < D / 8; ++jj)
      *reinterpret_cast<__nv_bfloat162*>(dst + jj * 8 + 2 * t4) =
          __floats2bfloat162_rn(o[jj * 4 + 2 * r], o[jj * 4 + 2 * r + 1]);
  }
}

// ---------------------------------------------------------------------------------------------
// backward

// Backward (wgmma). One CTA per (64·NWG keys, KV head); warpgroup wg owns 64 keys and
// keeps dK, dV for them in registers over the query heads of the GQA group and the query tiles
// (BM = 64 rows) of the band. Per query tile:
//   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ          (wgmma, operands in shared memory)
//   Pᵀ = p(Zᵀ), dZᵀ = Score::dz      (registers)
//   dV += Pᵀ dO, dK += dZᵀ Q         (wgmma, A from registers, B N-major from shared memory)
//   dZᵀ → shared memory; dQ[:, wg's D/NWG columns] = dZ K over all 64·NWG keys (wgmma, A M-major)
//   dQ → fp32 atomics (red.global.add.v2.f32) into the workspace.
// The score function (Score, below) sees x = kZ·z_mn − (row term of query m), z with the ALiBi
// term and bias; softmax's row statistics ride the Q/dO ring (2 × BM floats per query tile).

// SWAT: p = σ(z) = σ(2x) with x = z/2 (one MUFU op), dz = p(1−p)·dp.
struct SigmoidScore {
  static constexpr bool kRowStats = false;
  static constexpr float kZ = 0.5f;
  __device__ static float p(float x) { return sigmoid_of_twice(x); }
  __device__ static float dz(float p, float dp, float) { return dp * fmaf(-p, p, p); }
};
// Softmax: p = exp(z − lse_m) = 2^x with x = z·log2e − lse_m·log2e (one MUFU op),
// dz = p(dp − Δ_m), Δ_m = Σ_n p_mn dp_mn = dO_m·O_m (FlashAttention-2, Alg. 2).
struct SoftmaxScore {
  static constexpr bool kRowStats = true;
  static constexpr float kZ = 1.4426950408889634f;  // log2 e
  __device__ static float p(float x) { return exp2_approx(x); }
  __device__ static float dz(float p, float dp, float delta) { return p * (dp - delta); }
};

template <int D, int NWG, class Score>
struct BwdV2 {
  static constexpr int BN = 64 * NWG, BM = 64, NT = 128 * NWG;
  static constexpr int kStats = Score::kRowStats ? 2 * 2 * BM * 4 : 0;  // [2][lse2, Δ][BM] floats
  static constexpr int kSmem = (2 * BN * D + 4 * BM * D + BN * BM) * 2 + kStats + 1024;
};

// cp.async of query tile m0's softmax row statistics of head h: lse2 then Δ, BM floats each
// (the rows are padded to ld_stats ≥ m0 + BM, so every 16-byte chunk is in range).
template <int BM>
__device__ __forceinline__ void load_stats(float* dst, const Params& p, int h, int m0) {
  constexpr int CH = BM / 4;
  const int i = threadIdx.x;
  if (i >= 2 * CH) return;
  const float* src = (i < CH ? p.lse2 : p.delta) + static_cast<long>(h) * p.ld_stats + m0;
  cp_async16(smem_u32(dst + (i / CH) * BM + 4 * (i % CH)), src + 4 * (i % CH), 16);
}

template <int D, int NWG, class Score>
__global__ void __launch_bounds__(128 * NWG, 1) swat_bwd_v2(Params p) {
  using C = BwdV2<D, NWG, Score>;
  constexpr int BN = C::BN, BM = C::BM, NT = C::NT, DQN = D / NWG;
  static_assert(DQN == 32 || DQN == 64, "dQ columns per warpgroup");
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(base);
  __nv_bfloat16* sV = sK + BN * D;
  __nv_bfloat16* sQ = sV + BN * D;        // [2][BM*D]
  __nv_bfloat16* sdO = sQ + 2 * BM * D;   // [2][BM*D]
  __nv_bfloat16* sdS = sdO + 2 * BM * D;  // dZᵀ [BN keys][BM queries], 128-byte swizzle
  float* sStat = reinterpret_cast<float*>(sdS + BN * BM);  // softmax: [2][lse2, Δ][BM]

  const int T = p.T, w = p.w, H = p.H, G = H / p.Hkv;
  const int hk = blockIdx.y;
  const int n0 = blockIdx.x * BN;
  const int wg = threadIdx.x >> 7, wq = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const long ldq = static_cast<long>(H) * D, ldk = static_cast<long>(p.Hkv) * D;

  const int n_last = min(n0 + BN, T) - 1;
  const int m_hi = query_hi(p.cu, p.n_docs, n_last, w);
  const int m_first = (n0 / BM) * BM;
  const int m_tiles = (m_hi - m_first) / BM + 1;
  const int iters = G * m_tiles;

  const int wn0 = n0 + wg * 64;
  const bool wg_on = wn0 < T;
  const int wn_last = min(wn0 + 63, T - 1);
  int hi_min = -1, r_n[2], r_hi[2] = {-1, -1};
  r_n[0] = wn0 + wq * 16 + g;
  r_n[1] = r_n[0] + 8;
  int hi_max = -1;
  if (wg_on) {
    hi_min = query_hi(p.cu, p.n_docs, wn0, w);
    hi_max = query_hi(p.cu, p.n_docs, wn_last, w);
#pragma unroll
    for (int i = 0; i < 2; ++i) r_hi[i] = r_n[i] < T ? query_hi(p.cu, p.n_docs, r_n[i], w) : -1;
  }
  constexpr float kZ = Score::kZ;
  const float hs = kZ * p.scale;

  load_tile128<D, BN, NT>(sK, p.k + static_cast<long>(hk) * D, n0, T, ldk);
  load_tile128<D, BN, NT>(sV, p.v + static_cast<long>(hk) * D, n0, T, ldk);
  load_tile128<D, BM, NT>(sQ, p.q + static_cast<long>(hk * G) * D, m_first, T, ldq);
  load_tile128<D, BM, NT>(sdO, p.dout + static_cast<long>(hk * G) * D, m_first, T, ldq);
  if constexpr (Score::kRowStats) load_stats<BM>(sStat, p, hk * G, m_first);
  cp_async_commit();

  const uint32_t k_addr = smem_u32(sK) + wg * 64 * 128, v_addr = smem_u32(sV) + wg * 64 * 128;
  const uint32_t ds_addr = smem_u32(sdS);
  // dQ's B operand: K rows (all BN keys), columns wg·DQN … (N-major)
  const uint32_t kq_addr = smem_u32(sK) + (DQN == 64 ? wg * BN * 128 : wg * 64);

  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) dk[i] = dv[i] = 0.f;

  for (int it = 0; it < iters; ++it) {
    const int gi = it / m_tiles, mi = it - gi * m_tiles;
    const int h = hk * G + gi;
    const int m0 = m_first + mi * BM;
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    if (it + 1 < iters) {
      const int gn = (it + 1) / m_tiles, mn = (it + 1) - gn * m_tiles;
      const int hn = hk * G + gn;
      const int b = (it + 1) & 1;
      load_tile128<D, BM, NT>(sQ + b * BM * D, p.q + static_cast<long>(hn) * D, m_first + mn * BM,
                              T, ldq);
      load_tile128<D, BM, NT>(sdO + b * BM * D, p.dout + static_cast<long>(hn) * D,
                              m_first + mn * BM, T, ldq);
      if constexpr (Score::kRowStats) load_stats<BM>(sStat + b * 2 * BM, p, hn, m_first + mn * BM);
    }
    cp_async_commit();
    const uint32_t q_addr = smem_u32(sQ + (it & 1) * BM * D);
    const uint32_t do_addr = smem_u32(sdO + (it & 1) * BM * D);
    const float* lse2 = sStat + (it & 1) * 2 * BM;  // softmax: this tile's row statistics
    const float* delta = lse2 + BM;
    const float slope = p.slopes[h];

    const bool live = wg_on && m0 + BM - 1 >= wn0 && m0 <= hi_max;
    uint32_t* ds_rows = reinterpret_cast<uint32_t*>(sdS);
    if (live) {
      float st[BM / 2], dpt[BM / 2];
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss<BM>(st, gmma_desc(k_addr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024),
                     gmma_desc(q_addr + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss<BM>(dpt, gmma_desc(v_addr + (kk >> 2) * BN * 128 + (kk & 3) * 32, 16, 1024),
                     gmma_desc(do_addr + (kk >> 2) * BM * 128 + (kk & 3) * 32, 16, 1024), kk > 0);
      wgmma_commit();
      wgmma_wait<0>();
      fence_regs<BM / 2>(st);
      fence_regs<BM / 2>(dpt);
      const bool full = m0 >= wn_last && m0 + BM - 1 <= hi_min;
      const float col_step = 8.0f * kZ * slope;
      float rc[2][2];
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int e = 0; e < 2; ++e)
          rc[r][e] = kZ * p.bias + kZ * slope * static_cast<float>(m0 - r_n[r]) +
                     kZ * slope * static_cast<float>(2 * t4 + e);
      // the mask test only on tiles that cross the band's edge (a uniform branch)
      auto score = [&]<bool MASK>() {
#pragma unroll
        for (int jj = 0; jj < BM / 8; ++jj) {
          // softmax: the row statistics of queries jj·8 + 2·t4 + {0, 1}
          [[maybe_unused]] float2 l2{}, dl{};
          if constexpr (Score::kRowStats) {
            l2 = *reinterpret_cast<const float2*>(lse2 + jj * 8 + 2 * t4);
            dl = *reinterpret_cast<const float2*>(delta + jj * 8 + 2 * t4);
          }
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float x = fmaf(st[jj * 4 + e], hs, fmaf(static_cast<float>(jj), col_step, rc[e >> 1][e & 1]));
            if constexpr (Score::kRowStats) x -= (e & 1) ? l2.y : l2.x;
            float pv = Score::p(x);
            if constexpr (MASK) {
              const int m = m0 + jj * 8 + 2 * t4 + (e & 1);
              const int r = e >> 1;
              if (m < r_n[r] || m > r_hi[r]) pv = 0.f;
            }
            st[jj * 4 + e] = pv;
            dpt[jj * 4 + e] = Score::dz(pv, dpt[jj * 4 + e], (e & 1) ? dl.y : dl.x);
          }
        }
      };
      if (full) score.template operator()<false>();
      else score.template operator()<true>();
      uint32_t pa[BM / 16][4], za[BM / 16][4];
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk) {
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) {
          const int jj = 2 * kk + hh;
          pa[kk][2 * hh + 0] = pack_bf16(st[jj * 4 + 0], st[jj * 4 + 1]);
          pa[kk][2 * hh + 1] = pack_bf16(st[jj * 4 + 2], st[jj * 4 + 3]);
          za[kk][2 * hh + 0] = pack_bf16(dpt[jj * 4 + 0], dpt[jj * 4 + 1]);
          za[kk][2 * hh + 1] = pack_bf16(dpt[jj * 4 + 2], dpt[jj * 4 + 3]);
        }
      }
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk)
        wgmma_rs_t<D>(dv, pa[kk], gmma_desc(do_addr + kk * 2048, BM * 128, 1024), 1);
#pragma unroll
      for (int kk = 0; kk < BM / 16; ++kk)
        wgmma_rs_t<D>(dk, za[kk], gmma_desc(q_addr + kk * 2048, BM * 128, 1024), 1);
      wgmma_commit();
      // dZᵀ rows of this warpgroup → shared memory (row = key, 8 chunks of 8 queries)
#pragma unroll
      for (int jj = 0; jj < BM / 8; ++jj)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = wg * 64 + wq * 16 + g + 8 * r;
          ds_rows[(row * 64 + ((jj ^ (row & 7)) << 3) + 2 * t4) >> 1] = za[jj >> 1][(jj & 1) * 2 + r];
        }
    } else {
#pragma unroll
      for (int jj = 0; jj < BM / 8; ++jj)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int row = wg * 64 + wq * 16 + g + 8 * r;
          ds_rows[(row * 64 + ((jj ^ (row & 7)) << 3) + 2 * t4) >> 1] = 0u;
        }
    }
    fence_proxy_async();
    __syncthreads();
    // dQ[m0 … m0+63, wg·DQN … +DQN) = dZ (64 × BN) · K (BN × DQN)
    float dq[DQN / 2];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
      wgmma_ss_tt<DQN>(dq, gmma_desc(ds_addr + kk * 2048, BN * 128, 1024),
                       gmma_desc(kq_addr + kk * 2048, BN * 128, 1024), kk > 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs<DQN / 2>(dq);
    fence_regs<D / 2>(dk);
    fence_regs<D / 2>(dv);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int m = m0 + wq * 16 + g + 8 * r;
      if (m >= T || m < n0 || m > m_hi) continue;
      float* dst = p.dq_acc + static_cast<long>(m) * ldq + static_cast<long>(h) * D + wg * DQN;
#pragma unroll
      for (int jj = 0; jj < DQN / 8; ++jj)
        atomicAdd(reinterpret_cast<float2*>(dst + jj * 8 + 2 * t4),
                  make_float2(dq[jj * 4 + 2 * r] * p.scale, dq[jj * 4 + 2 * r + 1] * p.scale));
    }
  }
  cp_async_wait<0>();

  if (!wg_on) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int n = r_n[r];
    if (n >= T) continue;
    const long off = static_cast<long>(n) * ldk + static_cast<long>(hk) * D;
#pragma unroll
    for (int jj = 0; jj < D / 8; ++jj) {
      float k0 = dk[jj * 4 + 2 * r] * p.scale, k1 = dk[jj * 4 + 2 * r + 1] * p.scale;
      float v0 = dv[jj * 4 + 2 * r], v1 = dv[jj * 4 + 2 * r + 1];
      __nv_bfloat162* pk = reinterpret_cast<__nv_bfloat162*>(p.dk + off + jj * 8 + 2 * t4);
      __nv_bfloat162* pv = reinterpret_cast<__nv_bfloat162*>(p.dv + off + jj * 8 + 2 * t4);
      if (p.accumulate) {
        const float2 ok = __bfloat1622float2(*pk), ov = __bfloat1622float2(*pv);
        k0 += ok.x;
        k1 += ok.y;
        v0 += ov.x;
        v1 += ov.y;
      }
      *pk = __floats2bfloat162_rn(k0, k1);
      *pv = __floats2bfloat162_rn(v0, v1);
    }
  }
}

// dq (bf16) = dq_acc (fp32), or += with accumulate; n4 = elements / 4
__global__ void dq_convert(__nv_bfloat16* dq, const float* acc, long n4, bool accumulate) {
  for (long i = blockIdx.x * static_cast<long>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<long>(gridDim.x) * blockDim.x) {
    float4 a = reinterpret_cast<const float4*>(acc)[i];
    __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(dq) + 2 * i;
    if (accumulate) {
      const float2 o0 = __bfloat1622float2(d[0]), o1 = __bfloat1622float2(d[1]);
      a.x += o0.x;
      a.y += o0.y;
      a.z += o1.x;
      a.w += o1.y;
    }
    d[0] = __floats2bfloat162_rn(a.x, a.y);
    d[1] = __floats2bfloat162_rn(a.z, a.w);
  }
}

// Softmax backward's row statistics (FlashAttention-2 Alg. 2's preprocessing), one warp per
// (query m, head h), head-major [H][ld] for the kernel's 16-byte loads:
//   lse2[h][m] = lse_mh·log2e (p = 2^(z·log2e − lse2)),
//   delta[h][m] = Δ_mh = Σ_d dout_mhd·out_mhd;   the padding rows T ≤ m < ld are 0.
template <int D>
__global__ void softmax_row_stats(float* lse2, float* delta, const float* lse,
                                  const __nv_bfloat16* out, const __nv_bfloat16* dout, int T, int H,
                                  int ld) {
  const long row = blockIdx.x * static_cast<long>(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= static_cast<long>(ld) * H) return;
  const int m = static_cast<int>(row / H), h = static_cast<int>(row % H);
  float l = 0.f, dsum = 0.f;
  if (m < T) {
    const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(out + row * D);
    const __nv_bfloat162* d2 = reinterpret_cast<const __nv_bfloat162*>(dout + row * D);
#pragma unroll
    for (int j = 0; j < D / 64; ++j) {
      const float2 o = __bfloat1622float2(o2[lane + 32 * j]);
      const float2 d = __bfloat1622float2(d2[lane + 32 * j]);
      dsum = fmaf(o.x, d.x, fmaf(o.y, d.y, dsum));
    }
    dsum = warp_sum(dsum);
    l = lse[row] * SoftmaxScore::kZ;
  }
  if (lane == 0) {
    lse2[static_cast<long>(h) * ld + m] = l;
    delta[static_cast<long>(h) * ld + m] = dsum;
  }
}

// ---------------------------------------------------------------------------------------------
// host side

void check_args(const SwatArgs& a, const char* fn) {
  const std::string f = std::string("longctx::cuda::") + fn + ": ";
  if (a.D != 64 && a.D != 128)
    throw std::invalid_argument(f + "head dim D = " + std::to_string(a.D) + ", expected 64 or 128");
  if (a.T < 1) throw std::invalid_argument(f + "T = " + std::to_string(a.T) + ", expected ≥ 1");
  if (a.H < 1 || a.Hkv < 1 || a.H % a.Hkv != 0)
    throw std::invalid_argument(f + "H = " + std::to_string(a.H) + ", Hkv = " +
                                std::to_string(a.Hkv) + ": H must be a positive multiple of Hkv");
  if (a.window < 1)
    throw std::invalid_argument(f + "window = " + std::to_string(a.window) + ", expected ≥ 1");
  if (a.n_docs < 1 || !a.cu_seqlens)
    throw std::invalid_argument(f + "cu_seqlens must hold n_docs + 1 ≥ 2 offsets on the device");
  if (!a.q || !a.k || !a.v || !a.slopes)
    throw std::invalid_argument(f + "q, k, v and slopes must be device pointers");
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    throw std::runtime_error(f + "no CUDA device");
  if (major != 9 || minor != 0)
    throw std::runtime_error(f + "the kernels need a Hopper GPU (sm_90a), found compute capability " +
                             std::to_string(major) + "." + std::to_string(minor));
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("longctx::cuda::") + what + ": " + cudaGetErrorString(e));
}

Params make_params(const SwatArgs& a) {
  Params p{};
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.out = a.out;
  p.cu = a.cu_seqlens;
  p.slopes = a.slopes;
  p.T = a.T;
  p.H = a.H;
  p.Hkv = a.Hkv;
  p.n_docs = a.n_docs;
  // a window past T is the same as T (keeps m−n and loop bounds in int range)
  p.w = a.window > a.T ? a.T : a.window;
  p.bias = a.bias;
  p.scale = a.scale;
  return p;
}

// forward tiles per head dim: warpgroups (64 query rows each) per CTA, keys per tile
#ifndef SWAT_FWD64_NWG
#define SWAT_FWD64_NWG 2
#endif
#ifndef SWAT_FWD64_BN
#define SWAT_FWD64_BN 64
#endif
#ifndef SWAT_FWD128_NWG
#define SWAT_FWD128_NWG 2
#endif
#ifndef SWAT_FWD128_BN
#define SWAT_FWD128_BN 64
#endif

// deepest K/V ring (≤ 5 stages) that fits the 227 KB of shared memory a CTA may use
// schedule B (S_{j+1} issued before σ(S_j)): measured faster at D 128, slower at D 64
#ifndef SWAT_FWD64_OVERLAP
#define SWAT_FWD64_OVERLAP 0
#endif
#ifndef SWAT_FWD128_OVERLAP
#define SWAT_FWD128_OVERLAP 1
#endif
#ifndef SWAT_FWD64_MINB  // forward CTAs per SM at D 64 (2: registers capped at 128)
#define SWAT_FWD64_MINB 1
#endif

// deepest K/V ring (≤ 5 stages) that fits the shared memory of an SM shared by MINB CTAs
constexpr int fwd_stages(int D, int NWG, int BN, int MINB) {
  const int left = (MINB == 1 ? 232448 : 233472 / MINB - 1024) - 1024 - 64 * NWG * D * 2;
  const int st = left / (2 * BN * D * 2);
  return st > 5 ? 5 : st;
}

template <int D>
void launch_fwd(const Params& p, cudaStream_t s) {
  constexpr int NWG = D == 64 ? SWAT_FWD64_NWG : SWAT_FWD128_NWG;
  constexpr int BN = D == 64 ? SWAT_FWD64_BN : SWAT_FWD128_BN;
  constexpr int MINB = D == 64 ? SWAT_FWD64_MINB : 1;
  constexpr bool OVERLAP = D == 64 ? SWAT_FWD64_OVERLAP : SWAT_FWD128_OVERLAP;
  constexpr int ST = fwd_stages(D, NWG, BN, MINB);
  constexpr int STAGES = OVERLAP ? ST : (ST > 4 ? 4 : ST);
  using C = FwdV2<D, NWG, BN, STAGES>;
  cudaFuncSetAttribute(swat_fwd_v2<D, NWG, BN, STAGES, MINB, OVERLAP>,
                       cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem);
  dim3 grid((p.T + C::BM - 1) / C::BM, p.H);
  swat_fwd_v2<D, NWG, BN, STAGES, MINB, OVERLAP><<<grid, C::NT, C::kSmem, s>>>(p);
  check_launch("swat_forward");
}

template <int D, class Score>
void launch_bwd(const Params& p, cudaStream_t s) {
  using C = BwdV2<D, 2, Score>;
  cudaFuncSetAttribute(swat_bwd_v2<D, 2, Score>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       C::kSmem);
  dim3 grid((p.T + C::BN - 1) / C::BN, p.Hkv);
  swat_bwd_v2<D, 2, Score><<<grid, C::NT, C::kSmem, s>>>(p);
}

// Backward parameters (the arguments checked, dq_acc at the workspace's start).
Params bwd_params(const SwatArgs& a, const __nv_bfloat16* dout, __nv_bfloat16* dq,
                  __nv_bfloat16* dk, __nv_bfloat16* dv, bool accumulate, void* workspace,
                  const char* fn) {
  check_args(a, fn);
  if (!dout || !dq || !dk || !dv || !workspace)
    throw std::invalid_argument(std::string("longctx::cuda::") + fn +
                                ": dout, dq, dk, dv and workspace must be device pointers");
  Params p = make_params(a);
  p.dout = dout;
  p.dk = dk;
  p.dv = dv;
  p.dq_acc = static_cast<float*>(workspace);
  p.accumulate = accumulate;
  return p;
}

// dq_acc = 0, the backward kernel with score function Score, dq = dq_acc (bf16; += with accumulate)
template <class Score>
void run_bwd(const Params& p, int D, __nv_bfloat16* dq, cudaStream_t stream, const char* fn) {
  const size_t bytes = static_cast<size_t>(p.T) * p.H * D * sizeof(float);
  if (cudaMemsetAsync(p.dq_acc, 0, bytes, stream) != cudaSuccess) check_launch(fn);
  if (D == 64) launch_bwd<64, Score>(p, stream);
  else launch_bwd<128, Score>(p, stream);
  check_launch(fn);
  const long n4 = static_cast<long>(bytes / 16);
  const int blocks = static_cast<int>((n4 + 255) / 256 < 4096 ? (n4 + 255) / 256 : 4096);
  dq_convert<<<blocks, 256, 0, stream>>>(dq, p.dq_acc, n4, p.accumulate);
  check_launch((std::string(fn) + " (dq)").c_str());
}

// softmax_backward's row statistics: rows padded to whole query tiles (64)
int stats_ld(int T) { return (T + 63) / 64 * 64; }

}  // namespace

void swat_forward(const SwatArgs& a, cudaStream_t stream) {
  check_args(a, "swat_forward");
  if (!a.out) throw std::invalid_argument("longctx::cuda::swat_forward: out is null");
  const Params p = make_params(a);
  if (a.D == 64) launch_fwd<64>(p, stream);
  else launch_fwd<128>(p, stream);
}

size_t swat_backward_workspace_bytes(const SwatArgs& a) {
  return static_cast<size_t>(a.T) * a.H * a.D * sizeof(float);
}

void swat_backward(const SwatArgs& a, const __nv_bfloat16* dout, __nv_bfloat16* dq,
                   __nv_bfloat16* dk, __nv_bfloat16* dv, bool accumulate, void* workspace,
                   cudaStream_t stream) {
  const Params p = bwd_params(a, dout, dq, dk, dv, accumulate, workspace, "swat_backward");
  run_bwd<SigmoidScore>(p, a.D, dq, stream, "swat_backward");
}

size_t softmax_backward_workspace_bytes(const SwatArgs& a) {
  const size_t stats = 2 * static_cast<size_t>(a.H) * stats_ld(a.T);  // lse2 and Δ
  return swat_backward_workspace_bytes(a) + stats * sizeof(float);
}

void softmax_backward(const SwatArgs& a, const float* lse, const __nv_bfloat16* dout,
                      __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, bool accumulate,
                      void* workspace, cudaStream_t stream) {
  Params p = bwd_params(a, dout, dq, dk, dv, accumulate, workspace, "softmax_backward");
  if (!a.out || !lse)
    throw std::invalid_argument(
        "longctx::cuda::softmax_backward: out and lse must be device pointers");
  p.bias = 0.f;  // softmax has no sigmoid bias
  p.ld_stats = stats_ld(a.T);
  float* lse2 = p.dq_acc + static_cast<size_t>(a.T) * a.H * a.D;
  float* delta = lse2 + static_cast<size_t>(a.H) * p.ld_stats;
  p.lse2 = lse2;
  p.delta = delta;
  const long rows = static_cast<long>(p.ld_stats) * a.H;  // one warp each, 8 per block
  const int blocks = static_cast<int>((rows + 7) / 8);
  auto stats = a.D == 64 ? softmax_row_stats<64> : softmax_row_stats<128>;
  stats<<<blocks, 256, 0, stream>>>(lse2, delta, lse, a.out, dout, a.T, a.H, p.ld_stats);
  check_launch("softmax_backward (row statistics)");
  run_bwd<SoftmaxScore>(p, a.D, dq, stream, "softmax_backward");
}

}  // namespace longctx::cuda
