// MPI test driver of the HDP runtime (run by CTest under mpirun; see tests/CMakeLists.txt):
//   exact SCHED [ATTN]     several training steps of `mpirun -np 4` on global batches where one
//                          document spans 3 ranks (2 with -np 2), short ones are packed and ranks
//                          run different numbers of micro-batches == one process on the whole
//                          batch (fp32, rel err < 1e-5), with and without ZeRO-1 (which must agree
//                          bit for bit); ATTN: swat (default), softmax (window 12: halo exchange)
//                          or full (softmax over whole sequences: ring attention, zig-zag;
//                          with SCHED static: packed dist-attn, one ring call per micro-batch)
//   gpu SCHED [ATTN]       the same on the cuda backend, one GPU per rank, NCCL between them, ==
//                          one GPU on the whole batch (bf16 GEMMs: gradient, parameters and
//                          moments rel err < 2e-2, loss within 5e-3 relative; ZeRO-1 within the
//                          same tolerances, NCCL's all-reduce and reduce-scatter sum in different
//                          orders); exit 77 (skip) with fewer GPUs than ranks or without NCCL
//   remote                 hdp_train from a token shard with the remote dataloader == without it
//                          (bit-identical parameters and losses; SWAT, and full attention's
//                          zig-zag reads)
//   bad                    clear errors: a sequence needing more ranks than exist, plans whose
//                          message order would deadlock
//   die                    a rank dies mid-step: the job ends (no hang)
//   bytes [C]              context-parallel bytes of one step, SWAT (halo) vs full attention
//                          (ring) on the same placement: measured, exact, cost model (JSON);
//                          capacity C tokens (default 1024), the long sequence C·ranks
//                          then packed's figure at C = 4096
//   packed [C]             packed dist-attn (static DP×CP, full attention; rank 0, planning only):
//                          ≥ 2N-token sequences of a packed micro-batch placed as ring_zigzag;
//                          attention pairs per rank, zig-zag vs contiguous splitting (JSON)
//   mkdata DIR [DOCS LONGEST]  writes DIR/train.bin and val.bin for the CLI tests and benchmarks (no MPI)
//   mkdist DIR DIST TOKENS CONTEXT [VOCAB]  DIR/train.bin of random tokens (vocabulary VOCAB,
//                          default 32000) in documents whose lengths are drawn from a named
//                          distribution (lengths_sample: bytescale, github, uniform), each ≤
//                          CONTEXT, TOKENS in all; DIR/lengths.txt lists them (no MPI)
// Exit code 0 on success; on a mismatch, a message and exit code 1 (every rank).
#include <algorithm>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <filesystem>
#include <string>
#include <vector>

#include "data/shard.h"
#include "dist/hdp_train.h"
#include "dist/lengths.h"
#ifdef LONGCTX_HAVE_NCCL
#include <cuda_runtime.h>  // cudaGetDeviceCount

#include "dist/comm_nccl.h"  // comm_nccl_init
#endif
#include "model/checkpoint.h"
#include "mpi_util.h"

using namespace longctx;
using namespace longctx::testing;
namespace fs = std::filesystem;

namespace {

// The test model (mpi_util.h) with its attention: "swat" (window 12), "softmax" (softmax window
// 12: halo exchange) or "full" (softmax, window ≥ every sequence: ring attention, zig-zag).
Config attn_config(const std::string& attn) {
  Config cfg = tiny_config();
  cfg.window = 12;
  if (attn != "swat") {
    cfg.attention = AttnKind::softmax;
    cfg.alibi = Alibi::none;
  }
  if (attn == "full") cfg.window = 1 << 20;
  return cfg;
}

// This rank's step data from documents in memory (what hdp_step_data reads from a shard).
HdpStepData step_data(const Plan& p, const std::vector<std::vector<int32_t>>& docs, int rank,
                      const Config& cfg) {
  return hdp_step_data(
      p,
      [&](int32_t q, int64_t begin, int64_t n, int32_t* out) {
        std::copy_n(docs[size_t(q)].begin() + begin, n, out);
      },
      rank, ring_rule(cfg));
}

// ---- exact: HDP == one process ----------------------------------------------------------------

// Context-parallel bytes of one step of `p` (all ranks, all layers, forward and backward): each
// ring part's ring_bytes (a ring sequence's, or a packed micro-batch's: hdp_packed_placement),
// each halo part's cp_halo_bytes.
double cp_bytes_of(const Plan& p, const Config& cfg) {
  const RingRule rule = ring_rule(cfg);
  const int Hkv = cfg.num_key_value_heads, D = cfg.head_dim();
  auto ring = [&](const RingPlacement& pl, int part) {
    return double(ring_bytes(pl, part, Hkv, D) + ring_bytes(pl, part, Hkv, D, true));
  };
  double b = 0;
  for (int r = 0; r < int(p.ranks.size()); r++)
    for (size_t k = 0; k < p.ranks[size_t(r)].micro_batches.size(); k++) {
      if (hdp_packed(p, r, k, rule)) {
        const RingPlacement pl = hdp_packed_placement(p, r, k, rule).ring;
        const auto at = std::find(pl.ranks.begin(), pl.ranks.end(), r);
        if (at != pl.ranks.end()) b += ring(pl, int(at - pl.ranks.begin()));
        continue;
      }
      for (const Slice& sl : p.ranks[size_t(r)].micro_batches[k].slices) {
        const SeqPlan& sp = p.seqs[size_t(sl.seq)];
        const int part = int(std::find(sp.ranks.begin(), sp.ranks.end(), r) - sp.ranks.begin());
        if (sp.ranks.size() < 2) continue;
        if (rule.ring(sp)) {
          b += ring(hdp_ring_placement(p, sl.seq), part);
        } else {
          const CpHaloPlan hp = cp_halo_plan(hdp_placement(p, sl.seq), part, cfg.window);
          b += double(cp_halo_bytes(hp, Hkv, D) + cp_halo_bytes(hp, Hkv, D, true));
        }
      }
    }
  return b * cfg.num_hidden_layers;
}

// Tolerances of one backend against one process on the whole batch.
struct ExactTol {
  double grad = 1e-5, param = 1e-5, loss = 1e-5;  // relative
  bool zero1_bitwise = true;  // ZeRO-1 == all-reduce bit for bit (MPI: both sum in rank order)
};
const ExactTol kGpuTol{2e-2, 2e-2, 5e-3, false};  // bf16 GEMMs, NCCL's summation orders

// c: the MPI communicator (mismatch reports); tc: the training communicator of backend be (c
// itself on host backends, NCCL on cuda).
void test_exact(Comm& c, Comm& tc, const Backend& be, const std::string& sched,
                const std::string& attn, const ExactTol& tol) {
  const int P = c.size();
  const Config cfg = attn_config(attn);
  const RingRule rule = ring_rule(cfg);
  HdpOptions o;
  o.train.config = cfg;
  // Length 80 spans 3 ranks at C = 32, 2 ranks (C = 40) when only 2 exist; 40 spans 2 at C = 32;
  // the rest are packed.
  const int span = std::min(P, 3);
  o.capacity = P >= 3 ? 32 : 40;
  o.scheduler = scheduler_from_string(sched);
  const HdpPlanner planner = hdp_planner(o, P);
  const std::vector<std::vector<int64_t>> steps = {
      {80, 20, 9, 30, 12, 7, 25, 16, 5, 40, 3, 11},
      {14, 80, 6, 22, 31, 9, 17, 2, 40, 8, 13},
      {5, 27, 80, 18, 10, 40, 21, 4, 12, 6}};

  Model ref(cfg, be), hdp(cfg, be), hz(cfg, be);
  std::vector<float> init(ref.params.size());
  param_init(init.data(), ref.layout, cfg, 99);
  ref.params.upload(init.data(), init.size());
  hdp.params = ref.params;
  hz.params = ref.params;
  AdamW opt_ref;
  HdpTrainer tr(tc, hdp, AdamW{}, false), trz(tc, hz, AdamW{}, true);
  const float lr = 1e-3f, clip = 0.5f;
  bool spanned = false, packed = false, uneven = false, ring3 = false;
  // Static DP×CP, full attention: packed dist-attn over a micro-batch that holds a ring sequence
  // (zig-zag) and a short shared one (< 2N tokens, the planner's slices) in one ring call.
  bool packed_ring = false;
  for (size_t s = 0; s < steps.size(); s++) {
    const auto docs = random_docs(steps[s], cfg.vocab_size, 100 + s);
    const Plan p = planner(steps[s]);
    for (const SeqPlan& sp : p.seqs) {
      spanned |= int(sp.ranks.size()) == span;
      ring3 |= sp.ranks.size() >= 3 && rule.ring(sp);
    }
    for (const RankPlan& rp : p.ranks) {
      uneven |= rp.micro_batches.size() != p.ranks[0].micro_batches.size();
      for (const MicroBatch& mb : rp.micro_batches) packed |= mb.slices.size() > 1;
    }
    for (size_t k = 0; k < p.ranks[0].micro_batches.size(); k++) {
      if (!hdp_packed(p, 0, k, rule)) continue;
      bool ring = false, short_shared = false;
      for (int32_t q : hdp_packed_placement(p, 0, k, rule).seqs) {
        const SeqPlan& sp = p.seqs[size_t(q)];
        ring |= rule.ring(sp);
        short_shared |= sp.ranks.size() > 1 && !rule.ring(sp);
      }
      packed_ring |= ring && short_shared;
    }
    // One process, whole batch.
    const Packed b = pack(docs);
    be.zero(ref.grads.data(), ref.grads.size());
    int64_t n = 0;
    ref.reserve(int(b.tokens.size()));
    model_forward(ref, b.view(), &n);  // counts the targets
    const double loss_ref = model_forward(ref, b.view(), &n, 1.0f / float(n)) / double(n);
    model_backward(ref, b.view());
    const double norm = grad_norm(be, ref.grads.data(), ref.grads.size());
    grad_clip(be, ref.grads.data(), ref.grads.size(), norm, clip);
    adamw_step(be, opt_ref, ref.params.data(), ref.grads.data(), ref.layout, lr);

    const HdpStepData d = step_data(p, docs, c.rank(), cfg);
    const HdpStepResult r = tr.step(d, lr, clip), rz = trz.step(d, lr, clip);
    const std::vector<float> pr = ref.params.to_host(), ph = hdp.params.to_host(),
                             pz = hz.params.to_host();
    const double e = rel_err(ph.data(), pr.data(), pr.size());
    // Step 0 starts from the same parameters: its summed, clipped gradients must agree (later
    // steps' parameters carry fp32 differences that AdamW amplifies where a gradient is near 0).
    const std::vector<float> gr = ref.grads.to_host(), gh = hdp.grads.to_host();
    const double ge = rel_err(gh.data(), gr.data(), gr.size());
    if (s == 0 && !(ge < tol.grad)) mismatch(c, fmt::format("{} step 0: gradient rel err {:.3g}", sched, ge));
    if (!(e < tol.param)) mismatch(c, fmt::format("{} step {}: params rel err {:.3g}", sched, s, e));
    if (!(std::fabs(r.loss - loss_ref) <= tol.loss * std::fabs(loss_ref)))
      mismatch(c, fmt::format("{} step {}: loss {} vs one process {}", sched, s, r.loss, loss_ref));
    if (!(std::fabs(r.grad_norm - norm) <= tol.grad * norm))
      mismatch(c, fmt::format("{} step {}: grad norm {} vs {}", sched, s, r.grad_norm, norm));
    const bool zero1_ok =
        tol.zero1_bitwise
            ? std::memcmp(pz.data(), ph.data(), ph.size() * sizeof(float)) == 0 && rz.loss == r.loss
            : rel_err(pz.data(), ph.data(), ph.size()) < tol.param &&
                  std::fabs(rz.loss - r.loss) <= tol.loss * std::fabs(r.loss);
    if (!zero1_ok) mismatch(c, fmt::format("{} step {}: ZeRO-1 differs from plain all-reduce", sched, s));
    // The bytes say which exchange ran: ring parts send whole K/V slices, halo parts w−1 rows.
    if (double(r.cp_bytes) != cp_bytes_of(p, cfg))
      mismatch(c, fmt::format("{} step {}: sent {} context-parallel bytes, expected {}", sched, s,
                              r.cp_bytes, cp_bytes_of(p, cfg)));
    if (c.rank() == 0)
      std::printf("%s %s %s step %zu: loss %.6f (1 process %.6f), gradient rel err %.2e, param rel "
                  "err %.2e, cp %lld B\n", be.name, sched.c_str(), attn.c_str(), s, r.loss,
                  loss_ref, ge, e, (long long)r.cp_bytes);
  }
  if (!spanned) mismatch(c, fmt::format("{}: no sequence spans {} ranks (test data too easy)", sched, span));
  if (attn == "full" && P >= 3 && !ring3) mismatch(c, sched + ": no ring sequence over ≥ 3 ranks");
  if (sched != "static" && !packed) mismatch(c, sched + ": no packed micro-batch");
  if (sched == "static" && attn == "full" && !packed_ring)
    mismatch(c, "static full: no packed dist-attn micro-batch with ring and short shared sequences");
  if (sched != "static" && attn == "full" && packed_ring)
    mismatch(c, sched + ": an HDP plan ran packed dist-attn");
  if (sched == "balance" && !uneven) mismatch(c, "balance: every rank ran as many micro-batches");
  std::vector<float> m1, v1, m2, v2;
  tr.gather_moments(m1, v1);
  trz.gather_moments(m2, v2);
  const bool moments_ok = tol.zero1_bitwise ? m1 == m2 && v1 == v2
                                            : rel_err(m2.data(), m1.data(), m1.size()) < tol.param &&
                                                  rel_err(v2.data(), v1.data(), v1.size()) < tol.param;
  if (!moments_ok) mismatch(c, sched + ": gathered ZeRO-1 moments differ");
}

#ifdef LONGCTX_HAVE_NCCL
// GPUs visible to this process; 0 when CUDA finds none.
int gpus_visible() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}
#endif

// ---- remote loader == local reads -------------------------------------------------------------

void test_remote(Comm& c) {
  const std::string dir = std::string(LONGCTX_BINARY_DIR) + "/mpi_hdp_remote";
  if (c.rank() == 0) {
    fs::remove_all(dir);
    fs::create_directories(dir + "/data");
    Rng rng(5, 0);
    std::vector<int64_t> len;
    for (int i = 0; i < 40; i++) len.push_back(1 + int64_t(rng.below(i % 7 == 0 ? 90 : 30)));
    shard_write(dir + "/data/train.bin", 96, random_docs(len, 96, 6));
  }
  c.barrier();
  auto run = [&](bool remote, bool zero1, const std::string& out, const std::string& attn = "swat") {
    HdpOptions o;
    o.train.data_dir = dir + "/data";
    o.train.out_dir = dir + "/" + out;
    o.train.config = attn_config(attn);
    o.train.steps = 4;
    o.train.warmup = 1;
    o.train.lr = 1e-2f;
    o.train.quiet = true;
    o.capacity = 24;
    o.step_tokens = 150;
    o.max_len = 60;
    o.remote_loader = remote;
    o.zero1 = zero1;
    return hdp_train(c, o);
  };
  const TrainResult a = run(false, false, "local"), b = run(true, false, "remote"),
                    z = run(true, true, "remote_zero1");
  if (a.losses != b.losses) mismatch(c, "remote loader: losses differ from local reads");
  if (a.losses != z.losses) mismatch(c, "remote loader + ZeRO-1: losses differ");
  // Full attention: ring sequences read as zig-zag chunks, by every rank or sent by rank 0.
  if (run(false, false, "local_full", "full").losses != run(true, false, "remote_full", "full").losses)
    mismatch(c, "remote loader, full attention: losses differ from local reads");
  if (c.rank() == 0) {
    const LoadedModel la = checkpoint_load(dir + "/local/checkpoint"),
                      lb = checkpoint_load(dir + "/remote/checkpoint"),
                      lz = checkpoint_load(dir + "/remote_zero1/checkpoint");
    if (la.params != lb.params || la.params != lz.params) mismatch(c, "remote loader: parameters differ");
    const TrainState sa = train_state_load(dir + "/local/checkpoint", la.params.size()),
                     sz = train_state_load(dir + "/remote_zero1/checkpoint", la.params.size());
    if (sa.m != sz.m || sa.v != sz.v) mismatch(c, "ZeRO-1 checkpoint: AdamW moments differ");
    if (sa.meta["hdp_data"] != sz.meta["hdp_data"]) mismatch(c, "remote loader: data cursor differs");
    std::printf("remote: %zu steps, final loss %.6f (local) %.6f (remote) %.6f (remote+zero1)\n",
                a.losses.size(), a.losses.back(), b.losses.back(), z.losses.back());
  }
}

// ---- bad input --------------------------------------------------------------------------------

void expect_error_msg(Comm& c, const std::string& what, const std::function<void()>& f, const std::string& part) {
  try {
    f();
    mismatch(c, what + ": no error");
  } catch (const Error& e) {
    if (std::string(e.what()).find(part) == std::string::npos)
      mismatch(c, fmt::format("{}: error '{}' lacks '{}'", what, e.what(), part));
  }
}

void test_bad(Comm& c) {
  HdpOptions o;
  o.train.config = attn_config("swat");
  o.capacity = 16;
  const HdpPlanner planner = hdp_planner(o, c.size());
  expect_error_msg(c, "too long", [&] { planner({16 * int64_t(c.size()) + 1}); },
               fmt::format("needs {} ranks", c.size() + 1));
  // Two shared sequences met in opposite orders by ranks 0 and 1: a deadlock.
  Plan p;
  p.ranks.resize(2);
  p.seqs = {{10, {0, 1}, 0}, {10, {0, 1}, 0}};
  p.ranks[0].micro_batches = {{{{0, 0, 5}}, 5, 0}, {{{1, 0, 5}}, 5, 0}};
  p.ranks[1].micro_batches = {{{{1, 5, 10}}, 5, 0}, {{{0, 5, 10}}, 5, 0}};
  expect_error_msg(c, "cycle", [&] { hdp_check_order(p, 2, RingRule{}); }, "conflicting orders");
  std::swap(p.ranks[1].micro_batches[0], p.ranks[1].micro_batches[1]);
  hdp_check_order(p, 2, RingRule{});  // consistent now
  // Rank 0 runs sequences 0 and 1 in one micro-batch (both forwards before either backward),
  // rank 1 one after the other: rank 0 waits in sequence 1's forward while rank 1 waits in
  // sequence 0's backward.
  p.ranks[0].micro_batches = {{{{0, 0, 5}, {1, 0, 5}}, 10, 0}};
  expect_error_msg(c, "grouped", [&] { hdp_check_order(p, 1, RingRule{}); }, "conflicting orders");
  // A ring sequence over ranks 0, 1, 2 and a sequence over ranks 0 and 2, met in opposite orders
  // by ranks 0 and 2. Halo slices of the first would never make ranks 0 and 2 talk, but its ring
  // does (2 → 0 closes the ring): an exchange involves every rank of its sequence.
  Plan q;
  q.ranks.resize(3);
  q.seqs = {{12, {0, 1, 2}, 0}, {10, {0, 2}, 0}};
  q.ranks[0].micro_batches = {{{{0, 0, 4}}, 4, 0}, {{{1, 0, 5}}, 5, 0}};
  q.ranks[1].micro_batches = {{{{0, 4, 8}}, 4, 0}};
  q.ranks[2].micro_batches = {{{{1, 5, 10}}, 5, 0}, {{{0, 8, 12}}, 4, 0}};
  expect_error_msg(c, "ring", [&] { hdp_check_order(q, 2, RingRule{}); }, "conflicting orders");
  // A "static DP×CP" plan (CP groups {0, 1}, {2, 3}) with a sequence across two groups: packed
  // dist-attn of a full-attention model has no group to run it in.
  Plan s;
  s.cp_degree = 2;
  s.ranks.resize(4);
  s.seqs = {{10, {1, 2}, 0}};
  s.ranks[1].micro_batches = {{{{0, 0, 5}}, 5, 0}};
  s.ranks[2].micro_batches = {{{{0, 5, 10}}, 5, 0}};
  s.ranks[0].micro_batches = s.ranks[3].micro_batches = {{{}, 0, 0}};
  hdp_check_order(s, 1, RingRule{});  // halo: fine
  expect_error_msg(c, "cross-group", [&] { hdp_check_order(s, 1, RingRule{100}); }, "has a slice on rank");
}

// ---- a rank dies mid-step ---------------------------------------------------------------------

void test_die(Comm& c) {
  const Config cfg = attn_config("swat");
  const Backend& be = backend_get("cpu");
  HdpOptions o;
  o.train.config = cfg;
  o.capacity = 32;
  const std::vector<int64_t> len = {80, 20, 9, 30, 12};
  const Plan p = hdp_planner(o, c.size())(len);
  Model m(cfg, be);
  param_init(m.params.data(), m.layout, cfg, 1);
  HdpTrainer tr(c, m, AdamW{}, false);
  const auto docs = random_docs(len, cfg.vocab_size, 3);
  tr.step(step_data(p, docs, c.rank(), cfg), 1e-3f, 1.0f);
  if (c.rank() == 1) raise(SIGKILL);  // the others are inside the next step, waiting for it
  tr.step(step_data(p, docs, c.rank(), cfg), 1e-3f, 1.0f);
  mismatch(c, "step finished without rank 1");
}

// n_docs documents: every fifth up to `longest` tokens, the others up to longest / 4.
void mkdata(const std::string& dir, int n_docs, int64_t longest) {
  fs::create_directories(dir);
  Rng rng(11, 0);
  std::vector<int64_t> len;
  for (int i = 0; i < n_docs; i++) len.push_back(1 + int64_t(rng.below(uint64_t(i % 5 == 0 ? longest : longest / 4))));
  shard_write(dir + "/train.bin", 128, random_docs(len, 128, 12));
  shard_write(dir + "/val.bin", 128, random_docs(std::vector<int64_t>(8, longest / 4), 128, 13));
}

// Documents of lengths drawn from `dist` (the multi-GPU benchmark's mixed-length data).
void mkdist(const std::string& dir, const std::string& dist, int64_t tokens, int64_t context,
            int vocab) {
  fs::create_directories(dir);
  const std::vector<int64_t> len = lengths_sample(dist, tokens, context, 7);
  shard_write(dir + "/train.bin", vocab, random_docs(len, vocab, 8));
  std::FILE* f = std::fopen((dir + "/lengths.txt").c_str(), "w");
  LCX_CHECK(f, "cannot write {}/lengths.txt", dir);
  for (int64_t l : len) std::fprintf(f, "%lld\n", (long long)l);
  std::fclose(f);
}

// ---- bytes: halo (SWAT) vs ring (full attention) on one step's placement ------------------------

bool same_placement(const Plan& a, const Plan& b) {
  if (a.seqs.size() != b.seqs.size() || a.ranks.size() != b.ranks.size()) return false;
  for (size_t q = 0; q < a.seqs.size(); q++)
    if (a.seqs[q].ranks != b.seqs[q].ranks) return false;
  for (size_t r = 0; r < a.ranks.size(); r++) {
    const auto &x = a.ranks[r].micro_batches, &y = b.ranks[r].micro_batches;
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); i++) {
      if (x[i].slices.size() != y[i].slices.size()) return false;
      for (size_t j = 0; j < x[i].slices.size(); j++) {
        const Slice &u = x[i].slices[j], &v = y[i].slices[j];
        if (u.seq != v.seq || u.begin != v.begin || u.end != v.end) return false;
      }
    }
  }
  return true;
}

// One hdp_train step of a `small`-like model on a batch with one long document over all ranks, a
// shorter one over 2 and packed ones, on ONE placement: as SWAT (window 256: halo exchange) and as
// a full-attention softmax model (window ≥ every sequence: ring attention, zig-zag). Per model:
// bytes measured by Comm::stats, the exact count of the exchange (cp_halo_bytes / ring_bytes, must
// equal it) and the planner's cost model (cp_comm_raw through Plan::comm_s, on a link whose time
// is bytes / 1e15 s so that the placement does not change). JSON lines on stdout.
void bench_bytes(Comm& c, int64_t capacity) {
  const int P = c.size();
  Config swat = tiny_config();
  swat.hidden_size = 256;
  swat.num_attention_heads = swat.num_key_value_heads = 4;
  swat.intermediate_size = 512;
  swat.window = 256;
  Config full = swat;
  full.attention = AttnKind::softmax;
  full.alibi = Alibi::none;
  full.window = 1 << 20;
  HdpOptions o;
  o.train.config = swat;
  o.capacity = capacity;
  const double kv = 2.0 * swat.num_key_value_heads * swat.head_dim() * sizeof(float);  // K+V
  const double bw = 1e15;
  const int64_t C = capacity;
  for (int64_t S : {C * P, C * 3 / 4 * P + 1}) {
    const std::vector<int64_t> len = {S, C * 3 / 2, C / 3, C / 7, C * 3 / 4, C / 23, C};
    const Plan p = hdp_planner(o, P)(len);
    const auto docs = random_docs(len, swat.vocab_size, 4);
    double measured[2], exact[2], model[2];
    for (int k = 0; k < 2; k++) {
      const Config& cfg = k ? full : swat;
      Model m(cfg, backend_get("cpu"));
      param_init(m.params.data(), m.layout, cfg, 1);
      HdpTrainer tr(c, m, AdamW{}, false);
      measured[k] = double(tr.step(step_data(p, docs, c.rank(), cfg), 1e-3f, 1.0f).cp_bytes);
      exact[k] = cp_bytes_of(p, cfg);
      if (measured[k] != exact[k])
        mismatch(c, fmt::format("bytes ({}): measured {} B, exchange's count {} B",
                                k ? "ring" : "halo", measured[k], exact[k]));
      PlanOptions po;
      po.ranks = P;
      po.capacity = o.capacity;
      po.layers = cfg.num_hidden_layers;
      po.cost.beta1 = 1e-6;  // as hdp_planner: T(s) ∝ s, Act(s) ∝ s
      po.cost.alpha2 = 1;
      po.kv_bytes_per_token = kv;
      po.window = k ? 0 : cfg.window;
      po.link_intra = {0.0, bw};
      po.ranks_per_node = P;
      const Plan pm = plan_make(Scheduler::balance_dp, len, po);
      if (!same_placement(pm, p)) mismatch(c, "bytes: the cost model's plan has another placement");
      model[k] = pm.comm_s * bw;
    }
    if (c.rank() == 0)
      std::printf("{\"bench\":\"hdp_cp_bytes\",\"ranks\":%d,\"capacity\":%lld,\"long_seq\":%lld,\"seq_ranks\":[%zu,%zu],"
                  "\"swat_window\":%d,\"layers\":%d,\"kv_bytes_per_token_layer\":%.0f,"
                  "\"halo_measured\":%.0f,\"halo_exact\":%.0f,\"halo_cost_model\":%.0f,"
                  "\"ring_measured\":%.0f,\"ring_exact\":%.0f,\"ring_cost_model\":%.0f,"
                  "\"ring_over_halo\":%.1f}\n",
                  P, (long long)C, (long long)S, p.seqs[0].ranks.size(), p.seqs[1].ranks.size(), swat.window,
                  swat.num_hidden_layers, kv, measured[0], exact[0], model[0], measured[1], exact[1],
                  model[1], measured[1] / measured[0]);
  }
}

// ---- packed dist-attn: placement and balance (planning only, rank 0) ----------------------------

// The rows of `rows` whose documents (of cu) have ≥ min_len tokens.
std::vector<int32_t> rows_of_docs(const std::vector<int32_t>& rows, const std::vector<int32_t>& cu,
                                  int64_t min_len) {
  std::vector<int32_t> r;
  for (int32_t m : rows) {
    const auto d = std::upper_bound(cu.begin(), cu.end(), m) - 1;
    if (*(d + 1) - *d >= min_len) r.push_back(m);
  }
  return r;
}

// Static DP×CP plans (8 ranks, capacity C, CP degree N) of a ByteScale-mix global batch: attention
// pairs (ring_pairs, full causal) per rank of every packed micro-batch with packed dist-attn
// (hdp_packed_placement under the softmax rule: zig-zag per sequence) vs contiguous splitting (the
// planner's slices). The CP group runs a micro-batch in lockstep, so its attention time follows
// the busiest rank: Σ over micro-batches of max_rank pairs, against Σ of the mean (perfect
// balance). Checks: every sequence of ≥ 2N tokens is placed as ring_zigzag places it, and the
// packed imbalance is < 5 % and below the contiguous one. JSON lines on stdout.
void bench_packed(Comm& c, int64_t C) {
  if (c.rank() != 0) return;
  const RingRule full{1 << 30};
  for (int N : {2, 4, 8}) {
    PlanOptions po;
    po.ranks = 8;
    po.capacity = C;
    po.cost.beta1 = 1e-6;  // as hdp_planner
    po.cost.alpha2 = 1;
    std::vector<int64_t> len = lengths_sample("bytescale", 64 * C, int64_t(N) * C, 3);
    len.push_back(int64_t(N) * C);  // the longest sequence sets d_cp = N
    const Plan p = plan_static(len, po);
    if (p.cp_degree != N) mismatch(c, fmt::format("packed: CP degree {}, expected {}", p.cp_degree, N));
    double max_zz = 0, mean_zz = 0, max_ct = 0, mean_ct = 0, worst_zz = 0, worst_ct = 0;
    int packed = 0, shared = 0, short_shared = 0;
    for (int g = 0; g < po.ranks; g += N)
      for (size_t k = 0; k < p.ranks[size_t(g)].micro_batches.size(); k++) {
        if (!hdp_packed(p, g, k, full)) continue;
        const PackedMicroBatch zz = hdp_packed_placement(p, g, k, full),
                               ct = hdp_packed_placement(p, g, k, RingRule{});
        packed++;
        for (int32_t q : zz.seqs) {
          shared += p.seqs[size_t(q)].ranks.size() > 1;
          short_shared += p.seqs[size_t(q)].ranks.size() > 1 && !full.ring(p.seqs[size_t(q)]);
        }
        std::vector<int> group(static_cast<size_t>(N));
        std::iota(group.begin(), group.end(), g);
        const RingPlacement ref = ring_zigzag(group, zz.ring.cu_seqlens);
        for (int i = 0; i < zz.ring.parts(); i++) {
          const auto& ref_rows = ref.rows[size_t(zz.ring.ranks[size_t(i)] - g)];
          if (rows_of_docs(zz.ring.rows[size_t(i)], ref.cu_seqlens, 2 * N) !=
              rows_of_docs(ref_rows, ref.cu_seqlens, 2 * N))
            mismatch(c, fmt::format("packed: N={} group {} micro-batch {}: rank {} does not hold "
                                    "zig-zag chunks of its sequences", N, g, k, zz.ring.ranks[size_t(i)]));
        }
        auto load = [&](const RingPlacement& pl, double& sum_max, double& sum_mean, double& worst) {
          std::vector<double> pairs(static_cast<size_t>(N), 0.0);
          for (int i = 0; i < pl.parts(); i++)
            pairs[size_t(pl.ranks[size_t(i)] - g)] = double(ring_pairs(pl, i, full.window));
          const double mx = *std::max_element(pairs.begin(), pairs.end()),
                       mean = std::accumulate(pairs.begin(), pairs.end(), 0.0) / N;
          sum_max += mx;
          sum_mean += mean;
          worst = std::max(worst, mx / mean - 1);
        };
        load(zz.ring, max_zz, mean_zz, worst_zz);
        load(ct.ring, max_ct, mean_ct, worst_ct);
      }
    const double imb_zz = max_zz / mean_zz - 1, imb_ct = max_ct / mean_ct - 1;
    if (!(imb_zz < 0.05 && imb_zz < imb_ct))
      mismatch(c, fmt::format("packed: N={} zig-zag imbalance {:.4f} (contiguous {:.4f})", N, imb_zz, imb_ct));
    std::printf("{\"bench\":\"packed_dist_attn_balance\",\"ranks\":%d,\"cp_degree\":%d,\"capacity\":%lld,"
                "\"sequences\":%zu,\"packed_micro_batches\":%d,\"shared_sequences\":%d,"
                "\"short_shared_sequences\":%d,\"zigzag_imbalance\":%.4f,\"contiguous_imbalance\":%.4f,"
                "\"zigzag_worst_mb\":%.4f,\"contiguous_worst_mb\":%.4f}\n",
                po.ranks, N, (long long)C, len.size(), packed, shared, short_shared, imb_zz, imb_ct,
                worst_zz, worst_ct);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "gpu") {  // one GPU per rank, before MPI starts
#ifdef LONGCTX_HAVE_NCCL
    const char* np = std::getenv("OMPI_COMM_WORLD_SIZE");
    const int ranks = np ? std::atoi(np) : 1, gpus = gpus_visible();
    if (gpus < ranks) {
      std::printf("SKIP: %d ranks need as many GPUs, %d visible\n", ranks, gpus);
      return 77;
    }
#else
    std::printf("SKIP: built without NCCL\n");
    return 77;
#endif
  }
  if (mode == "mkdata" || mode == "mkdist") {  // no MPI
    try {
      if (mode == "mkdata")
        mkdata(argc > 2 ? argv[2] : ".", argc > 3 ? std::stoi(argv[3]) : 60,
               argc > 4 ? std::stoll(argv[4]) : 150);
      else if (argc >= 6)
        mkdist(argv[2], argv[3], std::stoll(argv[4]), std::stoll(argv[5]),
               argc > 6 ? std::stoi(argv[6]) : 32000);
      else
        fail("usage: mpi_hdp_test mkdist DIR DIST TOKENS CONTEXT [VOCAB]");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mpi_hdp_test: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  return mpi_mode_main(
      "mpi_hdp_test", argc, argv, 20,
      "mpirun -np N mpi_hdp_test exact|gpu SCHED [swat|softmax|full]|remote|bad|die|bytes [C]|packed [C], "
      "or mpi_hdp_test mkdata DIR [DOCS LONGEST] | mkdist DIR DIST TOKENS CONTEXT [VOCAB]",
      [](Comm& c, const std::vector<std::string>& args) {
        const std::string mode = args.empty() ? "" : args[0];
        const std::string attn = args.size() > 2 ? args[2] : "swat";
        if (mode == "exact" && args.size() > 1) {
          test_exact(c, c, backend_get("cpu"), args[1], attn, ExactTol{});
#ifdef LONGCTX_HAVE_NCCL
        } else if (mode == "gpu" && args.size() > 1) {
          const std::unique_ptr<Comm> nccl = comm_nccl_init(c, c.timeout_s);
          test_exact(c, *nccl, backend_get("cuda"), args[1], attn, kGpuTol);
#endif
        } else if (mode == "remote") test_remote(c);
        else if (mode == "bad") test_bad(c);
        else if (mode == "die") test_die(c);
        else if (mode == "bytes") {
          bench_bytes(c, args.size() > 1 ? std::stoll(args[1]) : 1024);
          bench_packed(c, 4096);
        } else if (mode == "packed") bench_packed(c, args.size() > 1 ? std::stoll(args[1]) : 4096);
        else return false;
        return true;
      });
}
