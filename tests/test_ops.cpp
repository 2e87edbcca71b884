// Op-parity harness (ggml's test-backend-ops idea): every op of backend.h, over many shapes, run
// on each backend under test and on backend_cpu_ref(), compared with one tolerance per op.
// - inputs are random (never zeros), forward outputs are poisoned with NaN before the call, so an
//   element a backend forgets to write fails the comparison;
// - gradients are pre-filled with random values, so a backend that overwrites instead of
//   accumulating (+=) fails; and each backend's (prefilled − fill) must equal its zero-filled run;
//   gradients an op writes (Grad::write) are pre-filled with NaN: a backend that reads them fails.
// Adding an op = adding its cases to all_cases(). Error = max|x − x_ref| / max(1, max|x_ref|).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "decode_cases.h"
#include "kernels/backend.h"
#include "test_util.h"

using namespace longctx;

namespace {

using Vec = std::vector<float>;

Vec randn(size_t n, uint64_t seed, float scale = 1) { return longctx::testing::randn<float>(n, seed, scale); }

Vec nans(size_t n) { return Vec(n, NAN); }

// An activation gradient before a backward op: fill × random for Grad::add (the += contract is
// checked), NaN for Grad::write (a backend that reads the buffer instead of writing it fails).
Vec grad_buffer(Grad mode, size_t n, uint64_t seed, float fill) {
  return mode == Grad::add ? randn(n, seed, fill) : nans(n);
}
std::string grad_name(Grad mode) { return mode == Grad::add ? "" : "write_"; }

// One named output of an op run; `fill` is what the buffer held before the call (gradients).
struct Out {
  std::string name;
  Vec data, fill;
};
using Outs = std::vector<Out>;

struct OpCase {
  std::string name;  // unique, [A-Za-z0-9_]
  double tol;        // max error against the reference
  bool accumulates;  // backward op: also check the += contract
  // Runs the op on `b`; gradients pre-filled with fill_scale × random.
  std::function<Outs(const Backend& b, float fill_scale)> run;
};

// ---------------------------------------------------------------- attention cases
struct AttnParams {
  int T, H, Hkv, D, window;
  std::vector<int32_t> cu;  // empty: one document
  Alibi alibi;
  float bias;
};

std::string alibi_name(Alibi a) {
  switch (a) {
    case Alibi::none: return "none";
    case Alibi::balanced: return "bal";
    case Alibi::neg: return "neg";
    case Alibi::pos: return "pos";
  }
  return "?";
}

std::string attn_name(const AttnParams& p) {
  std::string n = "T" + std::to_string(p.T) + "_H" + std::to_string(p.H) + "_Hkv" +
                  std::to_string(p.Hkv) + "_D" + std::to_string(p.D) + "_w" +
                  std::to_string(p.window) + "_docs" +
                  std::to_string(p.cu.empty() ? 1 : (int)p.cu.size() - 1) + "_" +
                  alibi_name(p.alibi);
  if (p.bias != 0.0f) n += "_bias";
  return n;
}

// Everything one attention call needs, deterministic in the parameters.
struct AttnData {
  AttnParams p;
  Vec slopes, q, k, v, dout;
  AttnShape s;
  explicit AttnData(const AttnParams& p_) : p(p_) {
    slopes.resize(p.H);
    alibi_slopes(slopes.data(), p.alibi, p.H);
    size_t nq = (size_t)p.T * p.H * p.D, nk = (size_t)p.T * p.Hkv * p.D;
    q = randn(nq, 1), k = randn(nk, 2), v = randn(nk, 3), dout = randn(nq, 4);
    s.T = p.T, s.H = p.H, s.Hkv = p.Hkv, s.D = p.D, s.window = p.window;
    if (!p.cu.empty()) s.cu_seqlens = p.cu.data(), s.n_docs = (int)p.cu.size() - 1;
    s.slopes = slopes.data();
    s.bias = p.bias;
    s.scale = 1.0f / std::sqrt(float(p.D));
  }
};

void add_attention_cases(std::vector<OpCase>& cases) {
  using A = Alibi;
  const std::vector<AttnParams> shapes = {
      {1, 1, 1, 64, 1, {}, A::none, 0.0f},               // single token
      {67, 1, 1, 64, 1, {}, A::neg, 0.0f},               // w = 1: only the diagonal
      {67, 2, 2, 64, 16, {}, A::balanced, 0.0f},          // odd T, w < tile
      {37, 2, 1, 128, 64, {}, A::pos, -0.7f},             // T < w, D 128, GQA, bias
      {200, 2, 2, 64, 500, {}, A::neg, 0.0f},             // w ≥ T: full causal
      {257, 2, 2, 64, 256, {}, A::balanced, 0.3f},        // w = 256 (paper), T = 256 + 1
      {130, 8, 2, 64, 64, {0, 50, 51, 130}, A::balanced, 0.0f},  // GQA 8/2, 3 docs, a 1-token doc
      {300, 4, 4, 128, 100, {0, 65, 129, 300}, A::neg, -1.0f},   // D 128, docs off the tile grid
      {150, 2, 2, 48, 40, {0, 70, 150}, A::pos, 0.0f},     // D 48 (3-vector column block)
      {100, 3, 1, 80, 33, {}, A::none, 0.5f},              // D 80 (64 + 16), H 3 → 1 KV head
      {90, 2, 2, 20, 30, {0, 45, 90}, A::neg, 0.0f},       // D 20: not a multiple of 16 (fallback)
      {520, 1, 1, 64, 130, {0, 200, 520}, A::neg, 0.0f},  // H 1: chunked backward with halos
      {400, 8, 8, 64, 96, {}, A::balanced, -0.2f},         // many heads
      {70, 2, 2, 64, INT32_MAX, {0, 30, 70}, A::neg, 0.0f}, // "infinite" window: no overflow
      {45, 2, 1, 32, 7, {}, A::pos, 0.1f},                  // D 32 (2-vector column block)
  };
  for (const AttnParams& p : shapes) {
    const std::string n = attn_name(p);
    auto data = std::make_shared<AttnData>(p);
    const size_t nq = (size_t)p.T * p.H * p.D, nk = (size_t)p.T * p.Hkv * p.D;
    cases.push_back({"swat_fwd_" + n, 2e-5, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans(nq), {}}};
                       b.swat_forward(o[0].data.data(), data->q.data(), data->k.data(),
                                      data->v.data(), data->s);
                       return o;
                     }});
    cases.push_back({"swat_bwd_" + n, 2e-5, true, [=](const Backend& b, float fill) {
                       Outs o{{"dq", randn(nq, 11, fill), {}},
                              {"dk", randn(nk, 12, fill), {}},
                              {"dv", randn(nk, 13, fill), {}}};
                       for (auto& x : o) x.fill = x.data;
                       b.swat_backward(o[0].data.data(), o[1].data.data(), o[2].data.data(),
                                       data->dout.data(), data->q.data(), data->k.data(),
                                       data->v.data(), data->s);
                       return o;
                     }});
    if (p.bias != 0.0f) continue;  // the sigmoid bias does not exist for softmax attention
    cases.push_back({"softmax_fwd_" + n, 2e-5, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans(nq), {}}, {"lse", nans((size_t)p.T * p.H), {}}};
                       b.softmax_attn_forward(o[0].data.data(), o[1].data.data(), data->q.data(),
                                              data->k.data(), data->v.data(), data->s);
                       return o;
                     }});
    cases.push_back({"softmax_bwd_" + n, 2e-5, true, [=](const Backend& b, float fill) {
                       // out and lse from the reference, so only the backward differs
                       Vec out(nq), lse((size_t)p.T * p.H);
                       backend_cpu_ref().softmax_attn_forward(out.data(), lse.data(),
                                                              data->q.data(), data->k.data(),
                                                              data->v.data(), data->s);
                       Outs o{{"dq", randn(nq, 11, fill), {}},
                              {"dk", randn(nk, 12, fill), {}},
                              {"dv", randn(nk, 13, fill), {}}};
                       for (auto& x : o) x.fill = x.data;
                       b.softmax_attn_backward(o[0].data.data(), o[1].data.data(),
                                               o[2].data.data(), data->dout.data(), out.data(),
                                               lse.data(), data->q.data(), data->k.data(),
                                               data->v.data(), data->s);
                       return o;
                     }});
  }
}

// ---------------------------------------------------------------- other ops
std::string dims(std::initializer_list<int> xs) {
  std::string s;
  for (int x : xs) {
    if (!s.empty()) s += 'x';
    s += std::to_string(x);
  }
  return s;
}

void add_dense_cases(std::vector<OpCase>& cases) {
  // (plain variables, not structured bindings: clang < 16 cannot capture those in lambdas)
  for (const auto& dim : std::vector<std::array<int, 3>>{{1, 1, 1}, {7, 13, 5}, {64, 128, 96},
                                                         {33, 257, 65}}) {
    const int T = dim[0], C = dim[1], OC = dim[2];
    const std::string n = dims({T, C, OC});
    auto x = std::make_shared<Vec>(randn((size_t)T * C, 21));
    auto w = std::make_shared<Vec>(randn((size_t)OC * C, 22));
    auto dy = std::make_shared<Vec>(randn((size_t)T * OC, 23));
    cases.push_back({"matmul_fwd_" + n, 1e-5, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans((size_t)T * OC), {}}};
                       b.matmul_forward(o[0].data.data(), x->data(), w->data(), T, C, OC);
                       return o;
                     }});
    for (Grad mode : {Grad::add, Grad::write})
      cases.push_back({"matmul_bwd_" + grad_name(mode) + n, 1e-5, true,
                       [=](const Backend& b, float fill) {
                         Outs o{{"dinp", grad_buffer(mode, (size_t)T * C, 24, fill), {}},
                                {"dweight", randn((size_t)OC * C, 25, fill), {}}};
                         if (mode == Grad::add) o[0].fill = o[0].data;
                         o[1].fill = o[1].data;
                         b.matmul_backward(o[0].data.data(), o[1].data.data(), dy->data(),
                                           x->data(), w->data(), T, C, OC, mode);
                         return o;
                       }});
  }

  // Projections of one input (q/k/v with GQA widths, gate/up, a single one).
  for (const auto& shape : std::vector<std::pair<std::array<int, 2>, std::vector<int>>>{
           {{1, 1}, {1}}, {{7, 13}, {5, 3, 3}}, {{33, 64}, {96, 32, 32}}, {{20, 48}, {70, 70}}}) {
    const int T = shape.first[0], C = shape.first[1], G = (int)shape.second.size();
    const std::vector<int> OC = shape.second;
    const std::string n = dims({T, C}) + "_G" + std::to_string(G);
    auto x = std::make_shared<Vec>(randn((size_t)T * C, 26));
    std::vector<Vec> w, dy;
    for (int g = 0; g < G; g++) {
      w.push_back(randn((size_t)OC[g] * C, 27 + g));
      dy.push_back(randn((size_t)T * OC[g], 37 + g));
    }
    auto ws = std::make_shared<std::vector<Vec>>(w);
    auto dys = std::make_shared<std::vector<Vec>>(dy);
    cases.push_back({"matmul_fwd_group_" + n, 1e-5, false, [=](const Backend& b, float) {
                       Outs o;
                       std::vector<float*> out;
                       std::vector<const float*> wp;
                       for (int g = 0; g < G; g++)
                         o.push_back({"out" + std::to_string(g), nans((size_t)T * OC[g]), {}});
                       for (int g = 0; g < G; g++)
                         out.push_back(o[g].data.data()), wp.push_back((*ws)[g].data());
                       b.matmul_forward_group(out.data(), x->data(), wp.data(), T, C, OC.data(), G);
                       return o;
                     }});
    for (Grad mode : {Grad::add, Grad::write})
      cases.push_back({"matmul_bwd_group_" + grad_name(mode) + n, 1e-5, true,
                       [=](const Backend& b, float fill) {
                         Outs o{{"dinp", grad_buffer(mode, (size_t)T * C, 24, fill), {}}};
                         if (mode == Grad::add) o[0].fill = o[0].data;
                         for (int g = 0; g < G; g++) {
                           o.push_back({"dweight" + std::to_string(g),
                                        randn((size_t)OC[g] * C, 47 + g, fill), {}});
                           o.back().fill = o.back().data;
                         }
                         std::vector<float*> dw;
                         std::vector<const float*> dyp, wp;
                         for (int g = 0; g < G; g++) {
                           // the last projection's weight gradient not asked for (null)
                           dw.push_back(g == 2 ? nullptr : o[1 + g].data.data());
                           dyp.push_back((*dys)[g].data()), wp.push_back((*ws)[g].data());
                         }
                         b.matmul_backward_group(o[0].data.data(), dw.data(), dyp.data(),
                                                 x->data(), wp.data(), T, C, OC.data(), G, mode);
                         return o;
                       }});
  }

  for (const auto& dim : std::vector<std::array<int, 3>>{{1, 1, 1}, {10, 37, 24}, {50, 600, 64}}) {
    const int V = dim[0], T = dim[1], C = dim[2];
    const std::string n = dims({V, T, C});
    auto wte = std::make_shared<Vec>(randn((size_t)V * C, 31));
    auto dy = std::make_shared<Vec>(randn((size_t)T * C, 32));
    auto tok = std::make_shared<std::vector<int32_t>>(T);
    Rng r(33);
    for (auto& t : *tok) t = (int32_t)r.below(V);  // repeats: tests the scatter-add
    cases.push_back({"embedding_fwd_" + n, 0.0, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans((size_t)T * C), {}}};
                       b.embedding_forward(o[0].data.data(), tok->data(), wte->data(), T, C);
                       return o;
                     }});
    cases.push_back({"embedding_bwd_" + n, 1e-6, true, [=](const Backend& b, float fill) {
                       Outs o{{"dwte", randn((size_t)V * C, 34, fill), {}}};
                       o[0].fill = o[0].data;
                       b.embedding_backward(o[0].data.data(), dy->data(), tok->data(), T, C);
                       return o;
                     }});
  }

  for (const auto& dim : std::vector<std::array<int, 2>>{{1, 1}, {5, 7}, {64, 256}, {100, 700}}) {
    const int T = dim[0], C = dim[1];
    const std::string n = dims({T, C});
    auto x = std::make_shared<Vec>(randn((size_t)T * C, 41, 3.0f));
    auto w = std::make_shared<Vec>(randn(C, 42));
    auto dy = std::make_shared<Vec>(randn((size_t)T * C, 43));
    cases.push_back({"rmsnorm_fwd_" + n, 1e-5, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans((size_t)T * C), {}}, {"rstd", nans(T), {}}};
                       b.rmsnorm_forward(o[0].data.data(), o[1].data.data(), x->data(), w->data(),
                                         T, C, 1e-6f);
                       return o;
                     }});
    cases.push_back({"rmsnorm_bwd_" + n, 1e-5, true, [=](const Backend& b, float fill) {
                       Vec out((size_t)T * C), rstd(T);
                       backend_cpu_ref().rmsnorm_forward(out.data(), rstd.data(), x->data(),
                                                         w->data(), T, C, 1e-6f);
                       Outs o{{"dinp", randn((size_t)T * C, 44, fill), {}},
                              {"dweight", randn(C, 45, fill), {}}};
                       for (auto& y : o) y.fill = y.data;
                       b.rmsnorm_backward(o[0].data.data(), o[1].data.data(), dy->data(),
                                          x->data(), w->data(), rstd.data(), T, C);
                       return o;
                     }});
  }

  // RoPE: positions up to 2M (fp64 angles), head dims 2..128, two bases
  for (const auto& cfg :
       std::vector<std::tuple<int, int, int, bool, float>>{{1, 1, 2, false, 10000.0f},
                                                           {9, 3, 64, false, 10000.0f},
                                                           {40, 4, 128, true, 500000.0f},
                                                           {300, 8, 64, true, 10000.0f}}) {
    const int T = std::get<0>(cfg), nh = std::get<1>(cfg), D = std::get<2>(cfg);
    const bool big_pos = std::get<3>(cfg);
    const float theta = std::get<4>(cfg);
    const std::string n = dims({T, nh, D}) + (big_pos ? "_bigpos" : "");
    auto x = std::make_shared<Vec>(randn((size_t)T * nh * D, 51));
    auto pos = std::make_shared<std::vector<int32_t>>(T);
    for (int t = 0; t < T; t++) (*pos)[t] = big_pos ? 2000000 - 3 * t : t % 17;
    for (int bwd = 0; bwd < 2; bwd++)
      cases.push_back({std::string(bwd ? "rope_bwd_" : "rope_fwd_") + n, 1e-6, false,
                       [=](const Backend& b, float) {
                         Outs o{{"x", *x, {}}};
                         (bwd ? b.rope_backward : b.rope_forward)(o[0].data.data(), pos->data(),
                                                                  T, nh, D, theta);
                         return o;
                       }});
  }

  for (const auto& dim : std::vector<std::array<int, 2>>{{1, 1}, {3, 37}, {64, 768}}) {
    const int T = dim[0], F = dim[1];
    const std::string n = dims({T, F});
    auto g = std::make_shared<Vec>(randn((size_t)T * F, 61, 3.0f));
    auto u = std::make_shared<Vec>(randn((size_t)T * F, 62));
    auto dh = std::make_shared<Vec>(randn((size_t)T * F, 63));
    cases.push_back({"swiglu_fwd_" + n, 1e-6, false, [=](const Backend& b, float) {
                       Outs o{{"h", nans((size_t)T * F), {}}};
                       b.swiglu_forward(o[0].data.data(), g->data(), u->data(), T, F);
                       return o;
                     }});
    for (Grad mode : {Grad::add, Grad::write})
      cases.push_back({"swiglu_bwd_" + grad_name(mode) + n, 1e-6, mode == Grad::add,
                       [=](const Backend& b, float fill) {
                         Outs o{{"dgate", grad_buffer(mode, (size_t)T * F, 64, fill), {}},
                                {"dup", grad_buffer(mode, (size_t)T * F, 65, fill), {}}};
                         if (mode == Grad::add)
                           for (auto& y : o) y.fill = y.data;
                         b.swiglu_backward(o[0].data.data(), o[1].data.data(), dh->data(),
                                           g->data(), u->data(), T, F, mode);
                         return o;
                       }});
  }

  // lm_head_xent: vocab crossing the 2048-column chunk, > 256 tokens, missing targets (−1)
  for (const auto& dim : std::vector<std::array<int, 3>>{{1, 1, 1}, {5, 8, 11}, {300, 64, 5000}}) {
    const int T = dim[0], C = dim[1], V = dim[2];
    const std::string n = dims({T, C, V});
    auto x = std::make_shared<Vec>(randn((size_t)T * C, 71));
    auto w = std::make_shared<Vec>(randn((size_t)V * C, 72, 0.5f));
    auto tg = std::make_shared<std::vector<int32_t>>(T);
    Rng r(73);
    for (int t = 0; t < T; t++) (*tg)[t] = (t % 7 == 3) ? -1 : (int32_t)r.below(V);
    cases.push_back({"lm_head_xent_fwd_" + n, 1e-5, false, [=](const Backend& b, float) {
                       Outs o{{"losses", nans(T), {}}};
                       b.lm_head_xent(o[0].data.data(), nullptr, nullptr, x->data(), w->data(),
                                      tg->data(), T, C, V, 1.0f);
                       return o;
                     }});
    cases.push_back({"lm_head_xent_bwd_" + n, 1e-5, true, [=](const Backend& b, float fill) {
                       Outs o{{"losses", nans(T), {}},
                              {"dx", randn((size_t)T * C, 74, fill), {}},
                              {"dweight", randn((size_t)V * C, 75, fill), {}}};
                       o[1].fill = o[1].data, o[2].fill = o[2].data;
                       b.lm_head_xent(o[0].data.data(), o[1].data.data(), o[2].data.data(),
                                      x->data(), w->data(), tg->data(), T, C, V, 0.37f);
                       return o;
                     }});
  }

  for (const auto& dim : std::vector<std::array<int, 2>>{{1, 1}, {100, 10}, {100000, 3}}) {
    const int n_ = dim[0], step = dim[1];
    const size_t N = n_;
    const int st = step;
    cases.push_back({"adamw_" + dims({n_, step}), 1e-6, false, [=](const Backend& b, float) {
                       Outs o{{"param", randn(N, 81), {}},
                              {"m", randn(N, 82, 0.1f), {}},
                              {"v", Vec(N), {}}};
                       Vec g = randn(N, 84), v = randn(N, 83, 0.1f);
                       for (size_t i = 0; i < N; i++) o[2].data[i] = v[i] * v[i];
                       b.adamw_update(o[0].data.data(), g.data(), o[1].data.data(),
                                      o[2].data.data(), N, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, st);
                       return o;
                     }});
  }
}

// Queries after a KV cache (AttnShape::Tk > T, inference): the T queries are the last T
// positions of a Tk-key stream. {Tq, Tk, H, Hkv, D, window, alibi, bias}.
struct CachedParams {
  int T, Tk, H, Hkv, D, window;
  Alibi alibi;
  float bias;
};
const std::vector<CachedParams> kCachedShapes = {
    {1, 1, 2, 2, 64, 8, Alibi::balanced, 0.0f},     // decode, empty cache (Tk = T)
    {1, 256, 4, 2, 64, 256, Alibi::balanced, 0.0f},  // decode, full window of 256
    {1, 40, 2, 2, 64, 256, Alibi::neg, -0.5f},       // decode, cache shorter than the window
    {37, 100, 3, 1, 80, 64, Alibi::pos, 0.0f},       // prefill chunk, GQA, odd sizes
    {64, 64 + 255, 2, 2, 32, 256, Alibi::balanced, 0.2f},  // chunk after w−1 cached keys
    {5, 3000, 1, 1, 20, 1 << 30, Alibi::none, 0.0f},  // softmax-full style growing cache
};
struct CachedData {
  Vec slopes, q, k, v;
  AttnShape s;
  explicit CachedData(const CachedParams& p) {
    slopes.resize(p.H);
    alibi_slopes(slopes.data(), p.alibi, p.H);
    q = randn((size_t)p.T * p.H * p.D, 21), k = randn((size_t)p.Tk * p.Hkv * p.D, 22);
    v = randn((size_t)p.Tk * p.Hkv * p.D, 23);
    s.T = p.T, s.Tk = p.Tk, s.H = p.H, s.Hkv = p.Hkv, s.D = p.D, s.window = p.window;
    s.slopes = slopes.data(), s.bias = p.bias, s.scale = 1.0f / std::sqrt(float(p.D));
  }
};

void add_cached_attention_cases(std::vector<OpCase>& cases) {
  for (const CachedParams& p : kCachedShapes) {
    const std::string n = "T" + std::to_string(p.T) + "_Tk" + std::to_string(p.Tk) + "_H" +
                          std::to_string(p.H) + "_Hkv" + std::to_string(p.Hkv) + "_D" +
                          std::to_string(p.D) + "_w" + std::to_string(std::min(p.window, 99999)) +
                          "_" + alibi_name(p.alibi);
    auto data = std::make_shared<CachedData>(p);
    const size_t nq = (size_t)p.T * p.H * p.D;
    cases.push_back({"swat_fwd_cached_" + n, 2e-5, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans(nq), {}}};
                       b.swat_forward(o[0].data.data(), data->q.data(), data->k.data(),
                                      data->v.data(), data->s);
                       return o;
                     }});
    if (p.bias != 0.0f) continue;
    cases.push_back({"softmax_fwd_cached_" + n, 2e-5, false, [=](const Backend& b, float) {
                       Outs o{{"out", nans(nq), {}}, {"lse", nans((size_t)p.T * p.H), {}}};
                       b.softmax_attn_forward(o[0].data.data(), o[1].data.data(), data->q.data(),
                                              data->k.data(), data->v.data(), data->s);
                       return o;
                     }});
  }
}

// A decode batch over KV rings (decode_attn_forward): outputs and the rings after the call.
using longctx::testing::DecodeCase;
using longctx::testing::DecodeData;
const std::vector<DecodeCase> kDecodeCases = {
    // SWAT rings (C = w): empty, partly filled, just full, wrapped, wrapped many times
    {4, 2, 64, 16, {0, 5, 15, 16, 40, 1000}, {16, 16, 16, 16, 16, 16}, Alibi::balanced, 0.0f},
    // softmax-full growing cache (C < w, positions below C)
    {2, 2, 32, 1 << 30, {0, 10, 63}, {64, 64, 64}, Alibi::none, 0.0f},
    // rings larger than the window and of different capacities; GQA 3/1, D 80, bias
    {3, 1, 80, 7, {3, 100, 39}, {40, 9, 7}, Alibi::neg, -0.5f},
    {2, 2, 20, 1, {0, 9}, {1, 1}, Alibi::pos, 0.3f},  // w 1: the new token alone
};

void add_decode_cases(std::vector<OpCase>& cases) {
  for (const DecodeCase& c : kDecodeCases) {
    auto data = std::make_shared<DecodeData>(c);
    for (bool softmax : {false, true})
      cases.push_back({std::string(softmax ? "decode_softmax_" : "decode_swat_") + c.name(), 2e-5,
                       false, [=](const Backend& b, float) {
                         const auto r = longctx::testing::run_decode(b, *data, softmax);
                         Outs o{{"out", r.out, {}}};
                         for (int i = 0; i < data->S; i++) {
                           o.push_back({"ring_k" + std::to_string(i), r.ring_k[i], {}});
                           o.push_back({"ring_v" + std::to_string(i), r.ring_v[i], {}});
                         }
                         return o;
                       }});
  }
}

// The plain draw of a token per row (sample_rows): tokens compared exactly. Temperatures cycle
// through greedy, tiny, 0.7, 1, 2; u through 0, just below 1, 1e-7 and random values; rows have
// ties at the max (greedy takes the first) and −inf logits (weight 0).
void add_sample_cases(std::vector<OpCase>& cases) {
  for (const auto& dim : std::vector<std::array<int, 2>>{{1, 1}, {5, 7}, {33, 1000}, {64, 8192}}) {
    const int rows = dim[0], V = dim[1];
    auto logits = std::make_shared<Vec>(randn(size_t(rows) * V, 91, 3.0f));
    auto u = std::make_shared<Vec>(rows), temp = std::make_shared<Vec>(rows);
    Rng r(92);
    const float temps[] = {0.0f, 1e-3f, 0.7f, 1.0f, 2.0f};
    for (int i = 0; i < rows; i++) {
      (*temp)[i] = temps[i % 5];
      const float us[] = {r.uniform(), 0.0f, std::nextafter(1.0f, 0.0f), 1e-7f};
      (*u)[i] = us[i % 7 < 4 ? i % 7 : 0];
      float* l = logits->data() + size_t(i) * V;
      if (V > 2 && i % 3 == 0) l[0] = l[V - 1] = *std::max_element(l, l + V);
      if (V > 4 && i % 4 == 0) l[1] = l[V - 2] = -INFINITY;
    }
    cases.push_back({"sample_rows_" + dims({rows, V}), 0.0, false, [=](const Backend& b, float) {
                       std::vector<int32_t> tokens(size_t(rows), -1);
                       b.sample_rows(tokens.data(), logits->data(), u->data(), temp->data(), rows, V);
                       return Outs{{"tokens", Vec(tokens.begin(), tokens.end()), {}}};
                     }});
  }
}

std::vector<OpCase> all_cases() {
  std::vector<OpCase> cases;
  add_attention_cases(cases);
  add_cached_attention_cases(cases);
  add_decode_cases(cases);
  add_dense_cases(cases);
  add_sample_cases(cases);
  return cases;
}

// max|a − b| / max(1, max|b|); NaN anywhere → +inf
double max_err(const Vec& a, const Vec& b) {
  double diff = 0, mag = 1;
  for (size_t i = 0; i < a.size(); i++) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    diff = std::max(diff, (double)std::fabs(a[i] - b[i]));
    mag = std::max(mag, (double)std::fabs(b[i]));
  }
  return diff / mag;
}

// The backends under test against the reference (a CUDA backend joins this list when built).
std::vector<const Backend*> backends_under_test() { return {&backend_cpu()}; }

void PrintTo(const OpCase& c, std::ostream* os) { *os << c.name; }

class OpParity : public ::testing::TestWithParam<OpCase> {};

TEST_P(OpParity, MatchesReference) {
  const OpCase& c = GetParam();
  const Outs want = c.run(backend_cpu_ref(), 1.0f);
  for (const Backend* b : backends_under_test()) {
    const Outs got = c.run(*b, 1.0f);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++) {
      double e = max_err(got[i].data, want[i].data);
      EXPECT_LE(e, c.tol) << b->name << " " << c.name << " output '" << got[i].name
                          << "' differs from cpu_ref (error " << e << ")";
    }
  }
  if (!c.accumulates) return;
  // += contract: run(prefilled) − fill == run(zero-filled), for the reference and every backend
  // (1e-4: the reference adds many terms straight into the prefilled buffer, rounding differs)
  std::vector<const Backend*> all = backends_under_test();
  all.push_back(&backend_cpu_ref());
  for (const Backend* b : all) {
    const Outs pre = c.run(*b, 1.0f), zero = c.run(*b, 0.0f);
    for (size_t i = 0; i < pre.size(); i++) {
      if (pre[i].fill.empty()) continue;
      Vec diff = pre[i].data;
      for (size_t j = 0; j < diff.size(); j++) diff[j] -= pre[i].fill[j];
      double e = max_err(diff, zero[i].data);
      EXPECT_LE(e, std::max(c.tol, 1e-4)) << b->name << " " << c.name << " gradient '"
                                          << pre[i].name << "' is not accumulated (+=)";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpParity, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<OpCase>& i) { return i.param.name; });

// ---------------------------------------------------------------- Grad::write
// On every host backend, writing an activation gradient over garbage (NaN) gives exactly what
// adding it into zeros gives, so the model's gradients do not change when it stops zeroing.
TEST(GradWrite, EqualsAddIntoZeros) {
  const int T = 33, C = 40, F = 24;
  const Vec x = randn(T * C, 91), w = randn(F * C, 92), w2 = randn(F * C, 93),
            dy = randn(T * F, 94), dy2 = randn(T * F, 95), g = randn(T * F, 96, 3.0f);
  auto before = [](Grad mode, size_t n) { return mode == Grad::write ? nans(n) : Vec(n); };
  for (const Backend* b : {&backend_cpu_ref(), &backend_cpu()}) {
    auto matmul = [&](Grad mode) {
      Vec dinp = before(mode, T * C), dw(F * C);
      b->matmul_backward(dinp.data(), dw.data(), dy.data(), x.data(), w.data(), T, C, F, mode);
      return std::make_pair(dinp, dw);
    };
    EXPECT_EQ(matmul(Grad::write), matmul(Grad::add)) << b->name << " matmul_backward";
    auto group = [&](Grad mode) {
      Vec dinp = before(mode, T * C), dw(F * C), dw2(F * C);
      float* const dws[] = {dw.data(), dw2.data()};
      const float* const dys[] = {dy.data(), dy2.data()};
      const float* const ws[] = {w.data(), w2.data()};
      const int OC[] = {F, F};
      b->matmul_backward_group(dinp.data(), dws, dys, x.data(), ws, T, C, OC, 2, mode);
      return std::make_tuple(dinp, dw, dw2);
    };
    EXPECT_EQ(group(Grad::write), group(Grad::add)) << b->name << " matmul_backward_group";
    auto swiglu = [&](Grad mode) {
      Vec dgate = before(mode, T * F), dup = before(mode, T * F);
      b->swiglu_backward(dgate.data(), dup.data(), dy.data(), g.data(), dy2.data(), T, F, mode);
      return std::make_pair(dgate, dup);
    };
    EXPECT_EQ(swiglu(Grad::write), swiglu(Grad::add)) << b->name << " swiglu_backward";
  }
}

TEST(GradWrite, GroupNeedsAProjection) {
  const Vec x(4);
  Vec dinp(4);
  for (const Backend* b : {&backend_cpu_ref(), &backend_cpu()}) {
    longctx::testing::expect_error(
        [&] { b->matmul_forward_group(nullptr, x.data(), nullptr, 1, 4, nullptr, 0); },
        {"matmul_forward_group", "G = 0"});
    longctx::testing::expect_error(
        [&] {
          b->matmul_backward_group(dinp.data(), nullptr, nullptr, x.data(), nullptr, 1, 4,
                                   nullptr, 0, Grad::write);
        },
        {"matmul_backward_group", "G = 0"});
  }
}

// ---------------------------------------------------------------- document isolation
// Changing every token of document 2 leaves document 1's outputs and gradients bit-identical,
// and document 2 computed alone equals document 2 inside the packed stream.
void check_isolation(const Backend& b, bool softmax) {
  const int T = 200, split = 90, H = 4, Hkv = 2, D = 64;
  AttnData a({T, H, Hkv, D, 64, {0, split, T}, Alibi::balanced, 0.0f});
  AttnData c = a;  // same document 1, different document 2
  c.s.cu_seqlens = c.p.cu.data(), c.s.slopes = c.slopes.data();
  Vec r = randn(c.q.size(), 99);
  for (size_t i = (size_t)split * H * D; i < c.q.size(); i++) c.q[i] = r[i], c.dout[i] = -r[i];
  for (size_t i = (size_t)split * Hkv * D; i < c.k.size(); i++) c.k[i] = r[i], c.v[i] = 2 * r[i];

  auto run = [&](AttnData& d, Vec& out, Vec& dq, Vec& dk, Vec& dv) {
    out.assign(d.q.size(), NAN);
    Vec lse((size_t)d.s.T * H, NAN);
    dq.assign(d.q.size(), 0), dk.assign(d.k.size(), 0), dv.assign(d.k.size(), 0);
    if (softmax) {
      b.softmax_attn_forward(out.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), d.s);
      b.softmax_attn_backward(dq.data(), dk.data(), dv.data(), d.dout.data(), out.data(),
                              lse.data(), d.q.data(), d.k.data(), d.v.data(), d.s);
    } else {
      b.swat_forward(out.data(), d.q.data(), d.k.data(), d.v.data(), d.s);
      b.swat_backward(dq.data(), dk.data(), dv.data(), d.dout.data(), d.q.data(), d.k.data(),
                      d.v.data(), d.s);
    }
  };
  Vec oa, qa, ka, va, oc, qc, kc, vc;
  run(a, oa, qa, ka, va);
  run(c, oc, qc, kc, vc);
  const size_t eq = (size_t)split * H * D, ek = (size_t)split * Hkv * D;
  EXPECT_TRUE(std::equal(oa.begin(), oa.begin() + eq, oc.begin())) << b.name << ": out leaks";
  EXPECT_TRUE(std::equal(qa.begin(), qa.begin() + eq, qc.begin())) << b.name << ": dq leaks";
  EXPECT_TRUE(std::equal(ka.begin(), ka.begin() + ek, kc.begin())) << b.name << ": dk leaks";
  EXPECT_TRUE(std::equal(va.begin(), va.begin() + ek, vc.begin())) << b.name << ": dv leaks";
  EXPECT_FALSE(std::equal(oa.begin() + eq, oa.end(), oc.begin() + eq)) << "test is vacuous";

  // document 2 alone, as its own stream
  AttnData alone({T - split, H, Hkv, D, 64, {}, Alibi::balanced, 0.0f});
  alone.q.assign(c.q.begin() + eq, c.q.end());
  alone.dout.assign(c.dout.begin() + eq, c.dout.end());
  alone.k.assign(c.k.begin() + ek, c.k.end());
  alone.v.assign(c.v.begin() + ek, c.v.end());
  Vec o2, q2, k2, v2;
  run(alone, o2, q2, k2, v2);
  EXPECT_LE(max_err(Vec(oc.begin() + eq, oc.end()), o2), 1e-6) << b.name;
  EXPECT_LE(max_err(Vec(qc.begin() + eq, qc.end()), q2), 1e-6) << b.name;
  EXPECT_LE(max_err(Vec(kc.begin() + ek, kc.end()), k2), 1e-6) << b.name;
  EXPECT_LE(max_err(Vec(vc.begin() + ek, vc.end()), v2), 1e-6) << b.name;
}

TEST(AttentionDocuments, SwatIsolation) {
  check_isolation(backend_cpu_ref(), false);
  for (const Backend* b : backends_under_test()) check_isolation(*b, false);
}
TEST(AttentionDocuments, SoftmaxIsolation) {
  check_isolation(backend_cpu_ref(), true);
  for (const Backend* b : backends_under_test()) check_isolation(*b, true);
}

TEST(AttentionDocuments, BadCuSeqlensThrow) {
  AttnData a({10, 1, 1, 64, 4, {0, 5, 9}, Alibi::none, 0.0f});  // does not end at T
  Vec out(a.q.size());
  for (const Backend* b : {&backend_cpu_ref(), &backend_cpu()})
    EXPECT_THROW(b->swat_forward(out.data(), a.q.data(), a.k.data(), a.v.data(), a.s), Error);
}

// ---------------------------------------------------------------- slopes and the registry
TEST(AlibiSlopes, MatchDesign) {
  float s[16];
  alibi_slopes(s, Alibi::balanced, 16);  // H 16: magnitudes 2^(−k), k = 1..8
  for (int k = 1; k <= 8; k++) {
    EXPECT_FLOAT_EQ(s[k - 1], -std::ldexp(1.0f, -k));
    EXPECT_FLOAT_EQ(s[8 + k - 1], std::ldexp(1.0f, -k));
  }
  alibi_slopes(s, Alibi::balanced, 4);  // half 2: a_k = 2^(−4k)
  EXPECT_FLOAT_EQ(s[0], -1.0f / 16);
  EXPECT_FLOAT_EQ(s[1], -1.0f / 256);
  EXPECT_FLOAT_EQ(s[2], 1.0f / 16);
  EXPECT_FLOAT_EQ(s[3], 1.0f / 256);
  alibi_slopes(s, Alibi::neg, 8);  // −2^(−(i+1))
  for (int i = 0; i < 8; i++) EXPECT_FLOAT_EQ(s[i], -std::ldexp(1.0f, -(i + 1)));
  alibi_slopes(s, Alibi::pos, 3);  // +2^(−8(i+1)/3)
  for (int i = 0; i < 3; i++) EXPECT_FLOAT_EQ(s[i], std::exp2(-8.0f * (i + 1) / 3));
  alibi_slopes(s, Alibi::none, 5);
  for (int i = 0; i < 5; i++) EXPECT_EQ(s[i], 0.0f);
  EXPECT_THROW(alibi_slopes(s, Alibi::balanced, 5), Error);
}

TEST(Backends, LookupByName) {
  EXPECT_STREQ(backend_get("cpu").name, "cpu");
  EXPECT_STREQ(backend_get("cpu_ref").name, "cpu_ref");
  try {
    backend_get("tpu");
    FAIL() << "unknown backend accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cpu_ref"), std::string::npos) << e.what();
  }
}

}  // namespace

// A cached call (queries = the last T of Tk positions) equals the last T rows of the same
// attention over the whole Tk-token stream, on every backend (what the inference engine relies on).
TEST(AttentionCached, EqualsLastRowsOfFullStream) {
  for (const CachedParams& p : kCachedShapes) {
    CachedData c(p);
    AttnShape full = c.s;
    full.T = p.Tk, full.Tk = 0;
    Vec qfull = randn((size_t)p.Tk * p.H * p.D, 24);
    std::copy(c.q.begin(), c.q.end(), qfull.end() - (long)c.q.size());
    std::vector<const Backend*> all = backends_under_test();
    all.push_back(&backend_cpu_ref());
    for (const Backend* b : all)
      for (bool softmax : {false, true}) {
        if (softmax && p.bias != 0.0f) continue;
        Vec of((size_t)p.Tk * p.H * p.D), lf((size_t)p.Tk * p.H), oc(c.q.size()),
            lc((size_t)p.T * p.H);
        if (softmax) {
          b->softmax_attn_forward(of.data(), lf.data(), qfull.data(), c.k.data(), c.v.data(), full);
          b->softmax_attn_forward(oc.data(), lc.data(), c.q.data(), c.k.data(), c.v.data(), c.s);
        } else {
          b->swat_forward(of.data(), qfull.data(), c.k.data(), c.v.data(), full);
          b->swat_forward(oc.data(), c.q.data(), c.k.data(), c.v.data(), c.s);
        }
        Vec tail(of.end() - (long)oc.size(), of.end());
        EXPECT_LE(max_err(oc, tail), 2e-5) << b->name << (softmax ? " softmax" : " swat") << " T"
                                           << p.T << " Tk" << p.Tk;
      }
  }
}

// decode_attn_forward is one query after its window's keys (DESIGN.md §2.2): sequence i's output
// equals the last row of swat/softmax_attn_forward over a stream of positions 0..p whose last C
// entries are its ring's (so the window is min(w, C)), with the new entry at p; afterwards slot
// p % C of the ring holds the new entry and every other slot is untouched.
TEST(DecodeAttention, EqualsLastRowOfFullStream) {
  std::vector<const Backend*> all = backends_under_test();
  all.push_back(&backend_cpu_ref());
  for (const DecodeCase& c : kDecodeCases) {
    const DecodeData d(c);
    const size_t kvd = d.kvd, qd = size_t(c.H) * c.D;
    for (const Backend* b : all)
      for (bool softmax : {false, true}) {
        const auto r = longctx::testing::run_decode(*b, d, softmax);
        for (int i = 0; i < d.S; i++) {
          const int p = c.pos[i], C = c.capacity[i], n = p + 1;
          const std::string what = std::string(b->name) + (softmax ? " softmax " : " swat ") +
                                   c.name() + " seq " + std::to_string(i);
          Vec k = randn(n * kvd, 50), v = randn(n * kvd, 51), q = randn(n * qd, 52);
          for (int j = std::max(0, p - C + 1); j < p; j++) {
            std::copy_n(d.ring_k[i].begin() + long((j % C) * kvd), kvd, k.begin() + long(j * kvd));
            std::copy_n(d.ring_v[i].begin() + long((j % C) * kvd), kvd, v.begin() + long(j * kvd));
          }
          std::copy_n(d.k_new.begin() + long(i * kvd), kvd, k.begin() + long(p * kvd));
          std::copy_n(d.v_new.begin() + long(i * kvd), kvd, v.begin() + long(p * kvd));
          std::copy_n(d.q.begin() + long(i * qd), qd, q.begin() + long(p * qd));
          AttnShape s = d.shape(d.slopes.data());
          s.T = n, s.window = std::min(c.window, C);
          Vec full(n * qd), lse(size_t(n) * c.H);
          if (softmax) backend_cpu_ref().softmax_attn_forward(full.data(), lse.data(), q.data(), k.data(), v.data(), s);
          else backend_cpu_ref().swat_forward(full.data(), q.data(), k.data(), v.data(), s);
          const Vec want(full.end() - long(qd), full.end()), got(r.out.begin() + long(i * qd), r.out.begin() + long((i + 1) * qd));
          EXPECT_LE(max_err(got, want), 2e-5) << what;
          Vec ring_k = d.ring_k[i], ring_v = d.ring_v[i];
          std::copy_n(d.k_new.begin() + long(i * kvd), kvd, ring_k.begin() + long((p % C) * kvd));
          std::copy_n(d.v_new.begin() + long(i * kvd), kvd, ring_v.begin() + long((p % C) * kvd));
          EXPECT_EQ(r.ring_k[i], ring_k) << what << ": ring keys";
          EXPECT_EQ(r.ring_v[i], ring_v) << what << ": ring values";
        }
      }
  }
}
