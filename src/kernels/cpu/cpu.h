// Fast CPU ops (OpenBLAS sgemm + OpenMP + blocked attention), one concept per file; the
// signatures are backend.h's. backend.cpp puts them in the `cpu` table.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace longctx::cpu {

// matmul.cpp
// Row-major C (M,N) = alpha·op(A)·op(B) + beta·C on single-threaded OpenBLAS, split over OpenMP
// threads (op = transpose where trans_*). The only BLAS entry point of the fast ops.
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);
void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC);
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, int T, int C, int OC, Grad dinp_mode);
// ops.cpp
void embedding_forward(float* out, const int32_t* tokens, const float* wte, int T, int C);
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int T, int C);
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int T, int C,
                     float eps);
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int T, int C);
void rope_forward(float* x, const int32_t* pos, int T, int nh, int D, float theta);
void rope_backward(float* dx, const int32_t* pos, int T, int nh, int D, float theta);
void swiglu_forward(float* h, const float* gate, const float* up, int T, int F);
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate,
                     const float* up, int T, int F, Grad mode);
void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step);
// xent.cpp
void lm_head_xent(float* losses, float* dx, float* dweight, const float* x, const float* weight,
                  const int32_t* targets, int T, int C, int V, float dloss);
// attention.cpp
void swat_forward(float* out, const float* q, const float* k, const float* v, const AttnShape& s);
void swat_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                   const float* k, const float* v, const AttnShape& s);
void softmax_attn_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                          const AttnShape& s);
void softmax_attn_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v,
                           const AttnShape& s);

}  // namespace longctx::cpu
