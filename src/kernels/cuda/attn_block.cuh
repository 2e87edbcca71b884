// Ring attention's block kernels on the GPU (attn_block.cu): the op table's attn_block_forward,
// attn_block_backward and attn_block_merge (backend.h) for the `cuda` backend; the math and the
// reference are kernels/cpu/attn_block.h. Plain C++ declarations (backend.cpp is host code).
// Every pointer is device memory (the rows' idx/doc_begin and the shape's slopes too); launches go
// to the default stream; a failed launch throws std::runtime_error. Head dim D ≤ 128.
#pragma once
#include "kernels/backend.h"  // AttnRows, AttnShape

namespace longctx::cuda {

constexpr int attn_block_max_d = 128;

void attn_block_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                        const AttnRows& qr, const AttnRows& kr, const AttnShape& s);
void attn_block_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                         const float* lse, const float* q, const float* k, const float* v,
                         const AttnRows& qr, const AttnRows& kr, const AttnShape& s);
void attn_block_merge(float* out, float* lse, const float* out_b, const float* lse_b, int rows,
                      int H, int D);

}  // namespace longctx::cuda
