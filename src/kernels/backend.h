// The op table every backend implements (ggml-backend style). The model's forward/backward
// (src/model/model.cpp) calls only these, so a backend is a drop-in: `cpu_ref` (plain loops,
// the definition of each op), `cpu` (OpenBLAS + OpenMP + blocked attention), later `cuda`.
//
// Conventions (llm.c):
//  - outputs first, sizes explicit; every pointer's shape is given in the comment.
//  - Activations are one packed token stream of T tokens (B sequences × S, documents packed
//    back to back); `cu_seqlens` gives document boundaries, as flash-attn's varlen API.
//  - Forward ops overwrite their outputs (=). Backward ops ACCUMULATE (+=) into every gradient,
//    activation gradients included, so residual branches and gradient accumulation are free;
//    the caller zeroes gradient buffers. Exception: the ops that are often an activation
//    gradient's only or first producer (matmul_backward[_group] for dinp, swiglu_backward) take
//    a `Grad` saying whether to add into it or write it (see Grad). Parameter gradients always
//    accumulate. A null gradient pointer means "not needed".
//  - fp32 storage everywhere (the cuda backend computes GEMMs and attention in bf16 with fp32
//    accumulation). Every pointer an op takes lives in the backend's memory: host memory for
//    cpu/cpu_ref, device memory for cuda (AttnShape's cu_seqlens and slopes included).
//  - Memory: alloc/release/copy and a few vector ops, so the model and the optimizer run on any
//    backend; Buffer<T> below owns such memory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace longctx {

enum class Alibi { none, balanced, neg, pos };

// Slopes s_h for H query heads (DESIGN.md §2.1). balanced needs H even (throws otherwise).
void alibi_slopes(float* slopes, Alibi kind, int H);

// Shapes and options of one attention call (SWAT or softmax sliding window).
struct AttnShape {
  int T = 0;                          // tokens in the packed stream
  int H = 1, Hkv = 1, D = 64;         // query heads, KV heads (GQA: H % Hkv == 0), head dim
  int window = 1;                     // w ≥ 1: key n is visible from query m iff m−w < n ≤ m
  const int32_t* cu_seqlens = nullptr;  // [n_docs+1], 0 = cu[0] < … < cu[n_docs] = T
  int n_docs = 0;
  const float* slopes = nullptr;      // [H] ALiBi slope s_h, adds s_h·(m−n) to z_mn
  float bias = 0.0f;                  // sigmoid bias b (SWAT only)
  float scale = 0.125f;               // 1/√D
  // Keys in k, v; 0 means T. Tk > T (inference: a chunk of queries after a KV cache): the T
  // queries are the LAST T positions of a Tk-long key stream, query i at key index Tk−T+i, so
  // its window is [Tk−T+i−w+1, Tk−T+i]. One document (cu_seqlens must be null); forward only.
  int Tk = 0;
};

// Forward FLOPs of sliding-window attention by DESIGN.md §2.1's convention (shared with
// shared/bench/torch_anchors.py): pairs = S·w − w²/2 per head (w clipped to S), forward =
// 4·pairs·D·H; forward+backward counts 3.5 × forward.
inline double attention_flops_fwd(double S, double w, int H, int D) {
  w = w < S ? w : S;
  return 4.0 * (S * w - w * w / 2) * D * H;
}

// The rows of one attention block at ARBITRARY positions of a packed token stream (ring attention,
// kernels/cpu/attn_block.h): row i sits at index idx[i] of the stream (ascending); doc_begin[i] is
// the first index of its document (query rows only; may be null for key rows). Both arrays live in
// the backend's memory.
struct AttnRows {
  const int32_t* idx = nullptr;
  const int32_t* doc_begin = nullptr;
  int n = 0;
};

// One sequence's KV ring at one layer, for Backend::decode_attn_forward (infer/kv_cache.h): the
// entry (key or value, Hkv·D floats) of absolute position p lives in slot p % capacity of k, v.
struct KvRing {
  float* k = nullptr;    // (capacity, Hkv, D) keys, RoPE'd at their absolute positions
  float* v = nullptr;    // (capacity, Hkv, D) values
  int32_t capacity = 0;  // ring entries C ≥ 1
  int32_t pos = 0;       // absolute position p of the token this step decodes (the cache's n_past)
};

// How a backward op stores an activation gradient that takes a Grad: add (+=, the convention)
// or write (=) for the gradient's only or first producer — the buffer's old contents, NaN
// included, are never read, so the caller need not zero it (nor the op re-read the zeros).
enum class Grad { add, write };

// Direction of Backend::copy.
enum class Copy { to_device, to_host, within };

// Streams of Backend::copy_async / event_record / stream_wait: the ops run on `compute`;
// activation offloading copies on `d2h` (forward) and `h2d` (backward prefetch).
enum class Stream { compute, d2h, h2d };

struct Backend {
  const char* name;
  bool device;  // memory is not host-addressable (host code must copy, never dereference)

  // ---- memory: alloc returns zeroed bytes (never null; throws when out of memory)
  void* (*alloc)(size_t bytes);
  void (*release)(void* p);
  // dst ← src (bytes); to_device: src is host memory, to_host: dst is host memory
  void (*copy)(void* dst, const void* src, size_t bytes, Copy dir);
  void (*zero)(float* x, size_t n);
  void (*add)(float* y, const float* x, size_t n);     // y += x
  void (*scale)(float* x, size_t n, float a);          // x *= a
  // Σ x_i and Σ x_i² accumulated in fp64 (host: fixed chunks summed in order, so bit-exact
  // whatever the thread count; the result is NaN/Inf if any element is)
  double (*sum)(const float* x, size_t n);
  double (*sum_squares)(const float* x, size_t n);
  void (*sync)();               // wait for queued work (timing); host: nothing to wait for
  size_t (*peak_bytes)();       // high-water mark of alloc'd bytes (device backends; host: 0)
  // ---- asynchronous copies (activation offloading, DESIGN.md §3.2). Host backends run them
  // synchronously and their events are no-ops, so the same schedule runs everywhere.
  // Page-locked host memory (contents undefined; throws when out of memory) for copy_async.
  void* (*pinned_alloc)(size_t bytes);
  void (*pinned_release)(void* p);
  // copy() queued on stream s: ordered after the work queued on s before it
  void (*copy_async)(void* dst, const void* src, size_t bytes, Copy dir, Stream s);
  void* (*event_create)();
  void (*event_release)(void* ev);
  void (*event_record)(void* ev, Stream s);  // ev completes when s's work queued so far has
  void (*stream_wait)(Stream s, void* ev);   // s's later work waits for ev's last record

  // out (T,OC) = inp (T,C) · weight (OC,C)ᵀ
  void (*matmul_forward)(float* out, const float* inp, const float* weight, int T, int C, int OC);
  // dinp (T,C) += dout (T,OC) · weight (= with Grad::write);  dweight (OC,C) += doutᵀ · inp
  void (*matmul_backward)(float* dinp, float* dweight, const float* dout, const float* inp,
                          const float* weight, int T, int C, int OC, Grad dinp_mode);
  // G projections of one input (q/k/v of one RMSNorm output, gate/up of another): matmul_forward
  // / matmul_backward for g < G, sharing the input's reads (cuda: its bf16 copy is made once).
  // weight[g] (OC[g],C), out[g] and dout[g] (T,OC[g]); out, weight, OC, dweight, dout are host
  // arrays of G ≥ 1 entries (their pointers in the backend's memory).
  // out[g] = inp (T,C) · weight[g]ᵀ
  void (*matmul_forward_group)(float* const* out, const float* inp, const float* const* weight,
                               int T, int C, const int* OC, int G);
  // dinp (T,C) += Σ_g dout[g] · weight[g] (Grad::write: = the sum);  dweight[g] += dout[g]ᵀ · inp
  void (*matmul_backward_group)(float* dinp, float* const* dweight, const float* const* dout,
                                const float* inp, const float* const* weight, int T, int C,
                                const int* OC, int G, Grad dinp_mode);

  // out (T,C) = wte[tokens[t]];  wte (V,C)
  void (*embedding_forward)(float* out, const int32_t* tokens, const float* wte, int T, int C);
  // dwte (V,C) += scatter of dout (T,C)
  void (*embedding_backward)(float* dwte, const float* dout, const int32_t* tokens, int T, int C);

  // out (T,C) = weight ⊙ inp / sqrt(mean(inp²) + eps);  rstd (T) saved for backward
  void (*rmsnorm_forward)(float* out, float* rstd, const float* inp, const float* weight, int T,
                          int C, float eps);
  void (*rmsnorm_backward)(float* dinp, float* dweight, const float* dout, const float* inp,
                           const float* weight, const float* rstd, int T, int C);

  // RoPE, rotate-half (HF Llama): x (T, nh, D) rotated in place by angles pos[t]·θ^(−2i/D),
  // angles computed in fp64. Backward rotates dx in place by the negative angles (the one
  // in-place backward: it transforms the gradient rather than accumulating into another).
  void (*rope_forward)(float* x, const int32_t* pos, int T, int nh, int D, float theta);
  void (*rope_backward)(float* dx, const int32_t* pos, int T, int nh, int D, float theta);

  // SWAT (DESIGN.md §2.1): out_m = Σ_{n∈W(m)} σ(q_m·k_n·scale + s_h(m−n) + b) v_n
  // q, out (T,H,D); k, v (Tk,Hkv,D) (Tk = T unless s.Tk > T: see AttnShape)
  void (*swat_forward)(float* out, const float* q, const float* k, const float* v,
                       const AttnShape& s);
  void (*swat_backward)(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const AttnShape& s);

  // Softmax sliding-window attention (baseline; window ≥ T is full causal).
  // lse (T,H): log-sum-exp of each row's logits, saved for backward.
  void (*softmax_attn_forward)(float* out, float* lse, const float* q, const float* k,
                               const float* v, const AttnShape& s);
  void (*softmax_attn_backward)(float* dq, float* dk, float* dv, const float* dout,
                                const float* out, const float* lse, const float* q,
                                const float* k, const float* v, const AttnShape& s);

  // Decode step of S sequences that each feed ONE token (inference: one call per layer for a whole
  // decode batch, keys read in place from every sequence's KV ring). Sequence i's token sits at
  // position p = rings[i].pos with query q[i] (H,D) and new key/value k_new[i], v_new[i] (Hkv,D);
  // the op stores those in slot p % C of ring i, then out[i] (H,D) = attention of q[i] over the
  // ring's positions max(0, p−w+1, p−C+1) .. p: SWAT σ with s.bias, or softmax (softmax = true;
  // no bias, no lse) — swat_forward / softmax_attn_forward of one query after those keys (Tk).
  // q, out (S,H,D); k_new, v_new (S,Hkv,D); rings [S] in the backend's memory, rings distinct.
  // AttnShape gives H, Hkv, D, window, slopes, bias, scale (T, Tk, cu_seqlens are unused).
  void (*decode_attn_forward)(float* out, const float* q, const float* k_new, const float* v_new,
                              const KvRing* rings, int S, const AttnShape& s, bool softmax);

  // Softmax attention of a block of queries against a block of keys at arbitrary rows of one
  // stream: ring attention's kernel (kernels/cpu/attn_block.h: the math and the reference).
  // AttnShape gives H, Hkv, D, window, slopes, scale (its T, Tk, cu_seqlens, bias are unused).
  // forward: out (nq,H,D), lse (nq,H) = the block's PARTIAL result (lse −inf, out 0 for a row
  // that sees no key of the block); q (nq,H,D); k, v (nk,Hkv,D).
  void (*attn_block_forward)(float* out, float* lse, const float* q, const float* k,
                             const float* v, const AttnRows& qr, const AttnRows& kr,
                             const AttnShape& s);
  // backward of one block given the FINAL out, lse (nq,H) over all blocks: dq (nq,H,D) += …,
  // dk, dv (nk,Hkv,D) += …
  void (*attn_block_backward)(float* dq, float* dk, float* dv, const float* dout,
                              const float* out, const float* lse, const float* q, const float* k,
                              const float* v, const AttnRows& qr, const AttnRows& kr,
                              const AttnShape& s);
  // log-sum-exp merge of a partial (out_b, lse_b) into the running (out, lse): rows × H of D
  void (*attn_block_merge)(float* out, float* lse, const float* out_b, const float* lse_b,
                           int rows, int H, int D);

  // h (T,F) = silu(gate) ⊙ up;  backward: dgate, dup (T,F) += … (= with Grad::write)
  void (*swiglu_forward)(float* h, const float* gate, const float* up, int T, int F);
  void (*swiglu_backward)(float* dgate, float* dup, const float* dh, const float* gate,
                          const float* up, int T, int F, Grad mode);

  // Output projection fused with cross-entropy, in vocabulary chunks (never a T×V buffer):
  // logits_t = x_t · weightᵀ (weight (V,C)); losses[t] = −log softmax(logits_t)[targets[t]],
  // or 0 where targets[t] < 0 (no target). If dx/dweight are non-null, also the backward
  // of Σ_t dloss·losses[t]: dx (T,C) += …, dweight (V,C) += …, computed in the same call per
  // block of tokens (a log-sum-exp sweep over the vocabulary chunks, then a gradient sweep that
  // recomputes each chunk's logits), so the logits never exist beyond one chunk.
  void (*lm_head_xent)(float* losses, float* dx, float* dweight, const float* x,
                       const float* weight, const int32_t* targets, int T, int C, int V,
                       float dloss);

  // AdamW (decoupled weight decay), bias-corrected, step ≥ 1:
  // m = b1 m + (1−b1) g; v = b2 v + (1−b2) g²; p −= lr (m̂/(√v̂+eps) + wd·p)
  void (*adamw_update)(float* param, const float* grad, float* m, float* v, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int step);

  // Inference: the plain draw of one token per row of logits (no top-k/top-p cut; the definition
  // is kernels/cpu/sample.h's sample_draw): tokens[r] = the first i with Σ_{j≤i} w_j > u[r]·Σ_j w_j,
  // w_j = exp((l_j − max)/temperature[r]) in fp64; the first argmax where temperature[r] = 0.
  // logits (rows,V); tokens, u, temperature [rows]; u ∈ [0,1), temperature ≥ 0 (the caller
  // validates them). cuda matches the host backends except where u·Σw falls within rounding of
  // a prefix sum (another summation order).
  void (*sample_rows)(int32_t* tokens, const float* logits, const float* u,
                      const float* temperature, int rows, int V);
};

const Backend& backend_cpu_ref();  // plain loops: the definition of every op
const Backend& backend_cpu();      // fast CPU: OpenBLAS sgemm, OpenMP, blocked attention
// cuBLASLt bf16 GEMMs + CUDA kernels (src/kernels/cuda), only in builds with CUDA; throws Error
// when no GPU is usable.
const Backend& backend_cuda();
// True when this build has the CUDA backend and a GPU is present (tests skip otherwise).
bool cuda_available();
// Backend by name ("cpu", "cpu_ref", "cuda" when built); throws Error for an unknown name.
const Backend& backend_get(const char* name);

// n elements of T in a backend's memory, zero-filled on creation; copies stay on the backend.
// data()/size() for the op table; operator[], begin(), end() only on host backends.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Backend& be, size_t n) : be_(&be), n_(n) {
    if (n) p_ = static_cast<T*>(be.alloc(n * sizeof(T)));
  }
  Buffer(const Buffer& o) : be_(o.be_), n_(o.n_) {
    if (!n_) return;
    p_ = static_cast<T*>(be_->alloc(n_ * sizeof(T)));
    be_->copy(p_, o.p_, n_ * sizeof(T), Copy::within);
  }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer o) noexcept {
    swap(o);
    return *this;
  }
  ~Buffer() {
    if (p_) be_->release(p_);
  }
  void swap(Buffer& o) noexcept {
    std::swap(be_, o.be_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  const Backend* backend() const { return be_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }
  const T* begin() const { return p_; }
  const T* end() const { return p_ + n_; }

  // host ↔ buffer, n elements at element offset `at`
  void upload(const T* src, size_t n, size_t at = 0) {
    if (n) be_->copy(p_ + at, src, n * sizeof(T), Copy::to_device);
  }
  void download(T* dst, size_t n, size_t at = 0) const {
    if (n) be_->copy(dst, p_ + at, n * sizeof(T), Copy::to_host);
  }
  static Buffer from_host(const Backend& be, const T* src, size_t n) {
    Buffer b(be, n);
    b.upload(src, n);
    return b;
  }
  std::vector<T> to_host() const {
    std::vector<T> v(n_);
    download(v.data(), n_);
    return v;
  }

 private:
  const Backend* be_ = nullptr;
  T* p_ = nullptr;
  size_t n_ = 0;
};

// The first n elements of b, in be's memory: b is reallocated (zeroed) only when it is smaller or
// lives on another backend, so scratch buffers grow to the largest call and are reused.
template <class T>
T* fit(Buffer<T>& b, const Backend& be, size_t n) {
  if (b.size() < n || b.backend() != &be) b = Buffer<T>(be, n);
  return b.data();
}

}  // namespace longctx
