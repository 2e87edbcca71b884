// The cuda backend against cpu_ref (issue 5): every op of backend.h on device memory, the memory
// ops, SWAT/softmax attention forward and backward over the kernel's cases (the reference is the
// gradchecked cpu_ref, tests/test_gradcheck.cpp), and a short training run on both backends.
// Skips with a message when no GPU is present (CI compiles it, runs nothing).
//
// Tolerances (error = max|x − x_ref| / max|x_ref|; gradients are pre-filled with small values,
// so a wrong += shows):
//   fp32 pointwise/row ops 1e-5 (atomics reorder sums: 1e-4);
//   GEMM-based ops (matmul, lm_head_xent) 1e-2: inputs rounded to bf16 (2^-9 relative) inside
//   cuBLASLt, fp32 accumulation; SWAT attention and the softmax backward at D 64/128 (bf16 wgmma
//   kernel, bf16 outputs and gradients) 2e-2; the fp32 window kernel (other D, the softmax
//   forward, Tk > T) 1e-4;
//   training loss curve: 2e-2 relative per step;
//   sample_rows (tokens): equal to cpu_ref's, except where u·Σw lies within rounding of a prefix
//   sum (the kernel sums in fp64 in another order): at most 1 such row in 1000, none expected.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "core/rng.h"
#include "decode_cases.h"
#include "kernels/backend.h"
#include "kernels/cpu/sample.h"
#include "model/model.h"
#include "model/params.h"
#include "test_util.h"
#include "train/optimizer.h"
#include "train/trainer.h"

using namespace longctx;

namespace {

using Vec = std::vector<float>;
using I32 = std::vector<int32_t>;

Vec randn(size_t n, uint64_t seed, float scale = 1) { return longctx::testing::randn<float>(n, seed, scale); }

double max_err(const Vec& a, const Vec& b) {
  double diff = 0, mag = 1e-6;
  for (size_t i = 0; i < a.size(); i++) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    diff = std::max(diff, double(std::fabs(a[i] - b[i])));
    mag = std::max(mag, double(std::fabs(b[i])));
  }
  return diff / mag;
}

// Runs `op` on both backends. Arrays in `in` are inputs (copied to the device); arrays in `out`
// are outputs or gradients, passed with their current contents (so += is checked) and compared.
struct Arrays {
  std::vector<Vec> f;
  std::vector<I32> i;
};
using Op = std::function<void(const Backend&, std::vector<float*>&, std::vector<int32_t*>&)>;

// Returns the error of each float array (inputs too: an op must not write its inputs).
std::vector<double> compare(const Arrays& a, const Op& op) {
  const Backend& ref = backend_cpu_ref();
  const Backend& cu = backend_cuda();
  Arrays host = a;
  std::vector<float*> hf;
  std::vector<int32_t*> hi;
  for (auto& v : host.f) hf.push_back(v.data());
  for (auto& v : host.i) hi.push_back(v.data());
  op(ref, hf, hi);
  std::vector<Buffer<float>> df;
  std::vector<Buffer<int32_t>> di;
  std::vector<float*> pf;
  std::vector<int32_t*> pi;
  for (auto& v : a.f) df.push_back(Buffer<float>::from_host(cu, v.data(), v.size()));
  for (auto& v : a.i) di.push_back(Buffer<int32_t>::from_host(cu, v.data(), v.size()));
  for (auto& b : df) pf.push_back(b.data());
  for (auto& b : di) pi.push_back(b.data());
  op(cu, pf, pi);
  std::vector<double> err;
  for (size_t k = 0; k < df.size(); k++) err.push_back(max_err(df[k].to_host(), host.f[k]));
  return err;
}

void expect_all_le(const std::vector<double>& err, double tol, const std::string& what) {
  for (size_t k = 0; k < err.size(); k++)
    EXPECT_LE(err[k], tol) << what << ": array " << k << " differs from cpu_ref (error " << err[k] << ")";
}

// Without a GPU the backend is a clear error, never a crash (`train --device cuda` on CI).
TEST(CudaBackend, ClearErrorWithoutAGpu) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present";
  const std::string e = longctx::testing::error_of([] { backend_get("cuda"); });
  EXPECT_TRUE(e.find("no CUDA device") != std::string::npos ||
              e.find("no CUDA backend") != std::string::npos) << e;
}

TEST(CudaOps, Memory) {
  SKIP_WITHOUT_GPU();
  const Backend& be = backend_cuda();
  const Vec x = randn(100003, 1), y = randn(100003, 2);
  Buffer<float> bx = Buffer<float>::from_host(be, x.data(), x.size());
  Buffer<float> by = Buffer<float>::from_host(be, y.data(), y.size());
  double s = 0, s2 = 0;
  for (float v : x) s += v, s2 += double(v) * v;
  EXPECT_NEAR(be.sum(bx.data(), bx.size()), s, 1e-9 * s2);
  EXPECT_NEAR(be.sum_squares(bx.data(), bx.size()), s2, 1e-9 * s2);
  EXPECT_EQ(be.sum(bx.data(), bx.size()), be.sum(bx.data(), bx.size())) << "sum is not deterministic";
  be.add(by.data(), bx.data(), by.size());
  be.scale(by.data(), by.size(), 0.5f);
  const Vec got = by.to_host();
  for (size_t i = 0; i < got.size(); i += 997) EXPECT_FLOAT_EQ(got[i], (y[i] + x[i]) * 0.5f);
  Buffer<float> copy = bx;
  EXPECT_EQ(copy.to_host(), x);
  be.zero(copy.data(), copy.size());
  EXPECT_EQ(be.sum_squares(copy.data(), copy.size()), 0.0);
  EXPECT_GE(be.peak_bytes(), 3 * x.size() * sizeof(float));
}

TEST(CudaOps, Matmul) {
  SKIP_WITHOUT_GPU();
  const int T = 67, C = 96, OC = 130;
  // the second call of a shape reuses the first's cuBLASLt plan
  Arrays a{{Vec(size_t(T) * OC, NAN), randn(size_t(T) * C, 1), randn(size_t(OC) * C, 2), Vec(size_t(T) * OC, NAN)}, {}};
  expect_all_le(compare(a, [&](const Backend& b, auto& f, auto&) {
                  b.matmul_forward(f[0], f[1], f[2], T, C, OC);
                  b.matmul_forward(f[3], f[1], f[2], T, C, OC);
                }), 1e-2, "matmul_forward");
  Arrays g{{randn(size_t(T) * C, 3), randn(size_t(OC) * C, 4), randn(size_t(T) * OC, 5), randn(size_t(T) * C, 1),
            randn(size_t(OC) * C, 2)}, {}};
  expect_all_le(compare(g, [&](const Backend& b, auto& f, auto&) {
                  b.matmul_backward(f[0], f[1], f[2], f[3], f[4], T, C, OC, Grad::add);
                }), 1e-2, "matmul_backward");
  g.f[0] = Vec(size_t(T) * C, NAN);  // Grad::write: dinp's old contents are never read
  expect_all_le(compare(g, [&](const Backend& b, auto& f, auto&) {
                  b.matmul_backward(f[0], f[1], f[2], f[3], f[4], T, C, OC, Grad::write);
                }), 1e-2, "matmul_backward (write)");
}

// q/k/v-like projections of one input (GQA widths): forward, then backward adding into dinp
// or writing it (NaN before), one weight gradient not asked for.
TEST(CudaOps, MatmulGroup) {
  SKIP_WITHOUT_GPU();
  const int T = 67, C = 96, G = 3, OC[G] = {128, 32, 32};
  Arrays a{{Vec(size_t(T) * OC[0], NAN), Vec(size_t(T) * OC[1], NAN), Vec(size_t(T) * OC[2], NAN),
            randn(size_t(T) * C, 1), randn(size_t(OC[0]) * C, 2), randn(size_t(OC[1]) * C, 3),
            randn(size_t(OC[2]) * C, 4)}, {}};
  expect_all_le(compare(a, [&](const Backend& b, auto& f, auto&) {
                  float* const out[] = {f[0], f[1], f[2]};
                  const float* const w[] = {f[4], f[5], f[6]};
                  b.matmul_forward_group(out, f[3], w, T, C, OC, G);
                }), 1e-2, "matmul_forward_group");
  for (Grad mode : {Grad::add, Grad::write}) {
    Arrays g{{mode == Grad::add ? randn(size_t(T) * C, 5) : Vec(size_t(T) * C, NAN),
              randn(size_t(OC[0]) * C, 6), randn(size_t(OC[1]) * C, 7), randn(size_t(OC[2]) * C, 8),
              randn(size_t(T) * OC[0], 9), randn(size_t(T) * OC[1], 10), randn(size_t(T) * OC[2], 11),
              a.f[3], a.f[4], a.f[5], a.f[6]}, {}};
    expect_all_le(compare(g, [&](const Backend& b, auto& f, auto&) {
                    float* const dw[] = {f[1], nullptr, f[3]};
                    const float* const dout[] = {f[4], f[5], f[6]};
                    const float* const w[] = {f[8], f[9], f[10]};
                    b.matmul_backward_group(f[0], dw, dout, f[7], w, T, C, OC, G, mode);
                  }), 1e-2, mode == Grad::add ? "matmul_backward_group" : "matmul_backward_group (write)");
  }
}

TEST(CudaOps, EmbeddingRmsnormRopeSwiglu) {
  SKIP_WITHOUT_GPU();
  const int T = 77, C = 96, V = 50, nh = 3, D = 32;
  I32 tok(T), pos(T);
  for (int t = 0; t < T; t++) tok[t] = (t * 7) % V, pos[t] = 4000 + 37 * t;  // repeats; large angles
  Arrays e{{Vec(size_t(T) * C, NAN), randn(size_t(V) * C, 1), randn(size_t(V) * C, 2), randn(size_t(T) * C, 3)}, {tok}};
  expect_all_le(compare(e, [&](const Backend& b, auto& f, auto& i) {
                  b.embedding_forward(f[0], i[0], f[1], T, C);
                  b.embedding_backward(f[2], f[3], i[0], T, C);
                }), 1e-5, "embedding");
  Arrays r{{Vec(size_t(T) * C, NAN), Vec(T, NAN), randn(size_t(T) * C, 1), randn(C, 2), randn(size_t(T) * C, 3),
            randn(C, 4), randn(size_t(T) * C, 5)}, {}};
  expect_all_le(compare(r, [&](const Backend& b, auto& f, auto&) {
                  b.rmsnorm_forward(f[0], f[1], f[2], f[3], T, C, 1e-5f);
                  b.rmsnorm_backward(f[4], f[5], f[6], f[2], f[3], f[1], T, C);
                }), 1e-4, "rmsnorm");
  Arrays p{{randn(size_t(T) * nh * D, 1), randn(size_t(T) * nh * D, 2)}, {pos}};
  expect_all_le(compare(p, [&](const Backend& b, auto& f, auto& i) {
                  b.rope_forward(f[0], i[0], T, nh, D, 10000.0f);
                  b.rope_backward(f[1], i[0], T, nh, D, 10000.0f);
                }), 1e-5, "rope");
  Arrays s{{Vec(size_t(T) * C, NAN), randn(size_t(T) * C, 1), randn(size_t(T) * C, 2), randn(size_t(T) * C, 3),
            randn(size_t(T) * C, 4), randn(size_t(T) * C, 5)}, {}};
  expect_all_le(compare(s, [&](const Backend& b, auto& f, auto&) {
                  b.swiglu_forward(f[0], f[1], f[2], T, C);
                  b.swiglu_backward(f[3], f[4], f[5], f[1], f[2], T, C, Grad::add);
                }), 1e-5, "swiglu");
  s.f[0] = randn(size_t(T) * C, 6);             // (h: not an output of this call)
  s.f[3] = s.f[4] = Vec(size_t(T) * C, NAN);  // Grad::write: never read
  expect_all_le(compare(s, [&](const Backend& b, auto& f, auto&) {
                  b.swiglu_backward(f[3], f[4], f[5], f[1], f[2], T, C, Grad::write);
                }), 1e-5, "swiglu (write)");
}

// dx / dweight may be null (not written); T beyond one token block of the cuda backend (8192)
// and V not a multiple of its 4096-column chunk take the edge paths.
void check_lm_head_xent(int T, int C, int V, bool with_dx, bool with_dweight) {
  I32 y(T);
  for (int t = 0; t < T; t++) y[t] = t % 9 == 0 ? -1 : (t * 131) % V;
  Arrays x{{Vec(T, NAN), randn(size_t(T) * C, 1, 1e-3f), randn(size_t(V) * C, 2, 1e-4f), randn(size_t(T) * C, 3),
            randn(size_t(V) * C, 4, 0.1f)}, {y}};
  expect_all_le(compare(x, [&](const Backend& b, auto& f, auto& i) {
                  b.lm_head_xent(f[0], with_dx ? f[1] : nullptr, with_dweight ? f[2] : nullptr, f[3], f[4], i[0], T,
                                 C, V, 0.5f);
                }), 1e-2, "lm_head_xent T" + std::to_string(T) + " V" + std::to_string(V) + " dx " +
                              std::to_string(with_dx) + " dweight " + std::to_string(with_dweight));
}

// sample_rows draws cpu_ref's tokens (greedy and sampled rows, u at 0 and just below 1, ties at
// the max, −inf logits). A differing token is allowed only where the host's prefix sums between
// the two tokens lie within 1e-10·Σw of u·Σw (a rounding tie: fp64 sums of 50K terms in two
// orders differ by ~1e-14 relative, 5e-12 at worst), at most 1 row in 1000.
TEST(CudaOps, SampleRowsMatchesReference) {
  SKIP_WITHOUT_GPU();
  const Backend& cu = backend_cuda();
  const int rows = 400;
  int boundary = 0;
  for (int V : {1, 7, 1000, 8192, 50000}) {
    Vec logits = randn(size_t(rows) * V, 101 + uint64_t(V), 3.0f), u(rows), temp(rows);
    Rng r{uint64_t(V)};
    const float temps[] = {0.0f, 1e-3f, 0.7f, 1.0f, 2.0f};
    for (int i = 0; i < rows; i++) {
      temp[i] = temps[i % 5];
      u[i] = i % 7 == 1 ? 0.0f : i % 7 == 2 ? std::nextafter(1.0f, 0.0f) : r.uniform();
      float* l = logits.data() + size_t(i) * V;
      if (V > 2 && i % 3 == 0) l[0] = l[V - 1] = *std::max_element(l, l + V);
      if (V > 4 && i % 4 == 0) l[1] = l[V - 2] = -INFINITY;
    }
    std::vector<int32_t> want(rows);
    backend_cpu_ref().sample_rows(want.data(), logits.data(), u.data(), temp.data(), rows, V);
    Buffer<int32_t> tokens(cu, rows);
    cu.sample_rows(tokens.data(), Buffer<float>::from_host(cu, logits.data(), logits.size()).data(),
                   Buffer<float>::from_host(cu, u.data(), rows).data(),
                   Buffer<float>::from_host(cu, temp.data(), rows).data(), rows, V);
    const std::vector<int32_t> got = tokens.to_host();
    for (int i = 0; i < rows; i++) {
      if (got[i] == want[i]) continue;
      ASSERT_TRUE(temp[i] > 0 && got[i] >= 0 && got[i] < V)
          << "V " << V << " row " << i << ": token " << got[i] << ", cpu_ref " << want[i];
      std::vector<double> w(static_cast<size_t>(V));
      const double total = softmax_weights(w.data(), logits.data() + size_t(i) * V, V, temp[i]);
      const int lo = std::min(got[i], want[i]), hi = std::max(got[i], want[i]);
      double prefix = 0.0, gap = 0.0;  // largest |Σ_{j≤k} w_j − u·Σw| over lo ≤ k < hi
      for (int j = 0; j < hi; j++) {
        prefix += w[size_t(j)];
        if (j >= lo) gap = std::max(gap, std::fabs(prefix - double(u[i]) * total));
      }
      EXPECT_LE(gap, 1e-10 * total) << "V " << V << " row " << i << ": token " << got[i]
                                    << ", cpu_ref " << want[i] << " is not a rounding tie";
      boundary++;
    }
  }
  EXPECT_LE(boundary, 5 * rows / 1000) << "rounding ties are ~1e-13 likely per row";
}

TEST(CudaOps, LmHeadXentAndAdamw) {
  SKIP_WITHOUT_GPU();
  check_lm_head_xent(70, 64, 5000, true, true);  // two vocabulary chunks
  check_lm_head_xent(70, 64, 5000, false, true);
  check_lm_head_xent(70, 64, 5000, true, false);
  check_lm_head_xent(70, 64, 5000, false, false);
  check_lm_head_xent(8192 + 5, 16, 4196, true, true);  // two token blocks (the second of 5 rows)
  Arrays o{{randn(1000, 1), randn(1000, 2), randn(1000, 3, 0.1f), randn(1000, 4, 0.1f)}, {}};
  for (auto& v : o.f[3]) v = v * v;
  expect_all_le(compare(o, [&](const Backend& b, auto& f, auto&) {
                  for (int step = 1; step <= 3; step++)
                    b.adamw_update(f[0], f[1], f[2], f[3], 1000, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
                }), 1e-5, "adamw");
}

// ---- attention: the lab's cases (bench/cuda/swat_lab.cu) plus fallbacks
struct AttnCase {
  int T, H, Hkv, D, window;
  I32 cu;
  Alibi alibi;
  float bias;
  int Tk = 0;
};

void check_attention(const AttnCase& c, bool softmax) {
  const std::string name = std::string(softmax ? "softmax" : "swat") + " T" + std::to_string(c.T) + " H" +
                           std::to_string(c.H) + "/" + std::to_string(c.Hkv) + " D" + std::to_string(c.D) +
                           " w" + std::to_string(c.window) + " Tk" + std::to_string(c.Tk);
  const int Tk = std::max(c.T, c.Tk);
  const size_t nq = size_t(c.T) * c.H * c.D, nk = size_t(Tk) * c.Hkv * c.D, nl = size_t(c.T) * c.H;
  Vec slopes(c.H);
  alibi_slopes(slopes.data(), c.alibi, c.H);
  // the wgmma kernel: SWAT forward and backward, softmax backward (its forward is fp32)
  const bool wgmma = (c.D == 64 || c.D == 128) && c.Tk <= c.T;
  const double tol_fwd = wgmma && !softmax ? 2e-2 : 1e-4, tol_bwd = wgmma ? 2e-2 : 1e-4;
  // f: q k v out lse dout dq dk dv slopes; i: cu_seqlens
  Arrays a{{randn(nq, 1), randn(nk, 2), randn(nk, 3), Vec(nq, NAN), Vec(nl, NAN), randn(nq, 4),
            randn(nq, 5, 0.1f), randn(nk, 6, 0.1f), randn(nk, 7, 0.1f), slopes},
           {c.cu.empty() ? I32{0, c.T} : c.cu}};
  auto op = [&](const Backend& b, std::vector<float*>& f, std::vector<int32_t*>& i) {
    AttnShape s;
    s.T = c.T, s.Tk = c.Tk, s.H = c.H, s.Hkv = c.Hkv, s.D = c.D, s.window = c.window;
    if (!c.cu.empty()) s.cu_seqlens = i[0], s.n_docs = int(c.cu.size()) - 1;
    s.slopes = f[9], s.bias = softmax ? 0.0f : c.bias, s.scale = 1.0f / std::sqrt(float(c.D));
    if (softmax) b.softmax_attn_forward(f[3], f[4], f[0], f[1], f[2], s);
    else b.swat_forward(f[3], f[0], f[1], f[2], s);
    if (c.Tk > c.T) return;  // forward only
    if (softmax) b.softmax_attn_backward(f[6], f[7], f[8], f[5], f[3], f[4], f[0], f[1], f[2], s);
    else b.swat_backward(f[6], f[7], f[8], f[5], f[0], f[1], f[2], s);
  };
  std::vector<double> err = compare(a, op);
  if (!softmax) err[4] = 0;  // lse: softmax only
  if (c.Tk > c.T) err[6] = err[7] = err[8] = 0;
  const std::vector<double> fwd(err.begin(), err.begin() + 6), bwd(err.begin() + 6, err.end());
  expect_all_le(fwd, tol_fwd, name);
  expect_all_le(bwd, tol_bwd, name + " backward (arrays dq dk dv slopes)");
}

const std::vector<AttnCase>& attn_cases() {
  using A = Alibi;
  static const std::vector<AttnCase> cases = {
      {1, 1, 1, 64, 1, {}, A::none, 0.0f},
      {67, 2, 2, 64, 1, {}, A::neg, 0.0f},                       // w = 1
      {200, 2, 2, 64, 63, {}, A::balanced, 0.0f},                // w 63
      {300, 4, 4, 128, 100, {0, 65, 129, 300}, A::neg, -1.0f},    // D 128, docs, bias
      {257, 2, 2, 64, 256, {}, A::balanced, 0.3f},               // w 256
      {530, 8, 2, 64, 1024, {0, 50, 51, 530}, A::balanced, 0.0f}, // GQA 8/2, w ≥ T, 1-token doc
      {130, 4, 2, 128, INT32_MAX, {}, A::pos, -0.5f},             // "infinite" window
      {400, 4, 2, 128, 1, {0, 100, 400}, A::neg, 0.0f},           // D 128, w 1, docs, GQA
      {700, 4, 1, 128, 256, {0, 300, 301, 700}, A::balanced, 0.0f}, // D 128, w 256, GQA 4/1
      {1100, 4, 2, 64, 63, {0, 10, 600, 1100}, A::neg, 0.0f},     // many key tiles, docs
      {150, 2, 2, 48, 40, {0, 70, 150}, A::pos, 0.0f},            // D 48: window kernel
      {90, 3, 1, 32, 30, {}, A::neg, 0.2f},                       // D 32, GQA 3/1
      {40, 2, 2, 64, 16, {}, A::balanced, 0.0f, 100},             // Tk > T (after a KV cache)
  };
  return cases;
}

TEST(CudaAttention, SwatMatchesReference) {
  SKIP_WITHOUT_GPU();
  for (const AttnCase& c : attn_cases()) check_attention(c, false);
}

TEST(CudaAttention, SoftmaxMatchesReference) {
  SKIP_WITHOUT_GPU();
  for (const AttnCase& c : attn_cases()) check_attention(c, true);
}

// Queries after a KV cache (Tk > T, the engine's decode and chunked prefill; forward only): T 1
// (decode: the kernel splits the keys over CTAs), T 64 and 512 (query tiles; 512 after 1023 keys
// is swat-340m's prefill chunk), odd T; windows 1, 63, 256, 1024, ≥ Tk; D 64, 128, 96, 30 (not a
// multiple of 4: 4-byte copies), 200 and 256; GQA. fp32 kernel: tolerance 1e-4.
TEST(CudaAttention, AfterKvCacheMatchesReference) {
  SKIP_WITHOUT_GPU();
  using A = Alibi;
  const std::vector<AttnCase> cases = {
      {1, 16, 16, 64, 1024, {}, A::none, 0.0f, 1024},     // swat-340m decode
      {1, 8, 2, 128, 63, {}, A::balanced, -1.0f, 2048},
      {1, 4, 4, 96, 256, {}, A::neg, 0.3f, 300},
      {1, 4, 1, 64, 1, {}, A::pos, 0.0f, 500},             // w 1
      {1, 6, 3, 96, INT32_MAX, {}, A::balanced, 0.0f, 2048},  // w ≥ Tk
      {1, 2, 2, 30, 100, {}, A::neg, 0.0f, 129},           // D 30
      {64, 4, 2, 64, 1024, {}, A::balanced, 0.0f, 1087},
      {64, 4, 4, 128, 256, {}, A::neg, -0.5f, 2048},
      {64, 2, 1, 96, 63, {}, A::none, 0.0f, 100},
      {512, 4, 1, 64, 1024, {}, A::balanced, 0.0f, 1535},  // prefill chunk after 1023 keys
      {512, 2, 2, 128, 2048, {}, A::pos, 0.0f, 2048},      // w ≥ Tk
      {512, 2, 2, 96, 1, {}, A::none, 0.2f, 600},          // w 1
      {37, 3, 1, 200, 50, {}, A::neg, 0.0f, 90},           // D 200, T not a multiple of 8
      {5, 2, 2, 256, 300, {}, A::balanced, 0.0f, 700},     // D 256
  };
  for (const AttnCase& c : cases)
    for (bool softmax : {false, true}) check_attention(c, softmax);
}

// A decode batch over KV rings (decode_attn_forward: the engine's decode step, one launch per
// layer) against cpu_ref: outputs within the fp32 kernel's 1e-4, the rings after the call (the
// stored new entries) exact. 1–4 sequences split their keys over CTAs (then the merge); 40
// sequences × 16 heads fill the GPU unsplit. Rings wrapped or not, C < w (softmax-full growing
// cache), C > w, GQA, w 1, D 64/128/96/30 (30: 4-byte copies), rings 16-byte aligned or not.
TEST(CudaAttention, DecodeBatchMatchesReference) {
  SKIP_WITHOUT_GPU();
  using longctx::testing::DecodeCase;
  using A = Alibi;
  std::vector<int32_t> pos40, cap40(40, 1024);
  for (int i = 0; i < 40; i++) pos40.push_back(37 * i * i % 5000);  // 0 .. 4958, half below 1024
  const std::vector<DecodeCase> cases = {
      {16, 16, 64, 1024, {1500}, {1024}, A::balanced, 0.0f},  // swat-340m, batch 1, wrapped
      {16, 16, 64, 1024, pos40, cap40, A::balanced, 0.0f},    // swat-340m, batch 40
      {8, 2, 128, 63, {0, 62, 63, 700}, {63, 63, 63, 63}, A::neg, -1.0f},
      {4, 4, 96, 1 << 30, {5, 300, 511}, {512, 512, 512}, A::none, 0.0f},  // C < w
      {6, 3, 30, 50, {120, 7, 49}, {80, 64, 50}, A::pos, 0.2f},            // C > w, D 30
      {2, 1, 64, 1, {0, 33}, {1, 1}, A::neg, 0.0f},                        // w 1
  };
  for (const DecodeCase& c : cases) {
    const longctx::testing::DecodeData d(c);
    for (bool softmax : {false, true}) {
      const auto want = longctx::testing::run_decode(backend_cpu_ref(), d, softmax);
      for (size_t misalign : {0, 1}) {
        std::string what = (softmax ? "softmax " : "swat ") + c.name();
        if (misalign) what += " misaligned rings";
        const auto got = longctx::testing::run_decode(backend_cuda(), d, softmax, misalign);
        EXPECT_LE(max_err(got.out, want.out), 1e-4) << what;
        for (int i = 0; i < d.S; i++) {
          EXPECT_EQ(got.ring_k[i], want.ring_k[i]) << what << ": ring keys of seq " << i;
          EXPECT_EQ(got.ring_v[i], want.ring_v[i]) << what << ": ring values of seq " << i;
        }
      }
    }
  }
}

// ---- end to end: the same model, init and batches on cpu and cuda; AdamW steps; the loss
// curves agree within bf16 tolerance, and the model's host checks still fire.
std::vector<double> train_losses(const Backend& be, const Config& c, int steps) {
  Model m(c, be);
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 5);
  m.params.upload(init.data(), init.size());
  const int B = 2, S = 96;
  m.reserve(B * S);
  AdamW opt;
  std::vector<double> losses;
  for (int step = 0; step < steps; step++) {
    const Batch batch = random_batch(B, S, c.vocab_size, 100 + step % 2);
    const TokenBatch tb = batch_view(batch);
    be.zero(m.grads.data(), m.grads.size());
    const int64_t n = batch.n_targets();
    losses.push_back(model_forward(m, tb, nullptr, 1.0f / float(n)) / double(n));
    model_backward(m, tb);
    const double norm = grad_norm(be, m.grads.data(), m.grads.size());
    grad_clip(be, m.grads.data(), m.grads.size(), norm, 1.0f);
    adamw_step(be, opt, m.params.data(), m.grads.data(), m.layout, 3e-3f);
  }
  return losses;
}

TEST(CudaTrain, LossCurveMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (AttnKind kind : {AttnKind::swat, AttnKind::softmax}) {
    Config c = config_preset("tiny");
    c.vocab_size = 512, c.num_hidden_layers = 2, c.window = 32, c.attention = kind;
    const std::vector<double> cpu = train_losses(backend_cpu(), c, 8);
    const std::vector<double> gpu = train_losses(backend_cuda(), c, 8);
    for (size_t i = 0; i < cpu.size(); i++)
      EXPECT_NEAR(gpu[i], cpu[i], 2e-2 * cpu[i]) << to_string(kind) << " step " << i;
    EXPECT_LT(gpu.back(), gpu.front()) << "the GPU run does not learn";
  }
}

// Activation recompute (Model::recompute) gives the same loss and gradients as stored
// activations (not bit-identical: BLAS kernels depend on the buffers' alignment, and the cuda
// window kernel's dk/dv atomics reorder sums).
TEST(Recompute, SameGradientsAsStoredActivations) {
  std::vector<const Backend*> backends = {&backend_cpu()};
  if (cuda_available()) backends.push_back(&backend_cuda());
  for (const Backend* be : backends)
    for (AttnKind kind : {AttnKind::swat, AttnKind::softmax}) {
      Config c = config_preset("tiny");
      c.vocab_size = 300, c.num_hidden_layers = 3, c.window = 16, c.attention = kind;
      const Batch batch = random_batch(2, 40, c.vocab_size, 7);
      std::vector<float> init(param_layout(c).total);
      param_init(init.data(), param_layout(c), c, 3);
      auto run = [&](bool recompute, double* loss) {
        Model m(c, *be);
        m.recompute = recompute;
        m.params.upload(init.data(), init.size());
        m.reserve(80);
        *loss = model_forward(m, batch_view(batch), nullptr, 0.01f);
        model_backward(m, batch_view(batch));
        return std::make_pair(m.grads.to_host(), m.activation_bytes());
      };
      double l0 = 0, l1 = 0;
      const auto [g0, bytes0] = run(false, &l0);
      const auto [g1, bytes1] = run(true, &l1);
      EXPECT_LT(bytes1, bytes0) << "recompute keeps as many activations";
      EXPECT_NEAR(l0, l1, 1e-5 * std::fabs(l0)) << be->name;
      // cuda: the window backward adds dK/dV with fp32 atomics, so two runs differ in summation
      // order (measured up to 1.1e-3 on an H200 for softmax); a recompute bug is O(1).
      EXPECT_LE(max_err(g1, g0), be->device ? 3e-3 : 1e-5) << be->name << " " << to_string(kind);
    }
}

TEST(CudaTrain, BadTokenIsAClearError) {
  SKIP_WITHOUT_GPU();
  Config c = config_preset("tiny");
  c.vocab_size = 64, c.num_hidden_layers = 1;
  Model m(c, backend_cuda());
  m.reserve(8);
  Batch batch = random_batch(1, 8, c.vocab_size, 1);
  batch.tokens[3] = 64;
  EXPECT_THROW(model_forward(m, batch_view(batch), nullptr), Error);
}

}  // namespace
