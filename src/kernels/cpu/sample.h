// The plain draw of a token from one row of logits (no top-k/top-p cut): the one definition that
// infer::Sampler and the host backends' Backend::sample_rows share (the cuda kernel,
// kernels/cuda/sample.cu, computes the same in fp64 with another summation order).
//   temperature T = 0: the first index of the largest logit (greedy);
//   T > 0: w_i = exp((l_i − max_j l_j)/T) (the softmax at temperature T, unnormalised, fp64),
//          token = the first i with Σ_{j≤i} w_j > u·Σ_j w_j (inverse CDF in id order), u ∈ [0, 1).
#pragma once
#include <cstdint>

namespace longctx {

// w[i] = exp((logits[i] − max)/T) for i < V, T > 0; returns Σ w summed in id order.
double softmax_weights(double* w, const float* logits, int V, float temperature);
// The draw above for one row; u is unused at T = 0.
int32_t sample_draw(const float* logits, int V, float temperature, float u);

// Backend::sample_rows of the host backends: sample_draw per row (cpu: rows over OpenMP threads).
namespace ref {
void sample_rows(int32_t* tokens, const float* logits, const float* u, const float* temperature,
                 int rows, int V);
}
namespace cpu {
void sample_rows(int32_t* tokens, const float* logits, const float* u, const float* temperature,
                 int rows, int V);
}

}  // namespace longctx
