// Warp-wide reductions (butterfly over the 32 lanes; every lane gets the result), shared by the
// simple attention kernels (window_attention.cu, attn_block.cu).
#pragma once

namespace longctx::cuda {

__device__ inline float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ inline float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

}  // namespace longctx::cuda
