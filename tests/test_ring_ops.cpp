// Block attention at arbitrary positions (src/kernels/cpu/attn_block.h), the ring-attention kernel:
//  - the queries of a row subset against the keys split into blocks, merged by log-sum-exp, equal
//    the op table's softmax attention on the whole stream (forward, lse, and the backward summed
//    over blocks), for the reference and the fast version;
//  - fast vs reference per block (odd sizes, several tiles, GQA, documents, windows, empty blocks);
//  - the cuda backend's block ops (attn_block.cu) vs the reference: per block, and the blockwise
//    pipeline (its merge included) vs the whole stream; skipped without a GPU;
//  - finite differences of the whole blockwise pipeline in double precision;
//  - bad rows are clear errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

#include "dist/ring_attention.h"
#include "kernels/backend.h"
#include "kernels/cpu/attn_block.h"
#include "kernels/cpu/ref.h"
#include "test_util.h"

using namespace longctx;
using longctx::testing::randn;
using longctx::testing::stream_shape;

namespace {

struct Case {
  const char* name;
  int H, Hkv, D, window;
  std::vector<int32_t> cu;          // documents of the stream
  int nblocks;                      // key blocks (rows dealt out in zig-zag chunks)
  std::vector<int> qblocks;         // which blocks' rows are the queries
};

// Zig-zag rows (ring_attention.h): block i holds chunks i and 2N−1−i of every document.
std::vector<std::vector<int32_t>> zigzag_rows(const std::vector<int32_t>& cu, int N) {
  std::vector<int> ranks(static_cast<size_t>(N));
  std::iota(ranks.begin(), ranks.end(), 0);
  return ring_zigzag(ranks, cu).rows;
}

template <class F>
std::vector<F> gather(const std::vector<F>& x, const std::vector<int32_t>& rows, size_t width) {
  std::vector<F> out(rows.size() * width);
  for (size_t i = 0; i < rows.size(); i++)
    std::copy(x.begin() + long(rows[i] * width), x.begin() + long((rows[i] + 1) * width),
              out.begin() + long(i * width));
  return out;
}

std::vector<int32_t> doc_begins(const std::vector<int32_t>& cu, const std::vector<int32_t>& rows) {
  std::vector<int32_t> db;
  for (int32_t r : rows) db.push_back(*(std::upper_bound(cu.begin(), cu.end(), r) - 1));
  return db;
}

// The block ops of a backend's table called on host arrays: inputs (rows and slopes included)
// copied into its memory, outputs (and the accumulated gradients) copied back.
struct OnBackend {
  const Backend& be;

  struct Args {  // rows and shape in be's memory
    Buffer<int32_t> qi, qd, ki;
    Buffer<float> slopes;
    AttnRows qr, kr;
    AttnShape s;
  };
  Args args(const AttnRows& qr, const AttnRows& kr, const AttnShape& s) const {
    Args a{Buffer<int32_t>::from_host(be, qr.idx, size_t(qr.n)),
           Buffer<int32_t>::from_host(be, qr.doc_begin, size_t(qr.n)),
           Buffer<int32_t>::from_host(be, kr.idx, size_t(kr.n)),
           Buffer<float>::from_host(be, s.slopes, s.slopes ? size_t(s.H) : 0), {}, {}, s};
    a.qr = AttnRows{a.qi.data(), a.qd.data(), qr.n};
    a.kr = AttnRows{a.ki.data(), nullptr, kr.n};
    a.s.slopes = s.slopes ? a.slopes.data() : nullptr;
    return a;
  }
  Buffer<float> up(const float* x, size_t n) const { return Buffer<float>::from_host(be, x, n); }

  void forward(float* out, float* lse, const float* q, const float* k, const float* v,
               const AttnRows& qr, const AttnRows& kr, const AttnShape& s) const {
    const size_t nq = size_t(qr.n) * s.H, nk = size_t(kr.n) * s.Hkv * s.D;
    const Args a = args(qr, kr, s);
    Buffer<float> o(be, nq * s.D), l(be, nq);
    be.attn_block_forward(o.data(), l.data(), up(q, nq * s.D).data(), up(k, nk).data(),
                          up(v, nk).data(), a.qr, a.kr, a.s);
    o.download(out, nq * s.D);
    l.download(lse, nq);
  }
  void backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                const float* lse, const float* q, const float* k, const float* v,
                const AttnRows& qr, const AttnRows& kr, const AttnShape& s) const {
    const size_t nq = size_t(qr.n) * s.H, nk = size_t(kr.n) * s.Hkv * s.D;
    const Args a = args(qr, kr, s);
    Buffer<float> gq = up(dq, nq * s.D), gk = up(dk, nk), gv = up(dv, nk);
    be.attn_block_backward(gq.data(), gk.data(), gv.data(), up(dout, nq * s.D).data(),
                           up(out, nq * s.D).data(), up(lse, nq).data(), up(q, nq * s.D).data(),
                           up(k, nk).data(), up(v, nk).data(), a.qr, a.kr, a.s);
    gq.download(dq, nq * s.D);
    gk.download(dk, nk);
    gv.download(dv, nk);
  }
  void merge(float* out, float* lse, const float* out_b, const float* lse_b, int rows, int H,
             int D) const {
    const size_t n = size_t(rows) * H;
    Buffer<float> o = up(out, n * D), l = up(lse, n);
    be.attn_block_merge(o.data(), l.data(), up(out_b, n * D).data(), up(lse_b, n).data(), rows,
                        H, D);
    o.download(out, n * D);
    l.download(lse, n);
  }
};

// Forward + backward of the queries `qrows` against key blocks `krows` by the block ops fwd, bwd,
// merge (ref:: instantiated with F, cpu::, or a backend's table), in the ring's order: merge
// partials, then each block's backward with the final out/lse. dk/dv land at the stream rows of
// each block.
template <class F, class Fwd, class Bwd, class Merge>
void blockwise(std::vector<F>& out, std::vector<F>& lse, std::vector<F>& dq, std::vector<F>& dk,
               std::vector<F>& dv, const std::vector<F>& q, const std::vector<F>& k,
               const std::vector<F>& v, const std::vector<F>& dout,
               const std::vector<int32_t>& qrows, const std::vector<std::vector<int32_t>>& krows,
               const AttnShape& s, Fwd fwd, Bwd bwd, Merge merge) {
  const size_t qd = size_t(s.H) * s.D, kvd = size_t(s.Hkv) * s.D, nq = qrows.size();
  const std::vector<int32_t> qdb = doc_begins(std::vector<int32_t>(s.cu_seqlens, s.cu_seqlens + s.n_docs + 1), qrows);
  const AttnRows qr{qrows.data(), qdb.data(), int(nq)};
  const std::vector<F> ql = gather(q, qrows, qd), dol = gather(dout, qrows, qd);
  out.assign(nq * qd, F(0));
  lse.assign(nq * s.H, F(-INFINITY));
  std::vector<F> ob(nq * qd), lb(nq * s.H);
  for (const auto& kb : krows) {
    const AttnRows kr{kb.data(), nullptr, int(kb.size())};
    fwd(ob.data(), lb.data(), ql.data(), gather(k, kb, kvd).data(), gather(v, kb, kvd).data(), qr, kr, s);
    merge(out.data(), lse.data(), ob.data(), lb.data(), int(nq), s.H, s.D);
  }
  dq.assign(nq * qd, F(0));
  dk.assign(k.size(), F(0));
  dv.assign(v.size(), F(0));
  for (const auto& kb : krows) {
    const AttnRows kr{kb.data(), nullptr, int(kb.size())};
    std::vector<F> dkb(kb.size() * kvd, F(0)), dvb(kb.size() * kvd, F(0));
    bwd(dq.data(), dkb.data(), dvb.data(), dol.data(), out.data(), lse.data(), ql.data(),
        gather(k, kb, kvd).data(), gather(v, kb, kvd).data(), qr, kr, s);
    for (size_t i = 0; i < kb.size(); i++)
      for (size_t c = 0; c < kvd; c++) {
        dk[size_t(kb[i]) * kvd + c] += dkb[i * kvd + c];
        dv[size_t(kb[i]) * kvd + c] += dvb[i * kvd + c];
      }
  }
}

double max_err(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, m = 1;
  for (size_t i = 0; i < a.size(); i++) {
    e = std::max(e, std::fabs(double(a[i]) - b[i]));
    m = std::max(m, std::fabs(double(b[i])));
  }
  return e / m;
}

AttnShape shape_of(const Case& c, const std::vector<float>& slopes) {
  return stream_shape(c.cu, c.H, c.Hkv, c.D, c.window, slopes.data());
}

std::vector<Case> cases() {
  return {
      {"one_doc_mha", 2, 2, 16, 1 << 30, {0, 77}, 3, {0, 1, 2}},
      {"docs_gqa", 4, 2, 16, 1 << 30, {0, 20, 33, 34, 70, 101}, 3, {1}},
      {"window_gqa4", 4, 1, 32, 9, {0, 50, 130}, 2, {0, 1}},
      {"odd_head_dim", 2, 1, 12, 1 << 30, {0, 5, 40}, 4, {2, 3}},
      {"short_docs_empty_chunks", 2, 2, 16, 1 << 30, {0, 3, 4, 9, 30}, 4, {0, 3}},
      // several query tiles (64) and key tiles (256) per block
      {"multi_tile", 2, 1, 16, 1 << 30, {0, 700, 1500}, 2, {0, 1}},
  };
}

class RingOps : public ::testing::TestWithParam<Case> {};

// Blockwise (ref and fast) == the op table's softmax attention on the whole stream.
TEST_P(RingOps, BlockwiseEqualsWholeStream) {
  const Case& c = GetParam();
  const int T = c.cu.back();
  const size_t qd = size_t(c.H) * c.D, kvd = size_t(c.Hkv) * c.D;
  std::vector<float> slopes(size_t(c.H));
  alibi_slopes(slopes.data(), Alibi::neg, c.H);
  const AttnShape s = shape_of(c, slopes);
  const auto q = randn<float>(T * qd, 1, 0.5f), k = randn<float>(T * kvd, 2, 0.5f),
             v = randn<float>(T * kvd, 3), dout = randn<float>(T * qd, 4);
  std::vector<float> out(T * qd), lse(size_t(T) * c.H), dq(T * qd, 0.0f), dk(T * kvd, 0.0f),
      dv(T * kvd, 0.0f);
  const Backend& ref = backend_cpu_ref();
  ref.softmax_attn_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s);
  ref.softmax_attn_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                            q.data(), k.data(), v.data(), s);

  const auto blocks = zigzag_rows(c.cu, c.nblocks);
  std::vector<int32_t> qrows;
  for (int b : c.qblocks) qrows.insert(qrows.end(), blocks[size_t(b)].begin(), blocks[size_t(b)].end());
  std::sort(qrows.begin(), qrows.end());
  // dk/dv of the whole stream only get the contributions of the query subset: compare against a
  // whole-stream backward whose dout is zero outside the subset.
  std::vector<float> dsub(T * qd, 0.0f), dk_s(T * kvd, 0.0f), dv_s(T * kvd, 0.0f), dq_s(T * qd, 0.0f);
  for (int32_t r : qrows) std::copy(dout.begin() + long(r * qd), dout.begin() + long((r + 1) * qd), dsub.begin() + long(r * qd));
  ref.softmax_attn_backward(dq_s.data(), dk_s.data(), dv_s.data(), dsub.data(), out.data(), lse.data(),
                            q.data(), k.data(), v.data(), s);

  for (const char* who : {"ref", "fast", "cuda"}) {
    std::vector<float> bo, bl, bdq, bdk, bdv;
    const std::string w = who;
    if (w == "ref") {
      blockwise<float>(bo, bl, bdq, bdk, bdv, q, k, v, dout, qrows, blocks, s,
                       ref::attn_block_forward<float>, ref::attn_block_backward<float>,
                       attn_block_merge<float>);
    } else if (w == "fast") {
      blockwise<float>(bo, bl, bdq, bdk, bdv, q, k, v, dout, qrows, blocks, s, cpu::attn_block_forward,
                       cpu::attn_block_backward, attn_block_merge<float>);
    } else {
      if (!cuda_available()) continue;  // RingOpsCuda.* report the skip
      const OnBackend gpu{backend_cuda()};
      blockwise<float>(bo, bl, bdq, bdk, bdv, q, k, v, dout, qrows, blocks, s,
                       [&](auto... a) { gpu.forward(a...); }, [&](auto... a) { gpu.backward(a...); },
                       [&](auto... a) { gpu.merge(a...); });
    }
    // fp32 throughout; cuda: expf, other summation orders and fp32 atomics for dk/dv
    const double tol_o = w == "cuda" ? 1e-5 : 2e-6, tol_g = w == "cuda" ? 2e-5 : 1e-5;
    EXPECT_LT(max_err(bo, gather(out, qrows, qd)), tol_o) << who << " out";
    EXPECT_LT(max_err(bl, gather(lse, qrows, size_t(c.H))), tol_o) << who << " lse";
    EXPECT_LT(max_err(bdq, gather(dq, qrows, qd)), tol_g) << who << " dq";
    EXPECT_LT(max_err(bdk, dk_s), tol_g) << who << " dk";
    EXPECT_LT(max_err(bdv, dv_s), tol_g) << who << " dv";
  }
}

// A backend's block ops == reference on single blocks, gradients pre-filled (the += contract),
// blocks that see nothing (lse = −inf, out = 0); max error / max(1, |reference|) below tol_o for
// out and lse, tol_g for the gradients.
void per_block_vs_reference(const Case& c, const Backend& be, double tol_o, double tol_g) {
  const int T = c.cu.back();
  const size_t qd = size_t(c.H) * c.D, kvd = size_t(c.Hkv) * c.D;
  std::vector<float> slopes(size_t(c.H));
  alibi_slopes(slopes.data(), Alibi::neg, c.H);
  const AttnShape s = shape_of(c, slopes);
  const auto blocks = zigzag_rows(c.cu, c.nblocks);
  const auto q = randn<float>(T * qd, 5, 0.5f), k = randn<float>(T * kvd, 6, 0.5f),
             v = randn<float>(T * kvd, 7), dout = randn<float>(T * qd, 8);
  const OnBackend ops{be};
  for (size_t qb = 0; qb < blocks.size(); qb++)
    for (size_t kb = 0; kb < blocks.size(); kb++) {
      const std::string at = std::string(c.name) + " on " + be.name + " block " +
                             std::to_string(qb) + "x" + std::to_string(kb);
      const auto& qrows = blocks[qb];
      const auto& krows = blocks[kb];
      const auto qdb = doc_begins(c.cu, qrows);
      const AttnRows qr{qrows.data(), qdb.data(), int(qrows.size())}, kr{krows.data(), nullptr, int(krows.size())};
      const auto ql = gather(q, qrows, qd), kl = gather(k, krows, kvd), vl = gather(v, krows, kvd),
                 dl = gather(dout, qrows, qd);
      const size_t nq = qrows.size(), nk = krows.size();
      std::vector<float> o_r(nq * qd, NAN), l_r(nq * c.H, NAN), o_f(nq * qd, NAN), l_f(nq * c.H, NAN);
      ref::attn_block_forward(o_r.data(), l_r.data(), ql.data(), kl.data(), vl.data(), qr, kr, s);
      ops.forward(o_f.data(), l_f.data(), ql.data(), kl.data(), vl.data(), qr, kr, s);
      for (size_t i = 0; i < l_r.size(); i++) {
        if (std::isinf(l_r[i])) {
          ASSERT_TRUE(std::isinf(l_f[i]) && l_f[i] < 0) << at << " row " << i << ": lse " << l_f[i];
          l_r[i] = l_f[i] = 0;  // compare the rest numerically
        }
      }
      EXPECT_LT(max_err(o_f, o_r), tol_o) << at << " out";
      EXPECT_LT(max_err(l_f, l_r), tol_o) << at << " lse";
      // Backward with the block's own (finite where visible) out/lse; rows that see nothing skip.
      std::vector<float> lse_use = l_r;
      for (size_t i = 0; i < lse_use.size(); i++) if (lse_use[i] == 0) lse_use[i] = 0.5f;
      const auto fq = randn<float>(nq * qd, 9), fk = randn<float>(nk * kvd, 10), fv = randn<float>(nk * kvd, 11);
      std::vector<float> dq_r = fq, dk_r = fk, dv_r = fv, dq_f = fq, dk_f = fk, dv_f = fv;
      ref::attn_block_backward(dq_r.data(), dk_r.data(), dv_r.data(), dl.data(), o_r.data(), lse_use.data(),
                               ql.data(), kl.data(), vl.data(), qr, kr, s);
      ops.backward(dq_f.data(), dk_f.data(), dv_f.data(), dl.data(), o_r.data(), lse_use.data(),
                   ql.data(), kl.data(), vl.data(), qr, kr, s);
      EXPECT_LT(max_err(dq_f, dq_r), tol_g) << at << " dq";
      EXPECT_LT(max_err(dk_f, dk_r), tol_g) << at << " dk";
      EXPECT_LT(max_err(dv_f, dv_r), tol_g) << at << " dv";
    }
}

TEST_P(RingOps, FastEqualsReferencePerBlock) {
  per_block_vs_reference(GetParam(), backend_cpu(), 2e-6, 1e-5);
}

// The cuda backend's kernels (attn_block.cu), fp32: expf and other summation orders, fp32 atomics
// for dk/dv.
class RingOpsCuda : public ::testing::TestWithParam<Case> {};

TEST_P(RingOpsCuda, CudaEqualsReferencePerBlock) {
  SKIP_WITHOUT_GPU();
  per_block_vs_reference(GetParam(), backend_cuda(), 1e-5, 2e-5);
}

// Merging partials on the device == the host merge, lse = −inf on either side included.
TEST(RingOpsCudaMerge, EqualsHostMerge) {
  SKIP_WITHOUT_GPU();
  const int rows = 37, H = 3, D = 20;
  const size_t n = size_t(rows) * H;
  auto out = randn<float>(n * D, 40), out_b = randn<float>(n * D, 41), lse = randn<float>(n, 42),
       lse_b = randn<float>(n, 43);
  for (size_t r = 0; r < n; r += 5) lse[r] = -INFINITY;
  for (size_t r = 0; r < n; r += 7) lse_b[r] = -INFINITY;
  auto out_h = out, lse_h = lse;
  attn_block_merge(out_h.data(), lse_h.data(), out_b.data(), lse_b.data(), rows, H, D);
  OnBackend{backend_cuda()}.merge(out.data(), lse.data(), out_b.data(), lse_b.data(), rows, H, D);
  for (size_t r = 0; r < n; r++)
    if (std::isinf(lse_h[r])) {
      ASSERT_TRUE(std::isinf(lse[r]) && lse[r] < 0) << "row " << r;
      lse[r] = lse_h[r] = 0;
    }
  EXPECT_LT(max_err(out, out_h), 1e-6);
  EXPECT_LT(max_err(lse, lse_h), 1e-6);
}

TEST(RingOpsCudaErrors, HeadDimAbove128) {
  SKIP_WITHOUT_GPU();
  AttnShape s;
  s.D = 160;
  const AttnRows none;
  longctx::testing::expect_error(
      [&] { backend_cuda().attn_block_forward(nullptr, nullptr, nullptr, nullptr, nullptr, none, none, s); },
      {"attn_block_forward", "head dim 160 is outside [1, 128]"});
}

INSTANTIATE_TEST_SUITE_P(Cases, RingOps, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });
INSTANTIATE_TEST_SUITE_P(Cases, RingOpsCuda, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// Finite differences (double) of L = Σ out ⊙ R, out = the merged blockwise attention of a
// query subset: checks forward merge and block backward together.
TEST(RingOpsGradcheck, BlockwisePipeline) {
  const Case c{"gc", 4, 2, 8, 1 << 30, {0, 9, 23, 24, 40}, 3, {0, 2}};
  const int T = c.cu.back();
  const size_t qd = size_t(c.H) * c.D, kvd = size_t(c.Hkv) * c.D;
  std::vector<float> slopes(size_t(c.H));
  alibi_slopes(slopes.data(), Alibi::balanced, c.H);
  const AttnShape s = shape_of(c, slopes);
  const auto blocks = zigzag_rows(c.cu, c.nblocks);
  std::vector<int32_t> qrows = blocks[0];
  qrows.insert(qrows.end(), blocks[2].begin(), blocks[2].end());
  std::sort(qrows.begin(), qrows.end());
  auto q = randn<double>(T * qd, 21, 0.7), k = randn<double>(T * kvd, 22, 0.7), v = randn<double>(T * kvd, 23);
  const auto R = randn<double>(T * qd, 24);  // dout = R on every stream row; only qrows used
  std::vector<double> out, lse, dq, dk, dv;
  auto run = [&] {
    blockwise<double>(out, lse, dq, dk, dv, q, k, v, R, qrows, blocks, s,
                      ref::attn_block_forward<double>, ref::attn_block_backward<double>,
                      attn_block_merge<double>);
  };
  auto loss = [&] {
    run();
    const auto Rl = gather(R, qrows, qd);
    double L = 0;
    for (size_t i = 0; i < out.size(); i++) L += out[i] * Rl[i];
    return L;
  };
  run();
  // dq is per query row; scatter to the stream so the check perturbs the stream's q.
  std::vector<double> dq_s(T * qd, 0.0), dk_g = dk, dv_g = dv;
  for (size_t i = 0; i < qrows.size(); i++)
    std::copy(dq.begin() + long(i * qd), dq.begin() + long((i + 1) * qd), dq_s.begin() + long(qrows[i] * qd));
  struct { const char* name; std::vector<double>* x; const std::vector<double>* g; } checks[] = {
      {"dq", &q, &dq_s}, {"dk", &k, &dk_g}, {"dv", &v, &dv_g}};
  for (auto& ch : checks) {
    const auto u = randn<double>(ch.x->size(), 30);
    const double h = 1e-5;
    const auto x0 = *ch.x;
    for (size_t i = 0; i < x0.size(); i++) (*ch.x)[i] = x0[i] + h * u[i];
    const double lp = loss();
    for (size_t i = 0; i < x0.size(); i++) (*ch.x)[i] = x0[i] - h * u[i];
    const double lm = loss();
    *ch.x = x0;
    double analytic = 0;
    for (size_t i = 0; i < u.size(); i++) analytic += (*ch.g)[i] * u[i];
    const double numeric = (lp - lm) / (2 * h);
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::max(1.0, std::fabs(numeric))) << ch.name;
  }
}

TEST(RingOpsErrors, BadRows) {
  const int32_t idx[3] = {0, 5, 4}, db[3] = {0, 0, 0}, late[1] = {3}, dbl[1] = {4};
  std::vector<float> x(3 * 16, 1.0f), o(3 * 16), l(3);
  AttnShape s;
  s.H = s.Hkv = 1;
  s.D = 16;
  s.window = 100;
  const AttnRows sorted{idx, db, 2}, unsorted{idx, db, 3}, bad_doc{late, dbl, 1};
  longctx::testing::expect_error([&] { cpu::attn_block_forward(o.data(), l.data(), x.data(), x.data(), x.data(), unsorted, sorted, s); },
                                 {"attn_block_forward", "query row indices must increase", "row 2"});
  longctx::testing::expect_error([&] { ref::attn_block_forward(o.data(), l.data(), x.data(), x.data(), x.data(), sorted, unsorted, s); },
                                 {"key row indices must increase"});
  longctx::testing::expect_error([&] { cpu::attn_block_backward(o.data(), o.data(), o.data(), x.data(), x.data(), l.data(), x.data(), x.data(), x.data(), bad_doc, sorted, s); },
                                 {"attn_block_backward", "document start 4"});
  s.Hkv = 2;
  s.H = 3;
  longctx::testing::expect_error([&] { cpu::attn_block_forward(o.data(), l.data(), x.data(), x.data(), x.data(), sorted, sorted, s); },
                                 {"multiple of Hkv"});
}

}  // namespace
