// The HDP training runtime (see hdp_train.h).
#include "dist/hdp_train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>

#include "core/error.h"
#include "core/progress.h"
#include "data/shard.h"
#include "dist/remote_loader.h"
#include "model/checkpoint.h"

namespace fs = std::filesystem;

namespace longctx {
namespace {

// The sequences of micro-batch k of `rank`'s CP group in a static DP×CP plan (ascending ids), and
// the group's first rank. Throws Error for a plan that is not one.
std::vector<int32_t> group_seqs(const Plan& p, int rank, size_t k, int* first) {
  const int N = p.cp_degree;
  LCX_CHECK(N > 1 && p.ranks.size() % size_t(N) == 0 && rank >= 0 && size_t(rank) < p.ranks.size(),
            "packed dist-attn: a static DP×CP plan with CP degree > 1 dividing its {} ranks is "
            "needed (CP degree {}, rank {})", p.ranks.size(), N, rank);
  *first = rank / N * N;
  std::vector<int32_t> seqs;
  for (int r = *first; r < *first + N; r++) {
    const auto& mbs = p.ranks[size_t(r)].micro_batches;
    LCX_CHECK(k < mbs.size(), "plan: rank {} has {} micro-batches, but rank {} of its CP group runs "
              "micro-batch {}", r, mbs.size(), rank, k);
    for (const Slice& sl : mbs[k].slices) seqs.push_back(sl.seq);
  }
  std::sort(seqs.begin(), seqs.end());
  seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
  for (int32_t q : seqs)
    for (int32_t r : p.seqs[size_t(q)].ranks)
      LCX_CHECK(r >= *first && r < *first + N, "plan: sequence {} of CP group {}..{} has a slice "
                "on rank {}", q, *first, *first + N - 1, r);
  return seqs;
}

// What one exchange of a rank's schedule is (hdp_check_order's nodes): a shared sequence
// {q, −1}, or the packed ring call of micro-batch k of the CP group starting at rank g {−1 − g, k}.
using Exchange = std::pair<int64_t, int64_t>;

// The exchanges of `rank`'s micro-batch k, in the order it runs them within one layer.
std::vector<Exchange> exchanges(const Plan& p, int rank, size_t k, const RingRule& rule) {
  if (hdp_packed(p, rank, k, rule)) return {{-1 - rank / p.cp_degree * p.cp_degree, int64_t(k)}};
  std::vector<Exchange> e;
  for (const Slice& sl : p.ranks[size_t(rank)].micro_batches[k].slices)
    if (p.seqs[size_t(sl.seq)].ranks.size() > 1) e.push_back({sl.seq, -1});
  return e;
}

// The pieces of the layout's tensors inside [lo, hi), offsets relative to lo (ZeRO-1 shard).
ParamLayout layout_shard(const ParamLayout& l, size_t lo, size_t hi) {
  ParamLayout s;
  for (const ParamTensor& t : l.tensors) {
    const size_t b = std::max(t.offset, lo), e = std::min(t.offset + t.numel, hi);
    if (e <= b) continue;
    ParamTensor piece = t;
    piece.offset = b - lo;
    piece.numel = e - b;
    s.tensors.push_back(std::move(piece));
  }
  s.total = hi - lo;
  return s;
}

// Each rank's `k` doubles gathered on every rank ([rank][k]), carried bit-exactly in floats of
// be's memory (the communicator's buffers).
std::vector<double> gather_doubles(Comm& c, const Backend& be, const std::vector<double>& mine) {
  const size_t k = mine.size(), P = size_t(c.size());
  std::vector<float> bits(2 * k);
  std::memcpy(bits.data(), mine.data(), k * sizeof(double));
  Buffer<float> buf(be, 2 * k * P);
  buf.upload(bits.data(), bits.size(), 2 * k * size_t(c.rank()));
  be.sync();
  c.all_gather(buf.data(), buf.size());
  const std::vector<float> got = buf.to_host();
  std::vector<double> all(k * P);
  std::memcpy(all.data(), got.data(), all.size() * sizeof(double));
  return all;
}

}  // namespace

void hdp_check_order(const Plan& p, int layers, const RingRule& rule) {
  LCX_CHECK(layers > 0, "hdp_check_order: layers must be > 0, got {}", layers);
  // Events: (exchange, layer, forward/backward) → node; edges follow each rank's order.
  std::vector<std::vector<std::vector<Exchange>>> sched(p.ranks.size());  // [rank][micro-batch]
  std::map<Exchange, size_t> index;  // exchange → compact index
  for (size_t r = 0; r < p.ranks.size(); r++)
    for (size_t k = 0; k < p.ranks[r].micro_batches.size(); k++) {
      sched[r].push_back(exchanges(p, int(r), k, rule));
      for (const Exchange& e : sched[r].back()) index.emplace(e, index.size());
    }
  const size_t n_nodes = index.size() * size_t(layers) * 2;
  auto node = [&](const Exchange& e, int l, int bwd) {
    return (index[e] * size_t(layers) + size_t(l)) * 2 + size_t(bwd);
  };
  std::vector<std::vector<size_t>> next(n_nodes);
  std::vector<int> indeg(n_nodes, 0);
  for (const auto& rank_sched : sched) {
    size_t prev = SIZE_MAX;
    auto visit = [&](size_t n) {
      if (prev != SIZE_MAX) {
        next[prev].push_back(n);
        indeg[n]++;
      }
      prev = n;
    };
    for (const std::vector<Exchange>& s : rank_sched) {
      for (int l = 0; l < layers; l++)  // forward: layer by layer, exchanges in order
        for (const Exchange& e : s) visit(node(e, l, 0));
      for (int l = layers - 1; l >= 0; l--)  // backward
        for (const Exchange& e : s) visit(node(e, l, 1));
    }
  }
  // Kahn's algorithm: every event must get a place in one global order.
  std::vector<size_t> ready;
  for (size_t n = 0; n < n_nodes; n++)
    if (indeg[n] == 0) ready.push_back(n);
  size_t done = 0;
  while (!ready.empty()) {
    const size_t n = ready.back();
    ready.pop_back();
    done++;
    for (size_t m : next[n])
      if (--indeg[m] == 0) ready.push_back(m);
  }
  LCX_CHECK(done == n_nodes,
            "plan: ranks meet their shared sequences in conflicting orders ({} of {} halo/ring "
            "exchanges are on a cycle); their messages would deadlock", n_nodes - done, n_nodes);
}

CpPlacement hdp_placement(const Plan& p, int32_t seq) {
  const SeqPlan& sp = p.seqs[size_t(seq)];
  CpPlacement pl;
  pl.ranks.assign(sp.ranks.begin(), sp.ranks.end());
  pl.bounds.assign(sp.ranks.size() + 1, -1);
  pl.bounds.back() = sp.length;
  for (size_t r = 0; r < p.ranks.size(); r++)
    for (const MicroBatch& mb : p.ranks[r].micro_batches)
      for (const Slice& sl : mb.slices) {
        if (sl.seq != seq) continue;
        size_t part = 0;
        while (part < pl.ranks.size() && pl.ranks[part] != int(r)) part++;
        LCX_CHECK(part < pl.ranks.size(), "plan: sequence {} has a slice on rank {}, not among its ranks", seq, r);
        pl.bounds[part] = sl.begin;
      }
  pl.cu_seqlens = {0, int32_t(sp.length)};
  return pl;  // cp_halo_plan checks that the bounds tile [0, length)
}

RingPlacement hdp_ring_placement(const Plan& p, int32_t seq) {
  const SeqPlan& sp = p.seqs[size_t(seq)];
  return ring_zigzag(std::vector<int>(sp.ranks.begin(), sp.ranks.end()), {0, int32_t(sp.length)});
}

PackedMicroBatch hdp_packed_placement(const Plan& p, int rank, size_t k, const RingRule& rule) {
  int first = 0;
  PackedMicroBatch pm;
  pm.seqs = group_seqs(p, rank, k, &first);
  std::map<int32_t, int32_t> doc_at;  // sequence → its first stream row
  pm.ring.cu_seqlens = {0};
  for (int32_t q : pm.seqs) {
    doc_at[q] = pm.ring.cu_seqlens.back();
    pm.ring.cu_seqlens.push_back(int32_t(pm.ring.cu_seqlens.back() + p.seqs[size_t(q)].length));
  }
  for (int r = first; r < first + p.cp_degree; r++) {
    std::vector<int32_t> rows;
    for (const Slice& sl : p.ranks[size_t(r)].micro_batches[k].slices)
      for (const SeqRange& sr : slice_rows(p, sl, r, rule))
        for (int64_t t = sr.begin; t < sr.end; t++) rows.push_back(int32_t(doc_at[sl.seq] + t));
    if (rows.empty()) continue;
    std::sort(rows.begin(), rows.end());
    pm.ring.ranks.push_back(r);
    pm.ring.rows.push_back(std::move(rows));
  }
  ring_check(pm.ring);
  return pm;
}

bool hdp_packed(const Plan& p, int rank, size_t k, const RingRule& rule) {
  if (p.cp_degree < 2 || rule.window <= 0) return false;
  int first = 0;
  bool shared = false;
  for (int32_t q : group_seqs(p, rank, k, &first)) {
    const SeqPlan& sp = p.seqs[size_t(q)];
    if (sp.length > rule.window) return false;
    shared |= sp.ranks.size() > 1;
  }
  return shared;
}

HdpTrainer::HdpTrainer(Comm& comm, Model& model, AdamW opt, bool zero1)
    : comm_(comm), model_(model), opt_(std::move(opt)), zero1_(zero1),
      ring_(ring_rule(model.config)), attn_(comm, model.config.num_hidden_layers) {
  const size_t n = model.params.size();
  lo_ = comm.chunk_begin(n, comm.rank());
  hi_ = comm.chunk_begin(n, comm.rank() + 1);
  shard_ = layout_shard(model.layout, lo_, hi_);
}

HdpStepResult HdpTrainer::step(const HdpStepData& d, float lr, float clip) {
  const Plan& p = d.plan;
  const int me = comm_.rank();
  LCX_CHECK(p.ranks.size() == size_t(comm_.size()), "HDP step: plan for {} ranks, job has {}",
            p.ranks.size(), comm_.size());
  LCX_CHECK(d.n_targets > 0, "HDP step: the global batch has no tokens to predict");
  Model& m = model_;
  const Backend& be = *m.backend;
  be.zero(m.grads.data(), m.grads.size());
  const float dloss = 1.0f / float(d.n_targets);
  const int64_t bytes0 = comm_.stats.bytes_sent;
  double loss_sum = 0;
  size_t si = 0;  // this rank's first slice of the micro-batch, an index into d.tokens
  const auto& mbs = p.ranks[size_t(me)].micro_batches;
  for (size_t k = 0; k < mbs.size(); si += mbs[k++].slices.size()) {
    const MicroBatch& mb = mbs[k];
    LCX_CHECK(si + mb.slices.size() <= d.tokens.size(),
              "HDP step: rank {} got tokens for {} slices, its plan has more", me, d.tokens.size());
    // Packed dist-attn: the slices in the packed stream's order (ascending sequence ids), one ring
    // run over all of them.
    const bool packed = hdp_packed(p, me, k, ring_);
    std::vector<size_t> order(mb.slices.size());
    std::iota(order.begin(), order.end(), size_t(0));
    if (packed)
      std::sort(order.begin(), order.end(),
                [&](size_t a, size_t b) { return mb.slices[a].seq < mb.slices[b].seq; });
    // The packed stream: one document per slice (a ring part: its zig-zag chunks back to back),
    // positions global within its sequence.
    tok_.clear(), tgt_.clear(), pos_.clear(), cu_.assign(1, 0);
    std::vector<CpRun> runs;
    for (size_t j : order) {
      const Slice& sl = mb.slices[j];
      const std::vector<int32_t>& t = d.tokens[si + j];
      const SeqPlan& sp = p.seqs[size_t(sl.seq)];
      const int64_t len = sp.length;
      const std::vector<SeqRange> rows = slice_rows(p, sl, me, ring_);
      LCX_CHECK(int64_t(t.size()) == rows_fetch_count(rows, len),
                "HDP step: slice of sequence {} has {} tokens, expected {}", sl.seq, t.size(),
                rows_fetch_count(rows, len));
      const int64_t row = int64_t(tok_.size());
      size_t at = 0;  // into t
      for (const SeqRange& r : rows) {
        const size_t fetched = size_t(fetch_end(r, len) - r.begin);
        for (int64_t i = 0; i < r.end - r.begin; i++) {
          tok_.push_back(t[at + size_t(i)]);
          tgt_.push_back(size_t(i + 1) < fetched ? t[at + size_t(i + 1)] : -1);
          pos_.push_back(int32_t(r.begin + i));
        }
        at += fetched;
      }
      cu_.push_back(int32_t(tok_.size()));
      const int64_t n = int64_t(tok_.size()) - row;
      if (packed) continue;
      if (sp.ranks.size() > 1) {
        CpRun r;
        r.row_begin = row;
        r.row_end = row + n;
        r.part = int(std::find(sp.ranks.begin(), sp.ranks.end(), me) - sp.ranks.begin());
        if (ring_.ring(sp)) {
          r.kind = CpRun::Kind::ring;
          r.ring = hdp_ring_placement(p, sl.seq);
        } else {
          r.kind = CpRun::Kind::halo;
          r.placement = hdp_placement(p, sl.seq);
        }
        runs.push_back(std::move(r));
      } else if (!runs.empty() && runs.back().kind == CpRun::Kind::local) {  // extend the local run
        runs.back().row_end = row + n;
        runs.back().cu_seqlens.push_back(int32_t(row + n - runs.back().row_begin));
      } else {
        CpRun r;
        r.row_begin = row;
        r.row_end = row + n;
        r.cu_seqlens = {0, int32_t(n)};
        runs.push_back(std::move(r));
      }
    }
    if (packed && !tok_.empty()) {
      CpRun r;
      r.kind = CpRun::Kind::ring;
      r.row_end = int64_t(tok_.size());
      r.ring = hdp_packed_placement(p, me, k, ring_).ring;
      r.part = int(std::find(r.ring.ranks.begin(), r.ring.ranks.end(), me) - r.ring.ranks.begin());
      runs.push_back(std::move(r));
    }
    if (tok_.empty()) continue;
    m.reserve(int(tok_.size()));
    attn_.set_runs(std::move(runs));
    const TokenBatch tb{tok_.data(), tgt_.data(), pos_.data(), cu_.data(), int(tok_.size()),
                        int(cu_.size()) - 1};
    m.attention = &attn_;
    try {
      int64_t k = 0;
      loss_sum += model_forward(m, tb, &k, dloss);
      model_backward(m, tb);
    } catch (...) {
      m.attention = nullptr;
      throw;
    }
    m.attention = nullptr;
  }
  LCX_CHECK(si == d.tokens.size(), "HDP step: rank {} got tokens for {} slices, its plan has {}",
            me, d.tokens.size(), si);
  const int64_t cp_bytes = comm_.stats.bytes_sent - bytes0;

  // Σ gradients over ranks (this rank's chunk, or all of them), then the global norm from each
  // chunk's fp64 sum of squares, combined in rank order: the same on every rank in both modes.
  // Backend::sync before every collective: the communicator (NCCL) has its own stream.
  float* g = m.grads.data();
  const size_t n = m.grads.size();
  be.sync();
  if (zero1_) comm_.reduce_scatter_sum(g, n);
  else comm_.allreduce_sum(g, n);
  const double sq = be.sum_squares(g + lo_, hi_ - lo_);
  const std::vector<double> all = gather_doubles(comm_, be, {sq, loss_sum, double(cp_bytes)});
  HdpStepResult res;
  double sq_all = 0, loss_all = 0, cp_all = 0;
  for (int r = 0; r < comm_.size(); r++) {
    sq_all += all[3 * size_t(r)];
    loss_all += all[3 * size_t(r) + 1];
    cp_all += all[3 * size_t(r) + 2];
  }
  res.loss = loss_all / double(d.n_targets);
  res.grad_norm = std::sqrt(sq_all);
  res.cp_bytes = int64_t(cp_all);
  for (const SeqPlan& s : p.seqs) res.tokens += s.length;
  LCX_CHECK(std::isfinite(res.loss) && std::isfinite(res.grad_norm),
            "HDP step: non-finite loss {} or gradient norm {}; lower the learning rate", res.loss,
            res.grad_norm);

  if (zero1_) {
    grad_clip(be, g + lo_, hi_ - lo_, res.grad_norm, clip);
    adamw_step(be, opt_, m.params.data() + lo_, g + lo_, shard_, lr);
    be.sync();
    comm_.all_gather(m.params.data(), m.params.size());
  } else {
    grad_clip(be, g, n, res.grad_norm, clip);
    adamw_step(be, opt_, m.params.data(), g, m.layout, lr);
  }
  return res;
}

void HdpTrainer::gather_moments(std::vector<float>& mo, std::vector<float>& v) {
  const Backend& be = *model_.backend;
  auto gather = [&](std::vector<float>& full, const Buffer<float>& part) {
    if (!zero1_) {
      full = part.to_host();
      return;
    }
    Buffer<float> all(be, model_.params.size());
    if (part.size()) be.copy(all.data() + lo_, part.data(), part.size() * sizeof(float), Copy::within);
    be.sync();
    comm_.all_gather(all.data(), all.size());
    full = all.to_host();
  };
  gather(mo, opt_.m);
  gather(v, opt_.v);
}

void HdpTrainer::set_moments(int64_t step, const std::vector<float>& mo, const std::vector<float>& v) {
  opt_.step = step;
  const Backend& be = *model_.backend;
  const size_t lo = zero1_ ? lo_ : 0, n = zero1_ ? hi_ - lo_ : mo.size();
  opt_.m = Buffer<float>::from_host(be, mo.data() + lo, n);
  opt_.v = Buffer<float>::from_host(be, v.data() + lo, n);
}

HdpPlanner hdp_planner(const HdpOptions& o, int ranks) {
  PlanOptions po;
  po.ranks = ranks;
  po.capacity = o.capacity;
  po.layers = 1;  // no offloading: D(s) = ceil(s / C)
  if (!o.cost_path.empty()) {
    po.cost = cost_from_file(o.cost_path);
  } else {  // T(s) ∝ s (SWAT: O(s·w)), Act(s) ∝ s
    po.cost.beta1 = 1e-6;
    po.cost.alpha2 = 1;
  }
  po.window = o.train.config.window;
  po.seed = o.train.seed;
  const Scheduler sc = o.scheduler;
  const int layers = o.train.config.num_hidden_layers;
  const RingRule rule = ring_rule(o.train.config);
  return [po, sc, layers, rule](const std::vector<int64_t>& len) {
    Plan p = plan_make(sc, len, po);
    plan_check(p, len, po);
    hdp_check_order(p, layers, rule);
    return p;
  };
}

TrainResult hdp_train(Comm& comm, const HdpOptions& o, Comm* loader_comm) {
  const TrainOptions& t = o.train;
  const int P = comm.size(), me = comm.rank();
  LCX_CHECK(o.capacity > 0, "--capacity must be > 0 tokens, got {}", o.capacity);
  LCX_CHECK(t.steps > 0, "--steps must be > 0, got {}", t.steps);
  const int64_t budget = o.step_tokens > 0 ? o.step_tokens : int64_t(P) * o.capacity;
  const int64_t max_len = o.max_len > 0 ? o.max_len : int64_t(P) * o.capacity;
  const std::string train_bin = t.data_dir + "/train.bin", tok_model = t.data_dir + "/tokenizer.model";
  const std::string val_bin = t.data_dir + "/val.bin";  // optional: validation passes when present
  const bool validate = fs::exists(val_bin);
  const std::string ckpt_dir = t.out_dir + "/checkpoint";

  Config cfg = t.config;
  cfg.vocab_size = int(shard_vocab_size(train_bin));
  cfg.validate("training config");
  const Backend& be = backend_get(t.backend.c_str());
  Comm& host = loader_comm ? *loader_comm : comm;
  const bool nccl = std::string(comm.name()) == "nccl";
  LCX_CHECK(be.device == nccl,
            "--hdp --device {}: the training communicator must carry {} buffers ({}), got '{}'",
            be.name, be.device ? "device" : "host", be.device ? "NCCL" : "MPI", comm.name());
  LCX_CHECK(std::string(host.name()) != "nccl",
            "--hdp: the remote loader's messages are host buffers; give it the MPI communicator");
  Model model(cfg, be);
  model.recompute = t.recompute;  // memory policy of every micro-batch (set before reserve)
  model.offload = t.offload;
  HdpOptions oc = o;
  oc.train.config = cfg;
  const HdpPlanner planner = hdp_planner(oc, P);
  // Bad placements (a sequence needing more ranks than exist, …) fail here, on every rank alike.
  planner({max_len});

  AdamW opt;
  opt.beta1 = t.beta1, opt.beta2 = t.beta2, opt.weight_decay = t.weight_decay;
  HdpTrainer trainer(comm, model, opt, o.zero1);
  int64_t step = 0;
  nlohmann::json cursor;
  if (t.resume) {
    LCX_CHECK(train_state_exists(ckpt_dir),
              "--resume: no training checkpoint in {} (train without --resume first)", ckpt_dir);
    LoadedModel lm = checkpoint_load(ckpt_dir);
    checkpoint_check_config(cfg, lm.config, ckpt_dir + "/config.json");
    model.params.upload(lm.params.data(), lm.params.size());
    TrainState st = train_state_load(ckpt_dir, model.layout.total);
    LCX_CHECK(st.meta.contains("hdp_data"),
              "{}/training_state.safetensors: no HDP data cursor ('hdp_data'); was it saved by "
              "`train --hdp`?", ckpt_dir);
    step = st.step;
    trainer.set_moments(st.step, st.m, st.v);
    cursor = st.meta["hdp_data"];
  } else {
    std::vector<float> init(model.params.size());
    param_init(init.data(), model.layout, cfg, t.seed);
    model.params.upload(init.data(), init.size());
  }
  const int64_t last = t.stop_after >= 0 ? std::min(t.steps, t.stop_after) : t.steps;
  std::unique_ptr<StepSource> src;
  if (o.remote_loader)
    src = std::make_unique<RemoteStepSource>(host, train_bin, t.seed, max_len, planner,
                                             ring_rule(cfg), budget,
                                             std::max<int64_t>(0, last - step));
  else
    src = std::make_unique<LocalStepSource>(DocStream(train_bin, t.seed, max_len), planner, budget,
                                            me, ring_rule(cfg));
  if (t.resume) src->restore(cursor);

  std::ofstream metrics;
  if (me == 0) {
    fs::create_directories(t.out_dir);
    metrics.open(t.out_dir + "/metrics.jsonl", t.resume ? std::ios::app : std::ios::trunc);
    LCX_CHECK(metrics.good(), "cannot write metrics file {}/metrics.jsonl", t.out_dir);
  }
  Progress bar("train --hdp", uint64_t(last), "steps", me != 0 || t.quiet || !progress_is_tty());
  TrainResult res;
  const auto t0 = std::chrono::steady_clock::now();
  auto since = [](auto a) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count(); };
  int64_t tokens_seen = 0;
  auto save = [&](int64_t at_step) {
    TrainState st;
    trainer.gather_moments(st.m, st.v);  // collective
    if (me != 0) return;
    st.step = at_step;
    st.meta = {{"hdp_data", cursor}, {"seed", t.seed}};
    checkpoint_save(ckpt_dir, cfg, model.params.to_host().data(), model.layout, &st,
                    fs::exists(tok_model) ? tok_model : "");
  };
  for (; step < last; step++) {
    const auto ts = std::chrono::steady_clock::now();
    const HdpStepData d = src->next();
    cursor = d.cursor;
    const float lr = lr_at(step, t.warmup, t.steps, t.lr, t.min_lr);
    const HdpStepResult r = trainer.step(d, lr, t.clip);
    const double dt = since(ts);
    tokens_seen += r.tokens;
    res.losses.push_back(r.loss);
    res.steps_done++;
    size_t mb_min = SIZE_MAX, mb_max = 0;
    for (const RankPlan& rp : d.plan.ranks) {
      mb_min = std::min(mb_min, rp.micro_batches.size());
      mb_max = std::max(mb_max, rp.micro_batches.size());
    }
    if (me == 0) {
      nlohmann::json row{{"step", step + 1}, {"loss", r.loss}, {"lr", lr},
                         {"grad_norm", r.grad_norm}, {"tokens_per_s", double(r.tokens) / dt},
                         {"tokens", tokens_seen}, {"elapsed_s", since(t0)},
                         {"sequences", d.plan.seqs.size()}, {"micro_batches_min", mb_min},
                         {"micro_batches_max", mb_max}, {"cp_bytes", r.cp_bytes},
                         {"scheduler", d.plan.scheduler}};
      // Validation on rank 0 alone, on its full parameters (gathered after every step), with the
      // backend's own attention (the context-parallel hook is installed per micro-batch only);
      // the other ranks wait for it in the next step's first exchange.
      if (validate && ((t.eval_every > 0 && (step + 1) % t.eval_every == 0) || step + 1 == last)) {
        model.reserve(int(o.capacity));
        const double vl = validation_loss(model, val_bin, 1, int(o.capacity), t.eval_tokens);
        row["val_loss"] = vl;
        res.val_losses.push_back(vl);
      }
      metrics << row.dump() << '\n' << std::flush;
      if (!t.quiet && !progress_is_tty())
        fmt::print(stderr, "step {:>5}  loss {:.4f}{}  lr {:.2e}  {:.0f} tok/s\n", step + 1, r.loss,
                   row.contains("val_loss") ? fmt::format("  val_loss {:.4f}", row["val_loss"].get<double>()) : "",
                   lr, double(r.tokens) / dt);
    }
    bar.update(uint64_t(step + 1));
    if ((t.save_every > 0 && (step + 1) % t.save_every == 0) || step + 1 == last) save(step + 1);
  }
  bar.finish();
  res.tokens_per_s = double(tokens_seen) / std::max(1e-9, since(t0));
  return res;
}

}  // namespace longctx
