// CUDA kernels of the `cuda` backend (backend.cpp puts them in the op table), one concept per
// .cu file; plain C++ declarations so backend.cpp compiles with the host compiler. Every pointer
// is device memory; every launch goes to the default stream; a failed launch throws
// std::runtime_error with CUDA's message. Shapes and contracts as kernels/backend.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>

#include "kernels/backend.h"  // Grad, KvRing

namespace longctx::cuda {

// Throws std::runtime_error naming `what` if the last launch failed.
void check_launch(const char* what);

// ops.cu: vector ops and reductions
void add(float* y, const float* x, size_t n);
void scale(float* x, size_t n, float a);
void fill(float* x, size_t n, float value);  // x_i = value (no host sync, unlike a host copy)
// Σ x_i (squares = false) or Σ x_i² (true) in fp64, fixed order (deterministic).
// `partial` holds reduce_partials doubles of device scratch.
constexpr int reduce_partials = 1024;
double sum(const float* x, size_t n, bool squares, double* partial);
void to_bf16(__nv_bfloat16* dst, const float* src, size_t n);
void add_bf16(float* dst, const __nv_bfloat16* src, size_t n);  // dst += src
void to_f32(float* dst, const __nv_bfloat16* src, size_t n);    // dst = src

// ops.cu: the model's pointwise and row ops
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int T, int C);
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int T, int C);
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int T, int C,
                     float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int T, int C);
// sign +1: forward rotation, −1: backward
void rope(float* x, const int32_t* pos, int T, int nh, int D, float theta, double sign);
void swiglu_forward(float* h, const float* gate, const float* up, int T, int F);
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                     const float* up, int T, int F, Grad mode);
// bc1 = 1 − β1^step, bc2 = 1 − β2^step (computed by the caller, as ref.h does, in fp32)
void adamw(float* param, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, float bc1, float bc2);

// xent.cu: cross-entropy over vocabulary chunks. logits (rows, Vc) hold columns [v0, v0+Vc).
// Stats sweep: running max mx and Σexp se per row, and the target's logit where it falls here
// (mx = −inf, se = 0 before the first chunk).
void xent_stats(const float* logits, int rows, int Vc, int v0, const int32_t* targets, float* mx,
                float* se, float* target_logit);
// losses[t] = mx + log se − target_logit (0 where targets[t] < 0)
void xent_loss(float* losses, const float* mx, const float* se, const float* target_logit,
               const int32_t* targets, int rows);
// logits ← dloss (softmax − onehot), in place (0 rows where targets[t] < 0)
void xent_grad(float* logits, int rows, int Vc, int v0, const int32_t* targets, const float* mx,
               const float* se, float dloss);

// sample.cu: Backend::sample_rows (the plain draw of kernels/cpu/sample.h), one block per row.
void sample_rows(int32_t* tokens, const float* logits, const float* u, const float* temperature,
                 int rows, int V);

// window_attention.cu: fp32 sliding-window attention, any D ≤ 256. softmax = false: SWAT (σ,
// bias); true: softmax (lse saved). Forward FlashDecoding-style (keys split over lanes, CTAs and
// splits; fast for decode and chunked prefill after a KV cache); backward one warp per query and
// head (dk, dv by fp32 atomics).
// Decode over KV rings (backend.h decode_attn_forward; forward only): `rings` [T] gives each of
// T sequences' ring; query i is sequence i's one token, k and v hold the T new entries
// (T,Hkv,D), which the same launch stores in the rings (Tk and cu_seqlens unused).
struct WindowArgs {
  int T, Tk, H, Hkv, D, window;
  const int32_t* cu_seqlens;  // null: one document
  int n_docs;
  const float* slopes;  // null: no ALiBi
  float bias, scale;
  const KvRing* rings;  // null: keys k, v of the stream
};
// Floats of device scratch the forward needs (its key splits' partials; 0 when it needs none).
size_t window_attention_workspace_floats(const WindowArgs& a);
// `workspace` holds window_attention_workspace_floats(a) floats (contents need not be initialised);
// lse may be null when softmax is (decode: not needed).
void window_attention_forward(float* out, float* lse, const float* q, const float* k,
                              const float* v, const WindowArgs& a, bool softmax, float* workspace);
void window_attention_backward(float* dq, float* dk, float* dv, const float* dout,
                               const float* out, const float* lse, const float* q,
                               const float* k, const float* v, const WindowArgs& a, bool softmax);

}  // namespace longctx::cuda
