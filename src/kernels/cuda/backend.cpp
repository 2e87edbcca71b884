// The `cuda` backend table (backend.h): device memory, cuBLASLt GEMMs, the kernels of ops.h and
// the wgmma SWAT attention (swat_attention.cuh). fp32 storage as every backend; GEMMs run on
// bf16 tensor cores with fp32 accumulation (the inputs converted to bf16 scratch copies first:
// 20 % more tokens/s on the 374M model than CUBLAS_COMPUTE_32F_FAST_16BF on the fp32 matrices,
// bench/results/cuda_train_2026-11-25_h100.md); SWAT
// attention (and the softmax backward) converts q, k, v, dout to bf16 scratch for the wgmma
// kernel (D 64/128) and falls back to the fp32 window kernel (window_attention.cu) for other
// head dims and for queries after a KV cache; the softmax forward is the window kernel's.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/cuda/attn_block.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/swat_attention.cuh"

namespace longctx {

namespace {

void ck(cudaError_t e, const char* what) {
  LCX_CHECK(e == cudaSuccess, "cuda backend: {}: {}", what, cudaGetErrorString(e));
}
void ck(cublasStatus_t s, const char* what) {
  LCX_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuda backend: {}: cuBLASLt status {}", what, int(s));
}

// ---- memory (with a high-water mark for `bench train`)
struct Accounting {
  std::mutex mu;
  std::unordered_map<void*, size_t> sizes;
  size_t now = 0, peak = 0;
};
Accounting& acct() {
  static Accounting a;
  return a;
}

void* dev_alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  LCX_CHECK(e == cudaSuccess, "cuda backend: out of device memory allocating {:.1f} MiB ({})",
            double(bytes) / 1048576.0, cudaGetErrorString(e));
  ck(cudaMemset(p, 0, bytes), "cudaMemset");
  Accounting& a = acct();
  std::lock_guard<std::mutex> lock(a.mu);
  a.sizes[p] = bytes;
  a.now += bytes;
  a.peak = std::max(a.peak, a.now);
  return p;
}
void dev_release(void* p) {
  {
    Accounting& a = acct();
    std::lock_guard<std::mutex> lock(a.mu);
    auto it = a.sizes.find(p);
    if (it != a.sizes.end()) a.now -= it->second, a.sizes.erase(it);
  }
  cudaFree(p);  // no throw from destructors
}
size_t dev_peak_bytes() { return acct().peak; }
void dev_copy(void* dst, const void* src, size_t bytes, Copy dir) {
  const cudaMemcpyKind k = dir == Copy::to_device ? cudaMemcpyHostToDevice
                           : dir == Copy::to_host ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
  ck(cudaMemcpy(dst, src, bytes, k), "cudaMemcpy");
}
// ---- offloading: pinned host memory, two non-blocking copy streams (they do not serialise with
// the legacy default stream the ops run on), events
void* pinned_alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault);
  LCX_CHECK(e == cudaSuccess, "cuda backend: out of pinned host memory allocating {:.1f} MiB ({})",
            double(bytes) / 1048576.0, cudaGetErrorString(e));
  return p;
}
void pinned_release(void* p) { cudaFreeHost(p); }
cudaStream_t new_copy_stream() {
  cudaStream_t c;
  ck(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking), "cudaStreamCreate");
  return c;
}
cudaStream_t stream(Stream s) {
  static const cudaStream_t d2h = new_copy_stream(), h2d = new_copy_stream();
  return s == Stream::compute ? cudaStream_t(0) : s == Stream::d2h ? d2h : h2d;
}
void copy_async(void* dst, const void* src, size_t bytes, Copy dir, Stream s) {
  const cudaMemcpyKind k = dir == Copy::to_device ? cudaMemcpyHostToDevice
                           : dir == Copy::to_host ? cudaMemcpyDeviceToHost
                                                  : cudaMemcpyDeviceToDevice;
  if (bytes) ck(cudaMemcpyAsync(dst, src, bytes, k, stream(s)), "cudaMemcpyAsync");
}
void* event_create() {
  cudaEvent_t e;
  ck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  return e;
}
void event_release(void* ev) { cudaEventDestroy(static_cast<cudaEvent_t>(ev)); }
void event_record(void* ev, Stream s) {
  ck(cudaEventRecord(static_cast<cudaEvent_t>(ev), stream(s)), "cudaEventRecord");
}
void stream_wait(Stream s, void* ev) {
  ck(cudaStreamWaitEvent(stream(s), static_cast<cudaEvent_t>(ev), 0), "cudaStreamWaitEvent");
}
void dev_zero(float* x, size_t n) { ck(cudaMemsetAsync(x, 0, n * sizeof(float)), "cudaMemsetAsync"); }
void dev_sync() { ck(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

// Device scratch that grows on demand (the ops run one at a time on the default stream).
class Scratch {
 public:
  template <class T>
  T* get(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes > size_) {
      if (p_) dev_sync(), dev_release(p_);
      p_ = dev_alloc(bytes);
      size_ = bytes;
    }
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
  size_t size_ = 0;
};

// A cuBLASLt plan: the descriptors and the heuristic's algorithm of one GEMM shape (the key),
// made on the shape's first call and kept until exit (bounded by the model's distinct shapes).
struct GemmKey {
  bool ta, tb;
  int m, n, k, lda, ldb, ldc;
  cudaDataType_t a, b;
  bool operator==(const GemmKey&) const = default;
};
struct GemmKeyHash {
  size_t operator()(const GemmKey& g) const {
    const int fields[] = {g.ta, g.tb, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, int(g.a), int(g.b)};
    size_t h = 0;  // FNV-1a over the fields
    for (int v : fields) h = (h ^ unsigned(v)) * 1099511628211ull;
    return h;
  }
};
struct GemmPlan {
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatmulAlgo_t algo;
};

struct Context {
  cublasLtHandle_t lt = nullptr;
  static constexpr size_t workspace_bytes = 32u << 20;
  void* workspace = nullptr;
  std::unordered_map<GemmKey, GemmPlan, GemmKeyHash> plans;  // the ops run one at a time
  Scratch partial, q16, k16, v16, o16, do16, dq16, dk16, dv16, swat_ws, cu, zeros, logits, stats,
      a16, b16, x16, window_ws;
  Context() {
    ck(cublasLtCreate(&lt), "cublasLtCreate");
    workspace = dev_alloc(workspace_bytes);
  }
};
Context& ctx() {
  static Context c;
  return c;
}

double dev_sum(const float* x, size_t n) {
  return cuda::sum(x, n, false, ctx().partial.get<double>(cuda::reduce_partials));
}
double dev_sum_squares(const float* x, size_t n) {
  return cuda::sum(x, n, true, ctx().partial.get<double>(cuda::reduce_partials));
}

// GEMM inputs: bf16 copies made by a conversion kernel first (default), or cuBLASLt's FAST_16BF
// on the fp32 matrices (LONGCTX_CUDA_GEMM=fast16bf, kept to re-measure the choice); fp32
// accumulation and output either way.
bool gemm_bf16_copies() {
  static const bool b = [] {
    const char* e = std::getenv("LONGCTX_CUDA_GEMM");
    return !(e && std::string(e) == "fast16bf");
  }();
  return b;
}

// A GEMM operand: the fp32 matrix, or its bf16 copy in `scratch` when gemm_bf16_copies().
struct Operand {
  const void* p;
  cudaDataType_t type;
};
Operand operand(const float* x, size_t n, Scratch& scratch) {
  if (!gemm_bf16_copies()) return {x, CUDA_R_32F};
  __nv_bfloat16* copy = scratch.get<__nv_bfloat16>(n);
  cuda::to_bf16(copy, x, n);
  return {copy, CUDA_R_16BF};
}

// cuBLASLt's descriptors and heuristic algorithm for `key` (bf16 inputs: fp32 compute; fp32
// inputs: FAST_16BF), fp32 C.
GemmPlan gemm_plan(const GemmKey& key) {
  GemmPlan p;
  ck(cublasLtMatmulDescCreate(&p.op, key.a == CUDA_R_16BF ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_16BF,
                              CUDA_R_32F), "MatmulDescCreate");
  const cublasOperation_t opa = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa);
  cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb);
  const int m = key.m, n = key.n, k = key.k;
  ck(cublasLtMatrixLayoutCreate(&p.la, key.a, key.ta ? k : m, key.ta ? m : k, key.lda), "layout A");
  ck(cublasLtMatrixLayoutCreate(&p.lb, key.b, key.tb ? n : k, key.tb ? k : n, key.ldb), "layout B");
  ck(cublasLtMatrixLayoutCreate(&p.lc, CUDA_R_32F, m, n, key.ldc), "layout C");
  cublasLtMatmulPreference_t pref;
  ck(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &Context::workspace_bytes, sizeof(size_t));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  ck(cublasLtMatmulAlgoGetHeuristic(ctx().lt, p.op, p.la, p.lb, p.lc, p.lc, pref, 1, &heur, &found),
     "AlgoGetHeuristic");
  cublasLtMatmulPreferenceDestroy(pref);
  LCX_CHECK(found > 0, "cuda backend: cuBLASLt has no algorithm for a {}x{}x{} GEMM", m, n, k);
  p.algo = heur.algo;
  return p;
}

// ---- GEMM: column-major C (m,n) = op(A)·op(B) + beta·C through cuBLASLt, bf16 tensor cores.
void gemm(bool ta, bool tb, int m, int n, int k, Operand A, int lda, Operand B, int ldb,
          float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // empty sum: C = beta·C
    if (beta == 0.0f) for (int j = 0; j < n; j++) dev_zero(C + size_t(j) * ldc, size_t(m));
    return;
  }
  Context& c = ctx();
  const GemmKey key{ta, tb, m, n, k, lda, ldb, ldc, A.type, B.type};
  auto it = c.plans.find(key);
  if (it == c.plans.end()) it = c.plans.emplace(key, gemm_plan(key)).first;
  const GemmPlan& p = it->second;
  const float alpha = 1.0f;
  ck(cublasLtMatmul(c.lt, p.op, &alpha, A.p, p.la, B.p, p.lb, &beta, C, p.lc, C, p.lc, &p.algo,
                    c.workspace, Context::workspace_bytes, 0),
     "cublasLtMatmul");
}

// Row-major X (r,c) is column-major Xᵀ (c,r): the three GEMMs of backend.h in that view, on
// operands (inp (T,C), weight (OC,C), dout (T,OC)) that the caller made.
// outᵀ (OC,T) = Wᵀ-stored (C,OC)ᵀ · inpᵀ (C,T)
void gemm_forward(float* out, Operand inp, Operand weight, int T, int C, int OC) {
  gemm(true, false, OC, T, C, weight, C, inp, C, 0.0f, out, OC);
}
// dinpᵀ (C,T) += W-as-(C,OC) · doutᵀ (OC,T); Grad::write: β = 0 (dinp is not read)
void gemm_backward_inp(float* dinp, Operand dout, Operand weight, int T, int C, int OC,
                       Grad mode) {
  gemm(false, false, C, T, OC, weight, C, dout, OC, mode == Grad::write ? 0.0f : 1.0f, dinp, C);
}
// dWᵀ (C,OC) += inpᵀ (C,T) · dout (T,OC)
void gemm_backward_weight(float* dweight, Operand dout, Operand inp, int T, int C, int OC) {
  gemm(false, true, C, OC, T, inp, C, dout, OC, 1.0f, dweight, C);
}

void matmul_forward(float* out, const float* inp, const float* weight, int T, int C, int OC) {
  Context& c = ctx();
  gemm_forward(out, operand(inp, size_t(T) * C, c.b16), operand(weight, size_t(OC) * C, c.a16), T,
               C, OC);
}
// dout converted once for both GEMMs
void matmul_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                     const float* weight, int T, int C, int OC, Grad dinp_mode) {
  Context& c = ctx();
  const Operand d = operand(dout, size_t(T) * OC, c.b16);
  if (dinp)
    gemm_backward_inp(dinp, d, operand(weight, size_t(OC) * C, c.a16), T, C, OC, dinp_mode);
  if (dweight) gemm_backward_weight(dweight, d, operand(inp, size_t(T) * C, c.a16), T, C, OC);
}

// Projections of one input: inp converted once (x16) for all G GEMMs; in backward each dout
// once for its two GEMMs, and dinp's sum accumulated by the GEMMs' β (the first one's from
// dinp_mode).
void matmul_forward_group(float* const* out, const float* inp, const float* const* weight, int T,
                          int C, const int* OC, int G) {
  LCX_CHECK(G >= 1, "matmul_forward_group: G = {} projections, need >= 1", G);
  Context& c = ctx();
  const Operand x = operand(inp, size_t(T) * C, c.x16);
  for (int g = 0; g < G; g++)
    gemm_forward(out[g], x, operand(weight[g], size_t(OC[g]) * C, c.a16), T, C, OC[g]);
}
void matmul_backward_group(float* dinp, float* const* dweight, const float* const* dout,
                           const float* inp, const float* const* weight, int T, int C,
                           const int* OC, int G, Grad dinp_mode) {
  LCX_CHECK(G >= 1, "matmul_backward_group: G = {} projections, need >= 1", G);
  Context& c = ctx();
  Operand x{};
  for (int g = 0; g < G; g++) {
    const Operand d = operand(dout[g], size_t(T) * OC[g], c.b16);
    if (dinp)
      gemm_backward_inp(dinp, d, operand(weight[g], size_t(OC[g]) * C, c.a16), T, C, OC[g],
                        g == 0 ? dinp_mode : Grad::add);
    if (!dweight[g]) continue;
    if (!x.p) x = operand(inp, size_t(T) * C, c.x16);
    gemm_backward_weight(dweight[g], d, x, T, C, OC[g]);
  }
}

void embedding_forward(float* out, const int32_t* tokens, const float* wte, int T, int C) {
  cuda::embedding_forward(out, tokens, wte, T, C);
}
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int T, int C) {
  cuda::embedding_backward(dwte, dout, tokens, T, C);
}
void rope_forward(float* x, const int32_t* pos, int T, int nh, int D, float theta) {
  cuda::rope(x, pos, T, nh, D, theta, 1.0);
}
void rope_backward(float* dx, const int32_t* pos, int T, int nh, int D, float theta) {
  cuda::rope(dx, pos, T, nh, D, theta, -1.0);
}

// ---- lm_head + cross-entropy: vocabulary chunks of Vc columns for blocks of Tb tokens (the
// logits never exceed Tb·Vc floats): a stats sweep (GEMM + running log-sum-exp), the losses,
// then a gradient sweep that recomputes each chunk's logits (kernels/cpu/xent.cpp's plan).
// GEMM operands: the block's x made once per block, each weight chunk once per sweep (it serves
// the logits GEMM and dx), each chunk's logit gradient once (dx and dweight).
void lm_head_xent(float* losses, float* dx, float* dweight, const float* x, const float* weight,
                  const int32_t* targets, int T, int C, int V, float dloss) {
  constexpr int Vc = 4096, Tb_max = 8192;
  Context& c = ctx();
  const int Tb = std::min(T, Tb_max);
  float* logits = c.logits.get<float>(size_t(Tb) * Vc);
  float* st = c.stats.get<float>(3 * size_t(Tb));
  float *mx = st, *se = st + Tb, *tl = st + 2 * Tb;
  for (int t0 = 0; t0 < T; t0 += Tb) {
    const int rows = std::min(Tb, T - t0);
    const Operand xb = operand(x + size_t(t0) * C, size_t(rows) * C, c.x16);
    const int32_t* yb = targets + t0;
    cuda::fill(mx, size_t(rows), -INFINITY);
    dev_zero(se, size_t(rows));
    dev_zero(tl, size_t(rows));
    for (int v0 = 0; v0 < V; v0 += Vc) {
      const int vc = std::min(Vc, V - v0);
      gemm_forward(logits, xb, operand(weight + size_t(v0) * C, size_t(vc) * C, c.a16), rows, C, vc);
      cuda::xent_stats(logits, rows, vc, v0, yb, mx, se, tl);
    }
    cuda::xent_loss(losses + t0, mx, se, tl, yb, rows);
    if (!dx && !dweight) continue;
    for (int v0 = 0; v0 < V; v0 += Vc) {
      const int vc = std::min(Vc, V - v0);
      const Operand w = operand(weight + size_t(v0) * C, size_t(vc) * C, c.a16);
      gemm_forward(logits, xb, w, rows, C, vc);
      cuda::xent_grad(logits, rows, vc, v0, yb, mx, se, dloss);
      const Operand d = operand(logits, size_t(rows) * vc, c.b16);
      if (dx) gemm_backward_inp(dx + size_t(t0) * C, d, w, rows, C, vc, Grad::add);
      if (dweight) gemm_backward_weight(dweight + size_t(v0) * C, d, xb, rows, C, vc);
    }
  }
}

void adamw_update(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step) {
  LCX_CHECK(step >= 1, "adamw_update: step must be >= 1, got {}", step);
  const float bc1 = 1.0f - std::pow(beta1, float(step)), bc2 = 1.0f - std::pow(beta2, float(step));
  cuda::adamw(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1, bc2);
}

void sample_rows(int32_t* tokens, const float* logits, const float* u, const float* temperature,
                 int rows, int V) {
  LCX_CHECK(rows >= 0 && V >= 1, "sample_rows: bad shape rows={} V={}", rows, V);
  cuda::sample_rows(tokens, logits, u, temperature, rows, V);
}

// ---- attention
cuda::WindowArgs window_args(const AttnShape& s, const char* op) {
  LCX_CHECK(s.T >= 0 && s.H >= 1 && s.Hkv >= 1 && s.D >= 1 && s.H % s.Hkv == 0,
            "{}: bad shape T={} H={} Hkv={} D={} (H must be a multiple of Hkv)", op, s.T, s.H,
            s.Hkv, s.D);
  LCX_CHECK(s.window >= 1, "{}: window must be >= 1, got {}", op, s.window);
  LCX_CHECK(s.Tk == 0 || s.Tk >= s.T, "{}: Tk={} keys is fewer than T={} queries", op, s.Tk, s.T);
  LCX_CHECK(s.Tk <= s.T || !s.cu_seqlens, "{}: Tk > T (queries after a KV cache) takes one "
            "document, but cu_seqlens was given", op);
  LCX_CHECK(!s.cu_seqlens || s.n_docs >= 1, "{}: cu_seqlens given with n_docs={}", op, s.n_docs);
  return {s.T, std::max(s.Tk, s.T), s.H, s.Hkv, s.D, s.window, s.cu_seqlens, s.n_docs, s.slopes,
          s.bias, s.scale, nullptr};
}

// The wgmma kernel's arguments, q/k/v converted to bf16 scratch (device cu_seqlens and slopes
// supplied when the shape has none).
bool use_wgmma(const AttnShape& s) { return (s.D == 64 || s.D == 128) && s.Tk <= s.T && s.T > 0; }
cuda::SwatArgs swat_args(const AttnShape& s, const float* q, const float* k, const float* v) {
  Context& c = ctx();
  const size_t nq = size_t(s.T) * s.H * s.D, nk = size_t(s.T) * s.Hkv * s.D;
  __nv_bfloat16 *q16 = c.q16.get<__nv_bfloat16>(nq), *k16 = c.k16.get<__nv_bfloat16>(nk),
                *v16 = c.v16.get<__nv_bfloat16>(nk);
  cuda::to_bf16(q16, q, nq);
  cuda::to_bf16(k16, k, nk);
  cuda::to_bf16(v16, v, nk);
  const int* cu = s.cu_seqlens;
  int n_docs = s.n_docs;
  if (!cu) {
    int* one = c.cu.get<int>(2);
    const int host[2] = {0, s.T};
    ck(cudaMemcpy(one, host, sizeof host, cudaMemcpyHostToDevice), "cu_seqlens");
    cu = one, n_docs = 1;
  }
  const float* slopes = s.slopes;
  if (!slopes) {
    float* z = c.zeros.get<float>(size_t(s.H));
    dev_zero(z, size_t(s.H));
    slopes = z;
  }
  return {q16, k16, v16, c.o16.get<__nv_bfloat16>(nq), s.T, s.H, s.Hkv, s.D, s.window, cu, n_docs,
          slopes, s.bias, s.scale};
}

// The window kernel's forward with its split partials in scratch.
void window_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                    const cuda::WindowArgs& w, bool softmax) {
  float* ws = ctx().window_ws.get<float>(cuda::window_attention_workspace_floats(w));
  cuda::window_attention_forward(out, lse, q, k, v, w, softmax, ws);
}

// Kernel errors of swat_attention.cu (std exceptions) as longctx::Error.
template <class Fn>
void rethrow(const char* op, Fn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    fail("{}: {}", op, e.what());
  }
}

void swat_forward(float* out, const float* q, const float* k, const float* v, const AttnShape& s) {
  const cuda::WindowArgs w = window_args(s, "swat_forward");
  if (!use_wgmma(s)) {
    rethrow("swat_forward", [&] { window_forward(out, nullptr, q, k, v, w, false); });
    return;
  }
  rethrow("swat_forward", [&] {
    const cuda::SwatArgs a = swat_args(s, q, k, v);
    cuda::swat_forward(a, nullptr);
    cuda::to_f32(out, a.out, size_t(s.T) * s.H * s.D);
  });
}

// The wgmma backward (use_wgmma(s)) on bf16 scratch copies, the bf16 gradients added into the
// fp32 ones: SWAT (lse null), or softmax (out and lse, the forward's, give its row statistics).
void wgmma_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                    const float* lse, const float* q, const float* k, const float* v,
                    const AttnShape& s) {
  Context& c = ctx();
  const cuda::SwatArgs a = swat_args(s, q, k, v);
  const size_t nq = size_t(s.T) * s.H * s.D, nk = size_t(s.T) * s.Hkv * s.D;
  __nv_bfloat16 *dq16 = c.dq16.get<__nv_bfloat16>(nq), *dk16 = c.dk16.get<__nv_bfloat16>(nk),
                *dv16 = c.dv16.get<__nv_bfloat16>(nk);
  if (lse) {
    __nv_bfloat16* do16 = c.do16.get<__nv_bfloat16>(nq);
    cuda::to_bf16(a.out, out, nq);
    cuda::to_bf16(do16, dout, nq);
    void* ws = c.swat_ws.get<char>(cuda::softmax_backward_workspace_bytes(a));
    cuda::softmax_backward(a, lse, do16, dq16, dk16, dv16, false, ws, nullptr);
  } else {
    __nv_bfloat16* do16 = a.out;  // out is not read by the SWAT backward: reuse it for dout
    cuda::to_bf16(do16, dout, nq);
    void* ws = c.swat_ws.get<char>(cuda::swat_backward_workspace_bytes(a));
    cuda::swat_backward(a, do16, dq16, dk16, dv16, false, ws, nullptr);
  }
  if (dq) cuda::add_bf16(dq, dq16, nq);
  if (dk) cuda::add_bf16(dk, dk16, nk);
  if (dv) cuda::add_bf16(dv, dv16, nk);
}

void swat_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                   const float* k, const float* v, const AttnShape& s) {
  const cuda::WindowArgs w = window_args(s, "swat_backward");
  LCX_CHECK(s.Tk <= s.T, "swat_backward: Tk > T (queries after a KV cache) is forward only");
  rethrow("swat_backward", [&] {
    if (use_wgmma(s)) wgmma_backward(dq, dk, dv, dout, nullptr, nullptr, q, k, v, s);
    else cuda::window_attention_backward(dq, dk, dv, dout, nullptr, nullptr, q, k, v, w, false);
  });
}

void softmax_attn_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                          const AttnShape& s) {
  const cuda::WindowArgs w = window_args(s, "softmax_attn_forward");
  rethrow("softmax_attn_forward", [&] { window_forward(out, lse, q, k, v, w, true); });
}
void softmax_attn_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v,
                           const AttnShape& s) {
  const cuda::WindowArgs w = window_args(s, "softmax_attn_backward");
  LCX_CHECK(s.Tk <= s.T, "softmax_attn_backward: Tk > T (queries after a KV cache) is forward only");
  rethrow("softmax_attn_backward", [&] {
    if (use_wgmma(s)) wgmma_backward(dq, dk, dv, dout, out, lse, q, k, v, s);
    else cuda::window_attention_backward(dq, dk, dv, dout, out, lse, q, k, v, w, true);
  });
}

// A decode batch over KV rings: the window kernel with one sequence's query per CTA, storing the
// new entries in the same launch (one launch per layer; two when the batch is too small to fill
// the GPU and the keys are split).
void decode_attn_forward(float* out, const float* q, const float* k_new, const float* v_new,
                         const KvRing* rings, int S, const AttnShape& s, bool softmax) {
  AttnShape batch = s;
  batch.T = S, batch.Tk = 0, batch.cu_seqlens = nullptr, batch.n_docs = 0;
  cuda::WindowArgs w = window_args(batch, "decode_attn_forward");
  LCX_CHECK(S == 0 || rings, "decode_attn_forward: {} sequences but no rings", S);
  w.rings = rings;
  rethrow("decode_attn_forward", [&] { window_forward(out, nullptr, q, k_new, v_new, w, softmax); });
}

// Ring attention's block ops (attn_block.cu). The rows are device memory, so only the shape and
// the pointers are checked here (kernels/cpu/attn_block.h's check also reads the rows; ring
// attention's placements are validated on the host by ring_check).
void attn_block_check_shape(const AttnShape& s, const AttnRows& qr, const AttnRows& kr,
                            const char* op) {
  LCX_CHECK(s.H >= 1 && s.Hkv >= 1 && s.H % s.Hkv == 0, "{}: bad heads H={} Hkv={} (H must be a "
            "multiple of Hkv)", op, s.H, s.Hkv);
  LCX_CHECK(s.D >= 1 && s.D <= cuda::attn_block_max_d, "{}: head dim {} is outside [1, {}] on "
            "cuda", op, s.D, cuda::attn_block_max_d);
  LCX_CHECK(s.window >= 1, "{}: window must be >= 1, got {}", op, s.window);
  LCX_CHECK(qr.n >= 0 && kr.n >= 0, "{}: negative row count {} / {}", op, qr.n, kr.n);
  LCX_CHECK(qr.n == 0 || (qr.idx && qr.doc_begin), "{}: query rows need idx and doc_begin", op);
  LCX_CHECK(kr.n == 0 || kr.idx, "{}: key rows need idx", op);
}
void attn_block_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                        const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  attn_block_check_shape(s, qr, kr, "attn_block_forward");
  rethrow("attn_block_forward", [&] { cuda::attn_block_forward(out, lse, q, k, v, qr, kr, s); });
}
void attn_block_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                         const float* lse, const float* q, const float* k, const float* v,
                         const AttnRows& qr, const AttnRows& kr, const AttnShape& s) {
  attn_block_check_shape(s, qr, kr, "attn_block_backward");
  rethrow("attn_block_backward", [&] {
    cuda::attn_block_backward(dq, dk, dv, dout, out, lse, q, k, v, qr, kr, s);
  });
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

}  // namespace

bool cuda_available() { return device_count() > 0; }

const Backend& backend_cuda() {
  LCX_CHECK(cuda_available(), "backend 'cuda': no CUDA device is visible on this machine");
  static const Backend b = {
      "cuda",
      true,
      dev_alloc,
      dev_release,
      dev_copy,
      dev_zero,
      cuda::add,
      cuda::scale,
      dev_sum,
      dev_sum_squares,
      dev_sync,
      dev_peak_bytes,
      pinned_alloc,
      pinned_release,
      copy_async,
      event_create,
      event_release,
      event_record,
      stream_wait,
      matmul_forward,
      matmul_backward,
      matmul_forward_group,
      matmul_backward_group,
      embedding_forward,
      embedding_backward,
      cuda::rmsnorm_forward,
      cuda::rmsnorm_backward,
      rope_forward,
      rope_backward,
      swat_forward,
      swat_backward,
      softmax_attn_forward,
      softmax_attn_backward,
      decode_attn_forward,
      attn_block_forward,
      attn_block_backward,
      cuda::attn_block_merge,
      cuda::swiglu_forward,
      cuda::swiglu_backward,
      lm_head_xent,
      adamw_update,
      sample_rows,
  };
  return b;
}

}  // namespace longctx
