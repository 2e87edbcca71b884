// Linear layer without bias on OpenBLAS sgemm (row-major):
//   out (T,OC) = inp (T,C) · weight (OC,C)ᵀ
//   dinp (T,C) += dout (T,OC) · weight (OC,C);   dweight (OC,C) += dout (T,OC)ᵀ · inp (T,C)
#include <cblas.h>

#include "kernels/cpu/cpu.h"

namespace longctx::cpu {

void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC) {
  if (T == 0 || OC == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OC, C, 1.0f, inp, C, weight, C, 0.0f,
              out, OC);
}

void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, int T, int C, int OC) {
  if (T == 0 || C == 0 || OC == 0) return;
  if (dinp)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, OC, 1.0f, dout, OC, weight, C,
                1.0f, dinp, C);
  if (dweight)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, T, 1.0f, dout, OC, inp, C, 1.0f,
                dweight, C);
}

}  // namespace longctx::cpu
