// Finite-difference checks of every backward op, in double precision: the reference ops
// (kernels/cpu/ref.h) are templates, instantiated here with F = double. For a scalar loss
// L = Σ out ⊙ R (R random), each input x gets a directional check along a random u:
//     (L(x + h u) − L(x − h u)) / 2h   ≈   ⟨∂L/∂x, u⟩      (central differences, h = 1e-5)
// Truncation error O(h²) ≈ 1e-10 and rounding ≈ 1e-16/h ≈ 1e-11 relative, so a 1e-6 relative
// tolerance passes a correct gradient and fails any wrong term. The fast float backend is tied
// to the reference by test_ops; AdamW (no backward) is checked against hand-computed steps.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "kernels/backend.h"
#include "kernels/cpu/ref.h"
#include "test_util.h"

using namespace longctx;

namespace {

using Vd = std::vector<double>;

Vd randn(size_t n, uint64_t seed, double scale = 1) { return longctx::testing::randn<double>(n, seed, scale); }

double dot(const Vd& a, const Vd& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

// Checks ⟨grad, u⟩ against central differences of loss() when x moves along u (x is restored).
void check_direction(const char* what, Vd& x, const Vd& grad, const std::function<double()>& loss,
                     uint64_t seed) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const double h = 1e-5;
  const Vd u = randn(x.size(), seed);
  const Vd x0 = x;
  for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] + h * u[i];
  const double lp = loss();
  for (size_t i = 0; i < x.size(); i++) x[i] = x0[i] - h * u[i];
  const double lm = loss();
  x = x0;
  const double numeric = (lp - lm) / (2 * h), analytic = dot(grad, u);
  EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::fabs(numeric)))
      << what << ": analytic directional derivative " << analytic << ", finite differences "
      << numeric;
}

TEST(Gradcheck, Matmul) {
  const int T = 5, C = 7, OC = 3;
  Vd x = randn(T * C, 1), w = randn(OC * C, 2), R = randn(T * OC, 3), out(T * OC);
  auto loss = [&] {
    ref::matmul_forward(out.data(), x.data(), w.data(), T, C, OC);
    return dot(out, R);
  };
  Vd dx(T * C), dw(OC * C);
  ref::matmul_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), T, C, OC, Grad::add);
  check_direction("matmul dinp", x, dx, loss, 10);
  check_direction("matmul dweight", w, dw, loss, 11);
}

TEST(Gradcheck, Embedding) {
  const int V = 6, T = 9, C = 4;
  std::vector<int32_t> tok = {0, 3, 3, 5, 1, 3, 0, 2, 5};  // repeats
  Vd wte = randn(V * C, 1), R = randn(T * C, 2), out(T * C);
  auto loss = [&] {
    ref::embedding_forward(out.data(), tok.data(), wte.data(), T, C);
    return dot(out, R);
  };
  Vd dwte(V * C);
  ref::embedding_backward(dwte.data(), R.data(), tok.data(), T, C);
  check_direction("embedding dwte", wte, dwte, loss, 10);
}

TEST(Gradcheck, RMSNorm) {
  const int T = 4, C = 10;
  Vd x = randn(T * C, 1, 2.0), w = randn(C, 2), R = randn(T * C, 3), out(T * C), rstd(T);
  auto loss = [&] {
    ref::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), T, C, 1e-6f);
    return dot(out, R);
  };
  loss();
  Vd dx(T * C), dw(C);
  ref::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), T, C);
  check_direction("rmsnorm dinp", x, dx, loss, 10);
  check_direction("rmsnorm dweight", w, dw, loss, 11);
}

TEST(Gradcheck, Rope) {
  const int T = 5, nh = 2, D = 8;
  std::vector<int32_t> pos = {0, 1, 7, 1000, 2000000};
  Vd x = randn(T * nh * D, 1), R = randn(T * nh * D, 2), y;
  auto loss = [&] {
    y = x;
    ref::rope_forward(y.data(), pos.data(), T, nh, D, 10000.0f);
    return dot(y, R);
  };
  Vd dx = R;  // rope_backward transforms in place
  ref::rope_backward(dx.data(), pos.data(), T, nh, D, 10000.0f);
  check_direction("rope dx", x, dx, loss, 10);
}

TEST(Gradcheck, SwiGLU) {
  const int T = 3, F = 11;
  Vd g = randn(T * F, 1, 2.0), u = randn(T * F, 2), R = randn(T * F, 3), h(T * F);
  auto loss = [&] {
    ref::swiglu_forward(h.data(), g.data(), u.data(), T, F);
    return dot(h, R);
  };
  Vd dg(T * F), du(T * F);
  ref::swiglu_backward(dg.data(), du.data(), R.data(), g.data(), u.data(), T, F, Grad::add);
  check_direction("swiglu dgate", g, dg, loss, 10);
  check_direction("swiglu dup", u, du, loss, 11);
}

TEST(Gradcheck, LmHeadXent) {
  const int T = 6, C = 5, V = 9;
  const float dloss = 0.7f;
  std::vector<int32_t> tg = {3, -1, 0, 8, 8, -1};
  Vd x = randn(T * C, 1), w = randn(V * C, 2), losses(T);
  auto loss = [&] {
    ref::lm_head_xent<double>(losses.data(), nullptr, nullptr, x.data(), w.data(), tg.data(), T,
                              C, V, dloss);
    double s = 0;
    for (double l : losses) s += double(dloss) * l;
    return s;
  };
  Vd dx(T * C), dw(V * C);
  ref::lm_head_xent(losses.data(), dx.data(), dw.data(), x.data(), w.data(), tg.data(), T, C, V,
                    dloss);
  check_direction("lm_head_xent dx", x, dx, loss, 10);
  check_direction("lm_head_xent dweight", w, dw, loss, 11);
  EXPECT_EQ(losses[1], 0.0);  // no target
}

// Attention: GQA (4 query heads on 2 KV heads), two documents, window smaller than a document,
// ALiBi slopes and (SWAT) a sigmoid bias.
struct AttnCheck {
  int T = 13, H = 4, Hkv = 2, D = 6, window = 4;
  std::vector<int32_t> cu = {0, 8, 13};
  float slopes[4];
  AttnShape s;
  Vd q, k, v, R;
  AttnCheck(Alibi alibi, float bias) {
    alibi_slopes(slopes, alibi, H);
    s.T = T, s.H = H, s.Hkv = Hkv, s.D = D, s.window = window;
    s.cu_seqlens = cu.data(), s.n_docs = 2, s.slopes = slopes, s.bias = bias;
    s.scale = 1.0f / std::sqrt(float(D));
    q = randn(T * H * D, 1), k = randn(T * Hkv * D, 2), v = randn(T * Hkv * D, 3);
    R = randn(T * H * D, 4);
  }
};

TEST(Gradcheck, SwatAttention) {
  for (Alibi a : {Alibi::balanced, Alibi::neg, Alibi::pos, Alibi::none}) {
    AttnCheck c(a, a == Alibi::balanced ? -0.8f : 0.0f);
    Vd out(c.q.size());
    auto loss = [&] {
      ref::swat_forward(out.data(), c.q.data(), c.k.data(), c.v.data(), c.s);
      return dot(out, c.R);
    };
    Vd dq(c.q.size()), dk(c.k.size()), dv(c.v.size());
    ref::swat_backward(dq.data(), dk.data(), dv.data(), c.R.data(), c.q.data(), c.k.data(),
                       c.v.data(), c.s);
    check_direction("swat dq", c.q, dq, loss, 10);
    check_direction("swat dk", c.k, dk, loss, 11);
    check_direction("swat dv", c.v, dv, loss, 12);
  }
}

TEST(Gradcheck, SoftmaxAttention) {
  for (Alibi a : {Alibi::none, Alibi::neg}) {
    AttnCheck c(a, 0.0f);
    Vd out(c.q.size()), lse(c.T * c.H);
    auto loss = [&] {
      ref::softmax_attn_forward(out.data(), lse.data(), c.q.data(), c.k.data(), c.v.data(), c.s);
      return dot(out, c.R);
    };
    loss();
    Vd dq(c.q.size()), dk(c.k.size()), dv(c.v.size());
    ref::softmax_attn_backward(dq.data(), dk.data(), dv.data(), c.R.data(), out.data(), lse.data(),
                               c.q.data(), c.k.data(), c.v.data(), c.s);
    check_direction("softmax dq", c.q, dq, loss, 10);
    check_direction("softmax dk", c.k, dk, loss, 11);
    check_direction("softmax dv", c.v, dv, loss, 12);
  }
}

// AdamW against steps worked out by hand (bias-corrected, decoupled weight decay):
//  step 1: p 1, g 0.5, m = v = 0, lr 0.1, b1 0.9, b2 0.999, eps 1e-8, wd 0.01:
//          m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25, p = 1 − 0.1 (0.5/(0.5 + 1e-8) + 0.01) = 0.899000002
//  step 3: p 2, g −1, m 0.1, v 0.2, lr 0.01, b1 0.9, b2 0.95, eps 1e-8, wd 0.1:
//          m = −0.01, v = 0.24, m̂ = −0.01/0.271, v̂ = 0.24/0.142625,
//          p = 2 − 0.01 (m̂/(√v̂ + 1e-8) + 0.2) = 1.9982844611186865
template <class Step>
void check_adamw(const char* who, Step step) {
  double p = 1, g = 0.5, m = 0, v = 0;
  step(&p, &g, &m, &v, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
  EXPECT_NEAR(m, 0.05, 1e-7) << who;
  EXPECT_NEAR(v, 0.00025, 1e-8) << who;  // 1 − 0.999f is 1e-3 only to ~1e-5
  EXPECT_NEAR(p, 0.899000002, 1e-6) << who;
  p = 2, g = -1, m = 0.1, v = 0.2;
  step(&p, &g, &m, &v, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
  EXPECT_NEAR(m, -0.01, 1e-7) << who;
  EXPECT_NEAR(v, 0.24, 1e-7) << who;
  EXPECT_NEAR(p, 1.9982844611186865, 1e-6) << who;
}

TEST(Gradcheck, AdamWStep) {
  check_adamw("ref<double>", [](double* p, double* g, double* m, double* v, float lr, float b1,
                                float b2, float eps, float wd, int step) {
    ref::adamw_update(p, g, m, v, 1, lr, b1, b2, eps, wd, step);
  });
  for (const Backend* b : {&backend_cpu_ref(), &backend_cpu()})
    check_adamw(b->name, [b](double* p, double* g, double* m, double* v, float lr, float b1,
                             float b2, float eps, float wd, int step) {
      float pf = float(*p), gf = float(*g), mf = float(*m), vf = float(*v);
      b->adamw_update(&pf, &gf, &mf, &vf, 1, lr, b1, b2, eps, wd, step);
      *p = pf, *m = mf, *v = vf;
    });
}

}  // namespace
