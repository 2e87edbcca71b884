// The SWAT transformer (DESIGN.md §2): explicit forward and backward over one flat parameter
// buffer, one flat gradient buffer and an activation arena sized once for T tokens (llm.c).
// All of them live in the backend's memory (Buffer): host memory on cpu, device memory on cuda.
//
//   x = embed(tokens)
//   for each layer:  x = x + Attn(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x))
//   loss = xent(RMSNorm(x) · lm_headᵀ, targets)
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/config.h"
#include "model/params.h"

namespace longctx {

// One packed token stream: T tokens, documents back to back (DESIGN.md §2.1 varlen).
struct TokenBatch {
  const int32_t* tokens = nullptr;      // (T)
  const int32_t* targets = nullptr;     // (T) next token, −1 where none (document end)
  const int32_t* pos = nullptr;         // (T) RoPE position, restarts at 0 per document
  const int32_t* cu_seqlens = nullptr;  // (n_docs+1) document boundaries
  int T = 0;
  int n_docs = 0;
};

// Saved activations of one forward pass, for T_max tokens (sized once).
struct Activations {
  int T_max = 0;
  Buffer<float> arena;
  // A device backend's copy of the batch: tokens, targets, pos (T_max each), cu_seqlens (T_max+1)
  Buffer<int32_t> batch;
  // per layer l: pointers into the arena (shapes in model.cpp); with Model::recompute every
  // layer's pointers but res[l] name one shared set
  std::vector<float*> res, ln1, rstd1, q, k, v, att, lse, mid, ln2, rstd2, gate, up, h;
  float *lnf = nullptr, *rstdf = nullptr, *losses = nullptr;
  // backward scratch
  float *dres = nullptr, *dln = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr,
        *datt = nullptr, *dh = nullptr, *dgate = nullptr, *dup = nullptr;

  // Selective offloading (Model::offload = r > 0; ByteScale §5.2, DESIGN.md §3.2). A layer's
  // saved tensors (`saved`: all of them, or only res with recompute) are computed in staging
  // slots (l % 2; res l % 3), full T rows each so every op sees contiguous tensors. After the
  // layer's forward the first ⌈r·T⌉ rows of each go to pinned host[l] on the d2h stream and the
  // rest to the layer's resident storage; backward brings both back into the slots (the host
  // rows on the h2d stream while the layer above runs its backward). The last two layers never
  // leave their slots. Device memory, as Eq. 3: 2 full layers + (1 − r) of the other L − 2.
  struct Saved {
    std::vector<float*> Activations::*at;  // the per-layer pointer list
    size_t row;                            // floats per token
  };
  std::vector<Saved> saved;
  int n_slots = 0;   // event ring (3); 0: no offloading
  int n_off = 0;     // host rows per tensor for T_max tokens: ⌈r·T_max⌉
  std::vector<std::vector<float*>> resident, host;  // [layer < L−2][saved kind]
  std::unique_ptr<void, void (*)(void*)> pinned{nullptr, nullptr};  // holds every host[l][k]
  // stashed[slot], fetched[slot], then `computed` and `done` (compute stream marks)
  std::vector<std::unique_ptr<void, void (*)(void*)>> events;
};
struct Model;

// Who computes one layer's attention over the batch's post-RoPE q, k, v. Null (the default):
// the backend's kernels on the whole packed stream. The HDP runtime installs context-parallel
// attention (src/dist) for a sequence whose tokens span several ranks. Same contracts as the op
// table: forward overwrites out (and lse, softmax only); backward accumulates into dq, dk, dv.
struct LayerAttention {
  virtual ~LayerAttention() = default;
  virtual void forward(const Model& m, int layer, const AttnShape& s, float* out, float* lse,
                       const float* q, const float* k, const float* v) = 0;
  virtual void backward(const Model& m, int layer, const AttnShape& s, float* dq, float* dk,
                        float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v) = 0;
};

struct Model {
  Config config;
  ParamLayout layout;
  Buffer<float> params;  // layout.total floats
  Buffer<float> grads;   // same layout; backward accumulates (+=)
  Buffer<float> slopes;  // ALiBi slope per query head
  const Backend* backend = nullptr;
  Activations acts;
  LayerAttention* attention = nullptr;  // not owned; null = backend kernels
  // Activation recompute: keep only each layer's input residual; model_backward recomputes a
  // layer's forward before its backward (one layer's activations live at a time). Set before
  // reserve().
  bool recompute = false;
  // Selective activation offloading ratio r ∈ [0, 1] (0: off; Activations above). Set before
  // reserve(); bitwise the same losses and gradients as r = 0.
  double offload = 0;

  Model(const Config& c, const Backend& be);
  // Size the activation arena for up to T_max tokens per forward (no-op if already large enough).
  void reserve(int T_max);
  size_t activation_bytes() const { return acts.arena.size() * sizeof(float); }
  size_t offload_host_bytes() const;  // pinned host bytes of the offloaded rows
};

// Sublayers shared by training (model_forward) and inference (Engine::forward), over T rows of
// layer l. Attention runs between them, on the caller's keys and values.
//   layer_qkv_forward:     ln = RMSNorm(x), rstd saved; q = RoPE(ln·Wqᵀ), k = RoPE(ln·Wkᵀ),
//                          v = ln·Wvᵀ at positions pos.      x, ln (T,d); q (T,H·hd); k, v (T,Hkv·hd)
//   layer_out_mlp_forward: mid = x + att·Woᵀ;  out = mid + SwiGLU(RMSNorm(mid)) (ln, rstd, gate,
//                          up, h saved).  gate, up, h (T,F); out may alias x.
void layer_qkv_forward(const Model& m, int l, float* q, float* k, float* v, float* ln,
                       float* rstd, const float* x, const int32_t* pos, int T);
void layer_out_mlp_forward(const Model& m, int l, float* out, float* mid, float* ln, float* rstd,
                           float* gate, float* up, float* h, const float* att, const float* x,
                           int T);
// The attention options of the model (heads, window, slopes, bias, scale); T, Tk and
// cu_seqlens are the caller's.
AttnShape model_attn_shape(const Model& m);

// Forward: fills activations and per-token losses; returns the SUM of token losses and
// sets *n_targets to the number of predicted tokens (targets ≥ 0). b.targets == nullptr
// skips the head (generation). dloss ≠ 0 prepares training on dloss · Σ_t loss_t
// (dloss = 1/total predicted tokens for a mean loss): the output head's backward is fused
// into the forward's sweep over the vocabulary and accumulates into m.grads.
double model_forward(Model& m, const TokenBatch& b, int64_t* n_targets, float dloss = 0.0f);
// Backward of the rest of the network; accumulates into m.grads. Must follow
// model_forward(m, b, …, dloss ≠ 0) on the same batch.
void model_backward(Model& m, const TokenBatch& b);
// Logits (V, host memory) of the last token of the batch after a forward-only pass (for
// generation).
void model_logits_last(Model& m, const TokenBatch& b, float* logits);
// The batch as the backend sees it: `b` itself on a host backend, else b's arrays copied into
// m.acts.batch (T ≤ T_max). TokenBatch's pointers are host memory everywhere else.
TokenBatch model_stage_batch(Model& m, const TokenBatch& b);

}  // namespace longctx
