// Reference ops: plain loops, the definition of every op in backend.h (DESIGN.md §2).
// Templates over the element type F so the gradchecks can run them in double precision;
// backend_cpu_ref() is the float instantiation. Conventions as backend.h: forward ops overwrite,
// backward ops accumulate (+=) or, where they take a Grad, write (=) with Grad::write; a null
// gradient pointer means "not needed".
// Accumulations inside one output element use F (no hidden double), so float ≙ fp32 math.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "kernels/backend.h"

namespace longctx::ref {

// ---------------------------------------------------------------- shared attention helpers
// Throws Error unless `s` describes a valid call (shape, GQA grouping, document boundaries).
inline void attn_check(const AttnShape& s, const char* op) {
  LCX_CHECK(s.T >= 0 && s.H >= 1 && s.Hkv >= 1 && s.D >= 1, "{}: bad shape T={} H={} Hkv={} D={}",
            op, s.T, s.H, s.Hkv, s.D);
  LCX_CHECK(s.H % s.Hkv == 0, "{}: H={} is not a multiple of Hkv={} (GQA)", op, s.H, s.Hkv);
  LCX_CHECK(s.window >= 1, "{}: window must be >= 1, got {}", op, s.window);
  LCX_CHECK(s.Tk == 0 || s.Tk >= s.T, "{}: Tk={} keys is fewer than T={} queries", op, s.Tk, s.T);
  LCX_CHECK(s.Tk <= s.T || !s.cu_seqlens, "{}: Tk > T (queries after a KV cache) takes one "
            "document, but cu_seqlens was given", op);
  if (s.cu_seqlens) {
    LCX_CHECK(s.n_docs >= 1, "{}: cu_seqlens given with n_docs={}", op, s.n_docs);
    LCX_CHECK(s.cu_seqlens[0] == 0 && s.cu_seqlens[s.n_docs] == s.T,
              "{}: cu_seqlens must start at 0 and end at T={}, got {} .. {}", op, s.T,
              s.cu_seqlens[0], s.cu_seqlens[s.n_docs]);
    for (int d = 0; d < s.n_docs; d++)
      LCX_CHECK(s.cu_seqlens[d] < s.cu_seqlens[d + 1],
                "{}: cu_seqlens must be strictly increasing, cu[{}]={} cu[{}]={}", op, d,
                s.cu_seqlens[d], d + 1, s.cu_seqlens[d + 1]);
  }
}

// Document d spans tokens [doc_begin(s,d), doc_begin(s,d+1)); no cu_seqlens = one document.
inline int attn_docs(const AttnShape& s) { return s.cu_seqlens ? s.n_docs : (s.T > 0 ? 1 : 0); }
inline int doc_begin(const AttnShape& s, int d) {
  return s.cu_seqlens ? s.cu_seqlens[d] : (d == 0 ? 0 : s.T);
}
inline float slope_of(const AttnShape& s, int h) { return s.slopes ? s.slopes[h] : 0.0f; }
// Key index of query row 0: Tk − T when the queries follow a KV cache (AttnShape::Tk), else 0.
inline int query_offset(const AttnShape& s) { return s.Tk > s.T ? s.Tk - s.T : 0; }

// ---------------------------------------------------------------- matmul
// out (T,OC) = inp (T,C) · weight (OC,C)ᵀ
template <class F>
void matmul_forward(F* out, const F* inp, const F* weight, int T, int C, int OC) {
  for (int t = 0; t < T; t++)
    for (int o = 0; o < OC; o++) {
      F acc = 0;
      for (int c = 0; c < C; c++) acc += inp[(size_t)t * C + c] * weight[(size_t)o * C + c];
      out[(size_t)t * OC + o] = acc;
    }
}
// x += v, or x = v (Grad::write: x's old value is never read)
template <class F>
void store_grad(F& x, F v, Grad mode) {
  x = mode == Grad::write ? v : x + v;
}

// dinp (T,C) += dout · weight (= with Grad::write);  dweight (OC,C) += doutᵀ · inp
template <class F>
void matmul_backward(F* dinp, F* dweight, const F* dout, const F* inp, const F* weight, int T,
                     int C, int OC, Grad dinp_mode) {
  if (dinp)
    for (int t = 0; t < T; t++)
      for (int c = 0; c < C; c++) {
        F acc = 0;
        for (int o = 0; o < OC; o++) acc += dout[(size_t)t * OC + o] * weight[(size_t)o * C + c];
        store_grad(dinp[(size_t)t * C + c], acc, dinp_mode);
      }
  if (dweight)
    for (int o = 0; o < OC; o++)
      for (int c = 0; c < C; c++) {
        F acc = 0;
        for (int t = 0; t < T; t++) acc += dout[(size_t)t * OC + o] * inp[(size_t)t * C + c];
        dweight[(size_t)o * C + c] += acc;
      }
}

// ---------------------------------------------------------------- embedding
// out (T,C) = wte (V,C)[tokens[t]]. Token range is the caller's contract (V is not passed).
template <class F>
void embedding_forward(F* out, const int32_t* tokens, const F* wte, int T, int C) {
  for (int t = 0; t < T; t++) {
    LCX_CHECK(tokens[t] >= 0, "embedding: token {} at position {} is negative", tokens[t], t);
    for (int c = 0; c < C; c++) out[(size_t)t * C + c] = wte[(size_t)tokens[t] * C + c];
  }
}
template <class F>
void embedding_backward(F* dwte, const F* dout, const int32_t* tokens, int T, int C) {
  for (int t = 0; t < T; t++)
    for (int c = 0; c < C; c++) dwte[(size_t)tokens[t] * C + c] += dout[(size_t)t * C + c];
}

// ---------------------------------------------------------------- rmsnorm (HF Llama)
// y = w ⊙ x · r,  r = 1/sqrt(mean(x²) + eps)
template <class F>
void rmsnorm_forward(F* out, F* rstd, const F* inp, const F* weight, int T, int C, float eps) {
  for (int t = 0; t < T; t++) {
    const F* x = inp + (size_t)t * C;
    F ss = 0;
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    F r = F(1) / std::sqrt(ss / F(C) + F(eps));
    for (int c = 0; c < C; c++) out[(size_t)t * C + c] = weight[c] * (x[c] * r);
    rstd[t] = r;
  }
}
// dx_i += r·w_i·dy_i − r³/C · x_i · Σ_j w_j dy_j x_j;   dw_i += Σ_t dy_i x_i r
template <class F>
void rmsnorm_backward(F* dinp, F* dweight, const F* dout, const F* inp, const F* weight,
                      const F* rstd, int T, int C) {
  for (int t = 0; t < T; t++) {
    const F* x = inp + (size_t)t * C;
    const F* dy = dout + (size_t)t * C;
    F r = rstd[t];
    F dot = 0;
    for (int c = 0; c < C; c++) dot += weight[c] * dy[c] * x[c];
    if (dinp)
      for (int c = 0; c < C; c++)
        dinp[(size_t)t * C + c] += r * weight[c] * dy[c] - r * r * r / F(C) * x[c] * dot;
    if (dweight)
      for (int c = 0; c < C; c++) dweight[c] += dy[c] * x[c] * r;
  }
}

// ---------------------------------------------------------------- RoPE (rotate-half)
// x1 = x[:D/2], x2 = x[D/2:];  x ← [x1 cos − x2 sin, x2 cos + x1 sin],  angle = pos·θ^(−2i/D)
// computed in fp64. sign = −1 rotates by the negative angle (the backward).
template <class F>
void rope_rotate(F* x, const int32_t* pos, int T, int nh, int D, float theta, double sign) {
  const int half = D / 2;
  for (int t = 0; t < T; t++)
    for (int i = 0; i < half; i++) {
      double angle = double(pos[t]) * std::pow(double(theta), -2.0 * i / D);
      F c = F(std::cos(angle)), sn = F(sign * std::sin(angle));
      for (int h = 0; h < nh; h++) {
        F* v = x + ((size_t)t * nh + h) * D;
        F x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c - x2 * sn;
        v[i + half] = x2 * c + x1 * sn;
      }
    }
}
template <class F>
void rope_forward(F* x, const int32_t* pos, int T, int nh, int D, float theta) {
  rope_rotate(x, pos, T, nh, D, theta, 1.0);
}
// The rotation is orthogonal: its transpose is the rotation by −angle.
template <class F>
void rope_backward(F* dx, const int32_t* pos, int T, int nh, int D, float theta) {
  rope_rotate(dx, pos, T, nh, D, theta, -1.0);
}

// ---------------------------------------------------------------- attention
// z_mn for query m of head h and key n of kv head g (DESIGN.md §2.1, SWAT Eq. 3).
template <class F>
F attn_logit(const F* q, const F* k, const AttnShape& s, int m, int n, int h, int g) {
  const F* qm = q + ((size_t)(m - query_offset(s)) * s.H + h) * s.D;
  const F* kn = k + ((size_t)n * s.Hkv + g) * s.D;
  F dot = 0;
  for (int d = 0; d < s.D; d++) dot += qm[d] * kn[d];
  return dot * F(s.scale) + F(slope_of(s, h)) * F(m - n);
}

// Calls f(m, lo) for every query m (a key index; its q/out row is m − query_offset(s)), with
// W(m) = [lo, m] (DESIGN.md §2.1).
template <class Fn>
void attn_for_each_query(const AttnShape& s, Fn f) {
  if (s.Tk > s.T) {  // queries after a KV cache: one document of Tk keys
    for (int m = s.Tk - s.T; m < s.Tk; m++) f(m, std::max(0, m - s.window + 1));
    return;
  }
  for (int d = 0; d < attn_docs(s); d++) {
    int b = doc_begin(s, d), e = doc_begin(s, d + 1);
    for (int m = b; m < e; m++) f(m, std::max(b, m - s.window + 1));
  }
}

// SWAT forward: out_m = Σ_{n∈W(m)} σ(z_mn + b) v_n.  q,out (T,H,D); k,v (T,Hkv,D)
template <class F>
void swat_forward(F* out, const F* q, const F* k, const F* v, const AttnShape& s) {
  attn_check(s, "swat_forward");
  const int rep = s.H / s.Hkv;
  std::vector<F> o(s.D);
  attn_for_each_query(s, [&](int m, int lo) {
    for (int h = 0; h < s.H; h++) {
      int g = h / rep;
      std::fill(o.begin(), o.end(), F(0));
      for (int n = lo; n <= m; n++) {
        F z = attn_logit(q, k, s, m, n, h, g) + F(s.bias);
        F p = F(1) / (F(1) + std::exp(-z));
        const F* vn = v + ((size_t)n * s.Hkv + g) * s.D;
        for (int d = 0; d < s.D; d++) o[d] += p * vn[d];
      }
      std::copy(o.begin(), o.end(), out + ((size_t)(m - query_offset(s)) * s.H + h) * s.D);
    }
  });
}

// SWAT backward (DESIGN.md §2.1): dP = dO·v, dZ = p(1−p)dP, dv += p dO, dq += dZ k·scale,
// dk += dZ q·scale. GQA: dk, dv sum over the query heads of the group.
template <class F>
void swat_backward(F* dq, F* dk, F* dv, const F* dout, const F* q, const F* k, const F* v,
                   const AttnShape& s) {
  attn_check(s, "swat_backward");
  LCX_CHECK(s.Tk <= s.T, "swat_backward: Tk > T (queries after a KV cache) is forward only");
  const int rep = s.H / s.Hkv, D = s.D;
  attn_for_each_query(s, [&](int m, int lo) {
    for (int h = 0; h < s.H; h++) {
      int g = h / rep;
      const F* dom = dout + ((size_t)m * s.H + h) * D;
      const F* qm = q + ((size_t)m * s.H + h) * D;
      for (int n = lo; n <= m; n++) {
        const F* kn = k + ((size_t)n * s.Hkv + g) * D;
        const F* vn = v + ((size_t)n * s.Hkv + g) * D;
        F z = attn_logit(q, k, s, m, n, h, g) + F(s.bias);
        F p = F(1) / (F(1) + std::exp(-z));
        F dp = 0;
        for (int d = 0; d < D; d++) dp += dom[d] * vn[d];
        F dz = p * (F(1) - p) * dp * F(s.scale);
        for (int d = 0; d < D; d++) {
          if (dv) dv[((size_t)n * s.Hkv + g) * D + d] += p * dom[d];
          if (dq) dq[((size_t)m * s.H + h) * D + d] += dz * kn[d];
          if (dk) dk[((size_t)n * s.Hkv + g) * D + d] += dz * qm[d];
        }
      }
    }
  });
}

// Softmax sliding-window attention: p_mn = exp(z_mn − lse_m) over W(m) (no sigmoid bias).
template <class F>
void softmax_attn_forward(F* out, F* lse, const F* q, const F* k, const F* v,
                          const AttnShape& s) {
  attn_check(s, "softmax_attn_forward");
  const int rep = s.H / s.Hkv;
  std::vector<F> o(s.D);
  attn_for_each_query(s, [&](int m, int lo) {
    for (int h = 0; h < s.H; h++) {
      int g = h / rep;
      F mx = -INFINITY;
      for (int n = lo; n <= m; n++) mx = std::max(mx, attn_logit(q, k, s, m, n, h, g));
      F sum = 0;
      for (int n = lo; n <= m; n++) sum += std::exp(attn_logit(q, k, s, m, n, h, g) - mx);
      F l = mx + std::log(sum);
      std::fill(o.begin(), o.end(), F(0));
      for (int n = lo; n <= m; n++) {
        F p = std::exp(attn_logit(q, k, s, m, n, h, g) - l);
        const F* vn = v + ((size_t)n * s.Hkv + g) * s.D;
        for (int d = 0; d < s.D; d++) o[d] += p * vn[d];
      }
      std::copy(o.begin(), o.end(), out + ((size_t)(m - query_offset(s)) * s.H + h) * s.D);
      lse[(size_t)(m - query_offset(s)) * s.H + h] = l;
    }
  });
}

// dZ = p (dP − Δ_m),  Δ_m = dO_m · O_m; the rest as swat_backward.
template <class F>
void softmax_attn_backward(F* dq, F* dk, F* dv, const F* dout, const F* out, const F* lse,
                           const F* q, const F* k, const F* v, const AttnShape& s) {
  attn_check(s, "softmax_attn_backward");
  LCX_CHECK(s.Tk <= s.T, "softmax_attn_backward: Tk > T (queries after a KV cache) is forward only");
  const int rep = s.H / s.Hkv, D = s.D;
  attn_for_each_query(s, [&](int m, int lo) {
    for (int h = 0; h < s.H; h++) {
      int g = h / rep;
      const F* dom = dout + ((size_t)m * s.H + h) * D;
      const F* om = out + ((size_t)m * s.H + h) * D;
      const F* qm = q + ((size_t)m * s.H + h) * D;
      F delta = 0;
      for (int d = 0; d < D; d++) delta += dom[d] * om[d];
      for (int n = lo; n <= m; n++) {
        const F* kn = k + ((size_t)n * s.Hkv + g) * D;
        const F* vn = v + ((size_t)n * s.Hkv + g) * D;
        F p = std::exp(attn_logit(q, k, s, m, n, h, g) - lse[(size_t)m * s.H + h]);
        F dp = 0;
        for (int d = 0; d < D; d++) dp += dom[d] * vn[d];
        F dz = p * (dp - delta) * F(s.scale);
        for (int d = 0; d < D; d++) {
          if (dv) dv[((size_t)n * s.Hkv + g) * D + d] += p * dom[d];
          if (dq) dq[((size_t)m * s.H + h) * D + d] += dz * kn[d];
          if (dk) dk[((size_t)n * s.Hkv + g) * D + d] += dz * qm[d];
        }
      }
    }
  });
}

// ---------------------------------------------------------------- SwiGLU
// h = silu(g) ⊙ u, silu(g) = g σ(g);  d silu/dg = σ(g) (1 + g (1 − σ(g)))
template <class F>
void swiglu_forward(F* h, const F* gate, const F* up, int T, int F_) {
  for (size_t i = 0; i < (size_t)T * F_; i++) {
    F sg = F(1) / (F(1) + std::exp(-gate[i]));
    h[i] = gate[i] * sg * up[i];
  }
}
template <class F>
void swiglu_backward(F* dgate, F* dup, const F* dh, const F* gate, const F* up, int T, int F_,
                     Grad mode) {
  for (size_t i = 0; i < (size_t)T * F_; i++) {
    F g = gate[i], sg = F(1) / (F(1) + std::exp(-g));
    if (dgate) store_grad(dgate[i], dh[i] * up[i] * sg * (F(1) + g * (F(1) - sg)), mode);
    if (dup) store_grad(dup[i], dh[i] * g * sg, mode);
  }
}

// ---------------------------------------------------------------- lm head + cross-entropy
// losses[t] = logsumexp(l_t) − l_t[y_t], l_t = x_t · weightᵀ (0 where y_t < 0);
// dx_t += dloss Σ_v (p_tv − [v = y_t]) weight_v;  dweight_v += dloss Σ_t (p_tv − [v = y_t]) x_t
template <class F>
void lm_head_xent(F* losses, F* dx, F* dweight, const F* x, const F* weight,
                  const int32_t* targets, int T, int C, int V, float dloss) {
  std::vector<F> logits(V);
  for (int t = 0; t < T; t++) {
    int y = targets[t];
    LCX_CHECK(y < V, "lm_head_xent: target {} at position {} is >= vocab size {}", y, t, V);
    if (y < 0) {
      losses[t] = 0;
      continue;
    }
    const F* xt = x + (size_t)t * C;
    F mx = -INFINITY;
    for (int v = 0; v < V; v++) {
      F acc = 0;
      for (int c = 0; c < C; c++) acc += xt[c] * weight[(size_t)v * C + c];
      logits[v] = acc;
      mx = std::max(mx, acc);
    }
    F sum = 0;
    for (int v = 0; v < V; v++) sum += std::exp(logits[v] - mx);
    F lse = mx + std::log(sum);
    losses[t] = lse - logits[y];
    if (!dx && !dweight) continue;
    for (int v = 0; v < V; v++) {
      F gv = F(dloss) * (std::exp(logits[v] - lse) - (v == y ? F(1) : F(0)));
      for (int c = 0; c < C; c++) {
        if (dx) dx[(size_t)t * C + c] += gv * weight[(size_t)v * C + c];
        if (dweight) dweight[(size_t)v * C + c] += gv * xt[c];
      }
    }
  }
}

// ---------------------------------------------------------------- AdamW
// m = b1 m + (1−b1) g; v = b2 v + (1−b2) g²; p −= lr (m̂/(√v̂ + eps) + wd p),
// m̂ = m/(1−b1^step), v̂ = v/(1−b2^step)  (Loshchilov & Hutter, decoupled weight decay)
template <class F>
void adamw_update(F* param, const F* grad, F* m, F* v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int step) {
  LCX_CHECK(step >= 1, "adamw_update: step must be >= 1, got {}", step);
  F bc1 = F(1) - std::pow(F(beta1), F(step)), bc2 = F(1) - std::pow(F(beta2), F(step));
  for (size_t i = 0; i < n; i++) {
    m[i] = F(beta1) * m[i] + (F(1) - F(beta1)) * grad[i];
    v[i] = F(beta2) * v[i] + (F(1) - F(beta2)) * grad[i] * grad[i];
    F mhat = m[i] / bc1, vhat = v[i] / bc2;
    param[i] -= F(lr) * (mhat / (std::sqrt(vhat) + F(eps)) + F(weight_decay) * param[i]);
  }
}

}  // namespace longctx::ref
