// Linear layer without bias on OpenBLAS sgemm (row-major):
//   out (T,OC) = inp (T,C) · weight (OC,C)ᵀ
//   dinp (T,C) += dout (T,OC) · weight (OC,C) (= with Grad::write: sgemm's β = 0);
//   dweight (OC,C) += dout (T,OC)ᵀ · inp (T,C)
// One threading runtime: with the OpenMP build of OpenBLAS (what CMakeLists.txt asks for) BLAS
// threads come from our OpenMP pool; with the pthreads build, OpenBLAS runs single-threaded and
// `sgemm` splits C over our OpenMP threads. (OpenBLAS pthreads next to OpenMP workers, which
// spin-wait after every parallel region, fight over the cores: measured > 50 % of lm_head_xent's
// time spinning in libgomp on 2 cores.)
#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "kernels/cpu/cpu.h"

namespace longctx::cpu {

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  // OpenBLAS on OpenMP shares our thread pool: let it thread itself. The pthreads build runs
  // single-threaded and we split C over our OpenMP threads instead.
  static const bool blas_openmp = openblas_get_parallel() == 2;
  static const bool blas_single = blas_openmp || (openblas_set_num_threads(1), true);
  (void)blas_single;
  if (M == 0 || N == 0) return;
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  int nt = omp_in_parallel() || blas_openmp ? 1 : omp_get_max_threads();
  if (2.0 * M * N * K < 4e6) nt = 1;  // too small to share
  if (nt == 1) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const bool split_m = M >= N;  // split the longer side of C into one slab per thread
#pragma omp parallel num_threads(nt)
  {
    const int id = omp_get_thread_num(), n = omp_get_num_threads(), L = split_m ? M : N;
    // slab boundaries on multiples of 16 (whole vector registers for the BLAS kernel)
    const int b0 = std::min(L, (int)((long)L * id / n + 15) / 16 * 16);
    const int b1 = id == n - 1 ? L : std::min(L, (int)((long)L * (id + 1) / n + 15) / 16 * 16);
    if (b1 > b0) {
      if (split_m)
        cblas_sgemm(CblasRowMajor, ta, tb, b1 - b0, N, K, alpha,
                    trans_a ? A + b0 : A + (size_t)b0 * lda, lda, B, ldb, beta,
                    C + (size_t)b0 * ldc, ldc);
      else
        cblas_sgemm(CblasRowMajor, ta, tb, M, b1 - b0, K, alpha, A, lda,
                    trans_b ? B + (size_t)b0 * ldb : B + b0, ldb, beta, C + b0, ldc);
    }
  }
}

void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC) {
  sgemm(false, true, T, OC, C, 1.0f, inp, C, weight, C, 0.0f, out, OC);
}

void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, int T, int C, int OC, Grad dinp_mode) {
  const float beta = dinp_mode == Grad::write ? 0.0f : 1.0f;
  if (dinp) sgemm(false, false, T, C, OC, 1.0f, dout, OC, weight, C, beta, dinp, C);
  if (dweight) sgemm(true, false, OC, C, T, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
}

}  // namespace longctx::cpu
