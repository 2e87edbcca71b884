// MPI test driver (run by CTest under mpirun; see tests/CMakeLists.txt). One mode per run:
//   comm       point-to-point with tags, all-reduce (sizes 0..1M, bit-identical on all ranks), barrier
//   cp         context-parallel SWAT/softmax attention by halo exchange, forward and backward, vs
//              one process on the whole stream (documents, GQA, w > a rank's slice, empty parts)
//   dp         data-parallel training step: each rank half the batch, token-level loss, gradient
//              all-reduce, AdamW == one process on the whole batch
//   hang       rank 1 never sends: rank 0 must abort the job with a timeout message (no hang)
//   die        rank 1 is killed (SIGKILL) while rank 0 waits for it: the job ends, no hang
//   bytes      halo exchange vs ring exchange of whole KV slices: bytes sent, JSON lines on stdout
// Exit code 0 on success; on a mismatch, a message and exit code 1 (every rank).
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "dist/cp_attention.h"
#include "model/params.h"
#include "mpi_util.h"
#include "train/optimizer.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

// ---- comm ------------------------------------------------------------------------------------

void test_comm(Comm& c) {
  const int P = c.size(), me = c.rank();
  // Ring with two tags in flight; messages arrive per (peer, tag) in order.
  {
    const int next = (me + 1) % P, prev = (me + P - 1) % P;
    std::vector<float> a(5, float(me)), b(7, float(10 * me)), ra(5), rb(7);
    std::vector<CommRequest> rq;
    rq.push_back(c.irecv(rb.data(), rb.size(), prev, 2));
    rq.push_back(c.irecv(ra.data(), ra.size(), prev, 1));
    rq.push_back(c.isend(a.data(), a.size(), next, 1));
    rq.push_back(c.isend(b.data(), b.size(), next, 2));
    c.wait_all(rq);
    if (ra[4] != float(prev) || rb[6] != float(10 * prev)) {
      mismatch(c, fmt::format("p2p ring: got {} {}", ra[4], rb[6]));
    }
  }
  // All-reduce: exact against the rank-order sum every rank can compute itself.
  for (size_t n : {size_t(0), size_t(1), size_t(2), size_t(P + 1), size_t(1000), size_t(1) << 20}) {
    std::vector<std::vector<float>> all(static_cast<size_t>(P));
    for (int r = 0; r < P; r++) {
      all[size_t(r)] = randn<float>(n, 1234 + uint64_t(r));
    }
    std::vector<float> buf = all[size_t(me)], want(n);
    for (size_t i = 0; i < n; i++) {
      float acc = all[0][i];
      for (int r = 1; r < P; r++) acc += all[size_t(r)][i];
      want[i] = acc;
    }
    c.allreduce_sum(buf.data(), n);
    if (n && std::memcmp(buf.data(), want.data(), n * sizeof(float)) != 0) {
      mismatch(c, fmt::format("allreduce n={}: not bit-identical to the rank-order sum (rel err "
                              "{:.3g})", n, rel_err(buf.data(), want.data(), n)));
    }
  }
  c.barrier();
  // A message of the wrong length is an Error naming peer and tag, not silent truncation.
  if (P >= 2 && me < 2) {
    std::vector<float> x(4, 1.0f), y(4);
    for (size_t sent : {size_t(4), size_t(2)}) {  // receiver expects 3: longer, then shorter
      std::string msg;
      try {
        CommRequest r = me == 0 ? c.isend(x.data(), sent, 1, 9) : c.irecv(y.data(), 3, 0, 9);
        c.wait(r);
      } catch (const Error& e) {
        msg = e.what();
      }
      const bool want_error = me == 1;
      if (want_error != !msg.empty() || (want_error && msg.find("tag 9") == std::string::npos)) {
        mismatch(c, fmt::format("length check (sent {}): '{}'", sent, msg));
      }
      if (me == 1 && sent == 4) std::printf("length check: %s\n", msg.c_str());
    }
  }
  c.barrier();
  if (me == 0) std::printf("comm: p2p, allreduce (%d ranks, bit-identical), barrier ok\n", P);
}

// ---- cp attention ----------------------------------------------------------------------------

struct CpCase {
  const char* name;
  bool softmax;
  int H, Hkv, D, window;
  std::vector<int32_t> cu;      // documents of the whole stream
  std::vector<int64_t> bounds;  // split over the ranks (size P+1); empty = even split
};

void run_cp_case(Comm& c, const Backend& be, const CpCase& k) {
  const int P = c.size(), me = c.rank();
  const int S = k.cu.back();
  CpPlacement pl;
  for (int r = 0; r < P; r++) pl.ranks.push_back(r);
  pl.bounds = k.bounds;
  if (pl.bounds.empty())
    for (int r = 0; r <= P; r++) pl.bounds.push_back(int64_t(S) * r / P);
  pl.cu_seqlens = k.cu;
  const size_t qd = size_t(k.H) * k.D, kvd = size_t(k.Hkv) * k.D;

  // Every rank draws the same whole-stream tensors.
  const auto q = randn<float>(S * qd, 42, 0.5f), kk = randn<float>(S * kvd, 43, 0.5f),
             v = randn<float>(S * kvd, 44), dout = randn<float>(S * qd, 45);
  std::vector<float> slopes(size_t(k.H));
  alibi_slopes(slopes.data(), k.softmax ? Alibi::neg : Alibi::balanced, k.H);

  // Single process on the whole stream.
  const AttnShape s =
      stream_shape(k.cu, k.H, k.Hkv, k.D, k.window, slopes.data(), k.softmax ? 0.0f : -0.5f);
  std::vector<float> out(S * qd), lse(size_t(S) * k.H), dq(S * qd, 0.0f), dk(S * kvd, 0.0f),
      dv(S * kvd, 0.0f);
  if (k.softmax) {
    be.softmax_attn_forward(out.data(), lse.data(), q.data(), kk.data(), v.data(), s);
    be.softmax_attn_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(),
                             q.data(), kk.data(), v.data(), s);
  } else {
    be.swat_forward(out.data(), q.data(), kk.data(), v.data(), s);
    be.swat_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), kk.data(), v.data(), s);
  }

  // This rank's part.
  const int64_t b = pl.bounds[size_t(me)], e = pl.bounds[size_t(me) + 1];
  const size_t T = size_t(e - b);
  CpAttnArgs a;
  a.softmax = k.softmax;
  a.attn = s;
  a.tag = 7;
  CpAttnState st;
  CpScratch scr;
  std::vector<float> pout(T * qd), plse(T * size_t(k.H)), pdq(T * qd, 0.0f), pdk(T * kvd, 0.0f),
      pdv(T * kvd, 0.0f);
  const int64_t bytes0 = c.stats.bytes_sent;
  cp_attention_forward(c, be, pl, me, a, st, scr, pout.data(), plse.data(), q.data() + b * qd,
                       kk.data() + b * kvd, v.data() + b * kvd);
  const int64_t fwd_bytes = c.stats.bytes_sent - bytes0;
  cp_attention_backward(c, be, pl, a, st, scr, pdq.data(), pdk.data(), pdv.data(),
                        dout.data() + b * qd, pout.data(), plse.data(), q.data() + b * qd,
                        kk.data() + b * kvd, v.data() + b * kvd);
  const int64_t bwd_bytes = c.stats.bytes_sent - bytes0 - fwd_bytes;
  if (fwd_bytes != cp_halo_bytes(st.plan, k.Hkv, k.D) ||
      bwd_bytes != cp_halo_bytes(st.plan, k.Hkv, k.D, true)) {
    mismatch(c, fmt::format("{} bytes: fwd {} bwd {} planned {} {}", k.name, fwd_bytes, bwd_bytes,
                            cp_halo_bytes(st.plan, k.Hkv, k.D),
                            cp_halo_bytes(st.plan, k.Hkv, k.D, true)));
  }
  const std::string tag = std::string(k.name) + " part " + std::to_string(me);
  expect_close(c, tag + " out", pout.data(), out.data() + b * qd, T * qd);
  if (k.softmax) expect_close(c, tag + " lse", plse.data(), lse.data() + b * k.H, T * k.H);
  expect_close(c, tag + " dq", pdq.data(), dq.data() + b * qd, T * qd);
  expect_close(c, tag + " dk", pdk.data(), dk.data() + b * kvd, T * kvd);
  expect_close(c, tag + " dv", pdv.data(), dv.data() + b * kvd, T * kvd);
  std::vector<float> tot(size_t(P) + 1, 0.0f);  // [0]: bytes; [1 + r]: halo rows of part r
  tot[0] = float(fwd_bytes);
  tot[size_t(me) + 1] = float(st.plan.halo_rows());
  c.allreduce_sum(tot.data(), tot.size());
  if (me == 0) {
    std::string rows;
    for (int r = 0; r < P; r++) {
      if (r) rows += ',';
      rows += std::to_string(int(tot[size_t(r) + 1]));
    }
    std::printf("cp %-37s S=%d w=%d parts=%d halo rows [%s]: forward halo bytes (all ranks) %.0f\n",
                k.name, S, k.window, P, rows.c_str(), double(tot[0]));
  }
}

void test_cp(Comm& c) {
  const Backend& be = backend_get("cpu");
  const int P = c.size();
  std::vector<CpCase> cases = {
      // One document over all ranks, MHA.
      {"swat 1 doc", false, 2, 2, 16, 8, {96}, {}},
      // Several documents; GQA; boundaries near the part edges (inside halos).
      {"swat docs+gqa", false, 4, 2, 16, 12, {0, 20, 33, 34, 70, 101}, {}},
      {"softmax docs+gqa", true, 4, 2, 16, 12, {0, 20, 33, 34, 70, 101}, {}},
  };
  for (auto& k : cases)
    if (k.cu.size() == 1) k.cu.insert(k.cu.begin(), 0);
  if (P == 3) {
    // A document boundary exactly at a part start (no halo) and one inside the halo.
    cases.push_back({"swat boundary at/inside halo", false, 4, 1, 8, 10, {0, 30, 48, 80}, {0, 30, 52, 80}});
    // w−1 larger than a part: part 2's halo comes from parts 1 AND 0; part 1 holds 5 rows.
    cases.push_back({"swat w > slice (multi-part halo)", false, 4, 2, 16, 24, {0, 40, 64}, {0, 30, 35, 64}});
    cases.push_back({"softmax w > slice (multi-part halo)", true, 4, 2, 16, 24, {0, 40, 64}, {0, 30, 35, 64}});
    // An empty part in the middle; window ≥ whole stream (full causal for softmax).
    cases.push_back({"softmax empty part, w >= S", true, 2, 1, 8, 100, {0, 50}, {0, 20, 20, 50}});
    cases.push_back({"swat empty part, w=1", false, 2, 2, 8, 1, {0, 9, 50}, {0, 20, 20, 50}});
  }
  for (const auto& k : cases) run_cp_case(c, be, k);

  // A malformed placement is a clear error.
  CpPlacement bad{{0, 1}, {0, 10, 5}, {0, 5}};
  try {
    cp_halo_plan(bad, 0, 4);
    mismatch(c, "decreasing bounds accepted");
  } catch (const Error&) {
  }
}

// ---- data-parallel step ----------------------------------------------------------------------

void test_dp(Comm& c) {
  const int P = c.size(), me = c.rank();
  Config cfg = tiny_config();
  cfg.window = 16;
  const Backend& be = backend_get("cpu");
  // Global batch: 2·P documents of different lengths; rank r holds documents 2r, 2r+1.
  std::vector<int64_t> len;
  for (int i = 0; i < 2 * P; i++) len.push_back(17 + 13 * i % 29);
  const auto docs = random_docs(len, cfg.vocab_size, 7);
  const Packed global = pack(docs);
  const Packed local = pack({docs[size_t(2 * me)], docs[size_t(2 * me + 1)]});

  Model ref(cfg, be), dp(cfg, be);
  param_init(ref.params.data(), ref.layout, cfg, 99);
  dp.params = ref.params;
  ref.reserve(int(global.tokens.size()));
  dp.reserve(int(local.tokens.size()));
  AdamW opt_ref, opt_dp;
  const float lr = 1e-2f;
  for (int step = 0; step < 3; step++) {
    // One process, whole batch: token-level mean loss.
    std::fill(ref.grads.begin(), ref.grads.end(), 0.0f);
    int64_t n_all = 0;
    model_forward(ref, global.view(), &n_all);  // count targets
    const double loss_ref = model_forward(ref, global.view(), &n_all, 1.0f / float(n_all));
    model_backward(ref, global.view());
    adamw_step(be, opt_ref, ref.params.data(), ref.grads.data(), ref.layout, lr);

    // Data parallel: count the global batch's targets, scale by 1/total, all-reduce gradients.
    std::fill(dp.grads.begin(), dp.grads.end(), 0.0f);
    int64_t n_local = 0;
    model_forward(dp, local.view(), &n_local);
    std::vector<float> cnt{float(n_local)};
    c.allreduce_sum(cnt.data(), 1);
    const double loss_sum = model_forward(dp, local.view(), &n_local, 1.0f / cnt[0]);
    model_backward(dp, local.view());
    c.allreduce_sum(dp.grads.data(), dp.grads.size());
    std::vector<float> l{float(loss_sum)};
    c.allreduce_sum(l.data(), 1);
    adamw_step(be, opt_dp, dp.params.data(), dp.grads.data(), dp.layout, lr);

    if (int64_t(cnt[0]) != n_all) {
      mismatch(c, fmt::format("target count {} vs {}", cnt[0], n_all));
    }
    const double loss_dp = double(l[0]) / cnt[0], want = loss_ref / double(n_all);
    if (std::fabs(loss_dp - want) > 1e-5 * std::fabs(want)) {
      mismatch(c, fmt::format("step {} loss {:.8f} vs {:.8f}", step, loss_dp, want));
    }
    expect_close(c, "dp step " + std::to_string(step) + " params", dp.params.data(),
                 ref.params.data(), ref.params.size());
    if (me == 0)
      std::printf("dp step %d: loss %.6f (1 process %.6f), param rel err %.2e\n", step, loss_dp,
                  want, rel_err(dp.params.data(), ref.params.data(), ref.params.size()));
  }
}

// ---- timeout ---------------------------------------------------------------------------------

void test_hang(Comm& c) {
  c.timeout_s = 2;
  if (c.rank() == 1) {
    sleep(60);  // a hung rank: never sends; mpirun ends it when rank 0 aborts
    return;
  }
  if (c.rank() == 0) {
    std::vector<float> x(16);
    CommRequest r = c.irecv(x.data(), x.size(), 1, 5);
    c.wait(r);  // must abort after 2 s
    mismatch(c, "wait returned without a message");
  }
}

// A rank that dies (SIGKILL) mid-step: mpirun ends the job; rank 0 does not wait out its timeout.
void test_die(Comm& c) {
  if (c.rank() == 1) raise(SIGKILL);
  std::vector<float> x(16);
  CommRequest r = c.irecv(x.data(), x.size(), 1, 5);
  c.wait(r);
}

// ---- bytes: halo vs ring ---------------------------------------------------------------------

// Ring exchange of whole KV slices (ByteScale's softmax CP, Ring Attention): forward passes every
// part's K/V slice P−1 hops around the ring; backward passes K/V again P−1 hops and the dK/dV
// accumulators P hops (back to their owner). Data movement only; returns bytes this rank sent.
int64_t ring_bytes(Comm& c, const CpPlacement& pl, size_t kvd) {
  const int P = c.size(), me = c.rank(), next = (me + 1) % P, prev = (me + P - 1) % P;
  auto rows = [&](int part) { return size_t(pl.bounds[size_t(part) + 1] - pl.bounds[size_t(part)]); };
  const int64_t before = c.stats.bytes_sent;
  auto pass = [&](int hops, int tag) {
    std::vector<float> cur(rows(me) * 2 * kvd, 1.0f), nxt;
    int held = me;
    for (int h = 0; h < hops; h++) {
      const int incoming = (held + P - 1) % P;
      nxt.assign(rows(incoming) * 2 * kvd, 0.0f);
      std::vector<CommRequest> rq;
      rq.push_back(c.irecv(nxt.data(), nxt.size(), prev, tag));
      rq.push_back(c.isend(cur.data(), cur.size(), next, tag));
      c.wait_all(rq);
      cur.swap(nxt);
      held = incoming;
    }
  };
  pass(P - 1, 11);  // forward: K/V
  pass(P - 1, 12);  // backward: K/V again
  pass(P, 13);      // backward: dK/dV home
  return c.stats.bytes_sent - before;
}

void bench_bytes(Comm& c) {
  const Backend& be = backend_get("cpu");
  const int P = c.size(), me = c.rank();
  const int H = 1, Hkv = 1, D = 64, w = 256;
  const size_t qd = size_t(H) * D, kvd = size_t(Hkv) * D;
  double first_halo = -1;
  for (int S : {3 * 1024, 12 * 1024, 48 * 1024, 192 * 1024}) {
    CpPlacement pl;
    for (int r = 0; r < P; r++) pl.ranks.push_back(r);
    for (int r = 0; r <= P; r++) pl.bounds.push_back(int64_t(S) * r / P);
    pl.cu_seqlens = {0, S};
    const size_t T = size_t(pl.bounds[size_t(me) + 1] - pl.bounds[size_t(me)]);
    const auto q = randn<float>(T * qd, 30 + uint64_t(me), 0.5f),
               k = randn<float>(T * kvd, 40 + uint64_t(me), 0.5f), v = randn<float>(T * kvd, 50 + uint64_t(me));
    std::vector<float> out(T * qd), dq(T * qd), dk(T * kvd), dv(T * kvd), slopes(size_t(H), -0.01f);
    CpAttnArgs a;
    a.attn = stream_shape(pl.cu_seqlens, H, Hkv, D, w, slopes.data());
    CpAttnState st;
    CpScratch scr;
    const int64_t b0 = c.stats.bytes_sent;
    cp_attention_forward(c, be, pl, me, a, st, scr, out.data(), nullptr, q.data(), k.data(), v.data());
    cp_attention_backward(c, be, pl, a, st, scr, dq.data(), dk.data(), dv.data(), out.data(),
                          nullptr, nullptr, q.data(), k.data(), v.data());
    std::vector<float> halo{float(c.stats.bytes_sent - b0)};
    std::vector<float> ring{float(ring_bytes(c, pl, kvd))};
    std::vector<float> halo_max = halo, ring_max = ring;
    c.allreduce_sum(halo.data(), 1);
    c.allreduce_sum(ring.data(), 1);
    // per-rank maximum via all-gather by all-reduce of one-hot vectors
    std::vector<float> hv(size_t(P), 0.0f), rv(size_t(P), 0.0f);
    hv[size_t(me)] = halo_max[0];
    rv[size_t(me)] = ring_max[0];
    c.allreduce_sum(hv.data(), hv.size());
    c.allreduce_sum(rv.data(), rv.size());
    if (me == 0)
      std::printf("{\"bench\":\"cp_halo_vs_ring\",\"ranks\":%d,\"seq\":%d,\"window\":%d,"
                  "\"Hkv\":%d,\"D\":%d,\"halo_bytes_total\":%.0f,\"ring_bytes_total\":%.0f,"
                  "\"halo_bytes_max_rank\":%.0f,\"ring_bytes_max_rank\":%.0f,\"ratio\":%.1f}\n",
                  P, S, w, Hkv, D, double(halo[0]), double(ring[0]),
                  double(*std::max_element(hv.begin(), hv.end())),
                  double(*std::max_element(rv.begin(), rv.end())), double(ring[0] / halo[0]));
    // O(w·d) per rank: the halo traffic must not grow with the sequence (slices ≥ w here).
    if (first_halo < 0) first_halo = halo[0];
    if (double(halo[0]) != first_halo) {
      mismatch(c, fmt::format("halo bytes {} at S={} differ from {}", halo[0], S, first_halo));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return mpi_mode_main("mpi_cp_test", argc, argv, 20,
                       "mpirun -np N mpi_cp_test comm|cp|dp|hang|die|bytes",
                       [](Comm& c, const std::vector<std::string>& args) {
                         const std::string mode = args.empty() ? "" : args[0];
                         if (mode == "comm") test_comm(c);
                         else if (mode == "cp") test_cp(c);
                         else if (mode == "dp") test_dp(c);
                         else if (mode == "hang") test_hang(c);
                         else if (mode == "die") test_die(c);
                         else if (mode == "bytes") bench_bytes(c);
                         else return false;
                         return true;
                       });
}
