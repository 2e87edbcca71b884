// Fused SWAT attention (DESIGN.md §2.1, SWAT paper Eq. 3–4) on NVIDIA Hopper (sm_90a), and the
// softmax variant's backward on the same kernel (softmax_backward).
//
//   z_mn = q_m·k_n·scale + s_h·(m−n) + b ,  p_mn = σ(z_mn) ,  o_m = Σ_{n∈W(m)} p_mn v_n
//   W(m) = {n : m−w < n ≤ m, n in m's document}   (no normalisation, no row statistics)
//
// Tensors are one packed token stream (flash-attn varlen layout), bf16 storage, fp32 math:
//   q, out, dout, dq  (T, H,   D)      k, v, dk, dv  (T, Hkv, D)
//   cu_seqlens int32 [n_docs+1] on the device (0 = cu[0] < … < cu[n_docs] = T)
//   slopes float [H] on the device (ALiBi slope per query head; adds s_h·(m−n))
// GQA: query head h reads KV head h / (H/Hkv); dk, dv sum over the query heads of the group.
// D ∈ {64, 128}; any window ≥ 1 (window ≥ T is plain causal attention within each document).
// q and k arrive already RoPE'd. Only tiles intersecting the band are visited; nothing of size
// T×T or T×w is materialised.
//
// Host API: plain C++ (cuda_bf16.h / cuda_runtime.h types only). Errors in the arguments throw
// std::invalid_argument; a failed launch throws std::runtime_error with CUDA's message.
#pragma once
#include <cstddef>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace longctx::cuda {

struct SwatArgs {
  const __nv_bfloat16 *q, *k, *v;  // q (T,H,D), k and v (T,Hkv,D)
  __nv_bfloat16* out;              // (T,H,D), written by swat_forward (=)
  int T, H, Hkv, D, window;
  const int* cu_seqlens;           // device, [n_docs+1]
  int n_docs;
  const float* slopes;             // device, [H]
  float bias;                      // sigmoid bias b
  float scale;                     // usually 1/√D
};

// out = SWAT(q, k, v).
void swat_forward(const SwatArgs& a, cudaStream_t stream);

// Bytes of device scratch swat_backward needs (an fp32 dq accumulator, T·H·D·4).
size_t swat_backward_workspace_bytes(const SwatArgs& a);

// Gradients of swat_forward, bf16:  dq (T,H,D), dk and dv (T,Hkv,D).
// accumulate = false: dq, dk, dv are overwritten (=); true: the gradients are added to what the
// buffers hold (+=, the backend's convention), the sum rounded to bf16 once.
// `workspace` must hold swat_backward_workspace_bytes(a) bytes (device memory, 16-byte aligned);
// its contents need not be initialised. `a.out` is not read.
void swat_backward(const SwatArgs& a, const __nv_bfloat16* dout, __nv_bfloat16* dq,
                   __nv_bfloat16* dk, __nv_bfloat16* dv, bool accumulate, void* workspace,
                   cudaStream_t stream);

// Softmax sliding-window attention (DESIGN.md §2.1, `attention: softmax`), backward only, by the
// same kernel with the score function p_mn = exp(z_mn − lse_m) over W(m), z without the sigmoid
// bias (a.bias is not read):  dz_mn = p_mn (dp_mn − Δ_m),  Δ_m = Σ_d dout_md·out_md.
// a.out is the forward's output (bf16, read for Δ); lse (T,H) fp32 on the device, the forward's
// natural-log row log-sum-exp of z. The rest as swat_backward, with a larger workspace:
// softmax_backward_workspace_bytes(a) bytes (the dq accumulator, then Δ and lse·log2e per row).
size_t softmax_backward_workspace_bytes(const SwatArgs& a);
void softmax_backward(const SwatArgs& a, const float* lse, const __nv_bfloat16* dout,
                      __nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv, bool accumulate,
                      void* workspace, cudaStream_t stream);

}  // namespace longctx::cuda
