// HDP planner: Eq. 3, Alg. 1 (naive), Alg. 2 (balance), static DP×CP (see hdp_planner.h).
#include "dist/hdp_planner.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <queue>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"

namespace longctx {

double offload_ratio(int64_t s, const PlanOptions& o) {
  if (o.offload_bw <= 0 || s <= o.capacity || o.layers <= 2) return 0.0;
  const double act = o.cost.act(double(s));
  // r* = min(1, T(s)·min(B_d2h, B_h2d) / Act(s)): the largest r whose transfer hides under compute.
  double r = std::min(1.0, o.cost.time(double(s)) * o.offload_bw / act);
  if (r <= 0) return 0.0;
  // Lower r to the smallest value that still reaches D(r*) (less PCIe traffic, same ranks).
  const int d_min = ranks_for(s, r, o);
  const double l = o.layers, act_c = o.cost.act(double(o.capacity));
  double r_min = 1.0 - (d_min * l * act_c / act - 2.0) / (l - 2.0);
  r_min = std::clamp(r_min, 0.0, r);
  if (ranks_for(s, r_min, o) == d_min) r = r_min;
  return r;
}

int ranks_for(int64_t s, double r, const PlanOptions& o) {
  const double l = o.layers, act = o.cost.act(double(s)), act_c = o.cost.act(double(o.capacity));
  const double need = (2.0 * act + (1.0 - r) * (l - 2.0) * act) / (l * act_c);  // Eq. 3
  if (o.layers <= 2) return std::max<int64_t>(1, (s + o.capacity - 1) / o.capacity);
  return std::max(1, int(std::ceil(need - 1e-9)));
}

double offload_ratio_for(int64_t s, int d, const PlanOptions& o) {
  if (o.offload_bw <= 0 || o.layers <= 2 || ranks_for(s, 0.0, o) <= d) return 0.0;
  const double l = o.layers, act = o.cost.act(double(s)), act_c = o.cost.act(double(o.capacity));
  double r = std::clamp(1.0 - (d * l * act_c / act - 2.0) / (l - 2.0), 0.0, 1.0);
  for (int it = 0; it < 4 && ranks_for(s, r, o) > d && r < 1.0; it++) r = std::min(1.0, r + 1e-9);
  return r;
}

Scheduler scheduler_from_string(const std::string& s) {
  if (s == "static") return Scheduler::static_dpcp;
  if (s == "naive") return Scheduler::naive;
  if (s == "balance" || s == "balance-dp") return Scheduler::balance_dp;
  if (s == "balance-pp") return Scheduler::balance_pp;
  fail("unknown scheduler '{}' (expected one of: static, naive, balance, balance-dp, balance-pp)", s);
}

const char* to_string(Scheduler s) {
  switch (s) {
    case Scheduler::static_dpcp: return "static";
    case Scheduler::naive: return "naive";
    case Scheduler::balance_dp: return "balance-dp";
    case Scheduler::balance_pp: return "balance-pp";
  }
  return "?";
}

namespace {

void check_options(const PlanOptions& o) {
  LCX_CHECK(o.ranks > 0, "need at least one HDP rank, got {}", o.ranks);
  LCX_CHECK(o.capacity > 0, "capacity C must be > 0 tokens, got {}", o.capacity);
  LCX_CHECK(o.layers > 0, "layers per rank must be > 0, got {}", o.layers);
  LCX_CHECK(o.pp > 0, "pipeline stages must be > 0, got {}", o.pp);
  LCX_CHECK(o.cost.alpha2 > 0, "cost model: Act(s) slope alpha2 must be > 0");
  LCX_CHECK(o.ranks_per_node > 0, "ranks per node must be > 0");
}

// Exposed context-parallel communication per layer of one of d ranks sharing `tokens` tokens,
// whose attention compute per rank (the only compute CP traffic overlaps with) is att_s.
double cp_comm_raw(int64_t tokens, int d, double att_s, const Link& link, const PlanOptions& o) {
  if (d <= 1 || o.kv_bytes_per_token <= 0) return 0.0;
  double comm;
  if (o.window > 0)  // SWAT: K/V halo of w−1 rows forward, their gradients backward
    comm = 2.0 * link.time(o.kv_bytes_per_token * (o.window - 1));
  else  // ring (src/dist/ring_attention): d−1 hops of the local KV chunk forward; backward
        // d−1 KV hops and d dKV hops (the accumulators' last hop returns them to their owners)
    comm = double(3 * (d - 1) + 1) * link.time(o.kv_bytes_per_token * double(tokens) / d);
  return std::max(0.0, comm - att_s);
}

// The same for one long sequence of s tokens over d ranks.
double cp_comm_exposed(int64_t s, int d, const PlanOptions& o, const Link& link) {
  return cp_comm_raw(s, d, o.cost.alpha1 * double(s) * double(s) / d, link, o);
}

// One unit of work: a long sequence over D ranks, or a packed bin of short sequences on one rank.
struct Unit {
  int32_t seq = -1;            // long sequence id, or −1 for a bin
  int32_t bin = -1;
  int d = 1;                   // ranks
  double r = 0;                // offload ratio
  double work = 0;             // per-rank compute estimate (for ordering)
  int64_t tokens = 0;
};

struct Builder {
  const PlanOptions& o;
  const std::vector<int64_t>& len;
  const std::vector<std::vector<int32_t>>& bins;
  Plan p;
  std::vector<double> ready;

  Builder(const PlanOptions& o_, const std::vector<int64_t>& l_,
          const std::vector<std::vector<int32_t>>& b_)
      : o(o_), len(l_), bins(b_) {
    p.capacity = o.capacity;
    p.delta_s = o.delta;
    p.ranks.resize(size_t(o.ranks));
    p.seqs.resize(len.size());
    for (size_t i = 0; i < len.size(); i++) p.seqs[i].length = len[i];
    ready.assign(size_t(o.ranks), 0.0);
  }

  const Link& link_for(const int32_t* rk, int n) const {
    for (int i = 1; i < n; i++)
      if (rk[i] / o.ranks_per_node != rk[0] / o.ranks_per_node) return o.link_inter;
    return o.link_intra;
  }

  // Exposed context-parallel communication per layer of a rank holding 1/d of `tokens` tokens
  // whose attention compute per rank is att_s (the only compute CP comm overlaps with).
  double cp_comm(int64_t tokens, int d, double att_s, const Link& link) const {
    return cp_comm_raw(tokens, d, att_s, link, o);
  }

  // Run `u` on ranks rk (start when all are ready: they exchange K/V), append micro-batches.
  void execute(const Unit& u, const int32_t* rk) {
    const double l = o.layers;
    double start = 0;
    for (int i = 0; i < u.d; i++) start = std::max(start, ready[size_t(rk[i])]);
    if (u.seq >= 0) {
      const int64_t s = len[size_t(u.seq)];
      const double att = o.cost.alpha1 * double(s) * double(s) / u.d;
      const double comm = cp_comm(s, u.d, att, link_for(rk, u.d));
      const double t =
          l * ((o.cost.alpha1 * double(s) * s + o.cost.beta1 * double(s)) / u.d + o.cost.gamma + comm);
      SeqPlan& sp = p.seqs[size_t(u.seq)];
      sp.offload_ratio = u.r;
      for (int i = 0; i < u.d; i++) {
        const double idle = start - ready[size_t(rk[i])];
        if (idle > 1e-9 * (1 + start))  // this rank waits for its partners: a gap to backfill
          gaps.push_back({rk[i], int32_t(p.ranks[size_t(rk[i])].micro_batches.size()), idle});
        MicroBatch mb;
        Slice sl{u.seq, s * i / u.d, s * (i + 1) / u.d};
        mb.tokens = sl.end - sl.begin;
        mb.slices.push_back(sl);
        mb.time_s = t;
        RankPlan& rp = p.ranks[size_t(rk[i])];
        rp.micro_batches.push_back(std::move(mb));
        rp.busy_s += t;
        ready[size_t(rk[i])] = start + t;
        sp.ranks.push_back(rk[i]);
        p.comm_s += l * comm;
      }
    } else {
      RankPlan& rp = p.ranks[size_t(rk[0])];
      rp.micro_batches.push_back(bin_batch(u.bin, rk[0]));
      rp.busy_s += rp.micro_batches.back().time_s;
      ready[size_t(rk[0])] = start + rp.micro_batches.back().time_s;
    }
  }

  MicroBatch bin_batch(int32_t bin, int32_t rank) {
    MicroBatch mb;
    double t = o.cost.gamma;
    for (int32_t q : bins[size_t(bin)]) {
      const double s = double(len[size_t(q)]);
      t += o.cost.alpha1 * s * s + o.cost.beta1 * s;
      mb.slices.push_back(Slice{q, 0, len[size_t(q)]});
      mb.tokens += len[size_t(q)];
      p.seqs[size_t(q)].ranks.push_back(rank);
    }
    mb.time_s = o.layers * t;
    return mb;
  }

  // Where a rank waits for the partners of a long sequence: before micro-batch `index`.
  struct Gap {
    int32_t rank, index;
    double length;
  };
  std::vector<Gap> gaps;

  // Backfill: put bins (longest first) into the idle gaps, best fit; returns which were placed.
  // Finish times do not change; the bins placed no longer load the ranks' ends.
  std::vector<bool> backfill(const std::vector<Unit>& units, size_t first) {
    std::vector<bool> placed(units.size(), false);
    std::multimap<double, size_t> room;
    std::vector<std::vector<size_t>> by_rank(p.ranks.size());
    for (size_t g = 0; g < gaps.size(); g++) {
      room.emplace(gaps[g].length, g);
      by_rank[size_t(gaps[g].rank)].push_back(g);
    }
    for (size_t k = first; k < units.size() && !room.empty(); k++) {
      const double t = units[k].work + o.layers * o.cost.gamma;
      auto it = room.lower_bound(t);
      if (it == room.end()) continue;
      const size_t g = it->second;
      room.erase(it);
      Gap& gp = gaps[g];
      RankPlan& rp = p.ranks[size_t(gp.rank)];
      MicroBatch mb = bin_batch(units[k].bin, gp.rank);
      rp.busy_s += mb.time_s;
      rp.micro_batches.insert(rp.micro_batches.begin() + gp.index, std::move(mb));
      for (size_t h : by_rank[size_t(gp.rank)])
        if (gaps[h].index > gp.index || (h != g && gaps[h].index == gp.index)) gaps[h].index++;
      gp.index++;
      gp.length -= t;
      if (gp.length > 0) room.emplace(gp.length, g);
      placed[k] = true;
    }
    return placed;
  }

  Plan finish() {
    double mx = 0, mn = 1e300;
    for (size_t r = 0; r < p.ranks.size(); r++) {
      RankPlan& rp = p.ranks[r];
      double biggest = 0;
      for (const auto& mb : rp.micro_batches) biggest = std::max(biggest, mb.time_s);
      rp.time_s = ready[r] + (rp.micro_batches.empty() ? 0.0 : (o.pp - 1) * biggest);
      mx = std::max(mx, rp.time_s);
      mn = std::min(mn, rp.time_s);
    }
    p.step_time_s = mx;
    p.imbalance_s = mx - mn;
    return std::move(p);
  }
};

// Best-fit packing of the short sequences (s ≤ C) into bins of `cap` tokens, longest first.
std::vector<std::vector<int32_t>> pack_best_fit(const std::vector<int64_t>& len,
                                                const std::vector<int32_t>& items, int64_t cap) {
  std::vector<int32_t> order = items;
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return len[size_t(a)] > len[size_t(b)]; });
  std::vector<std::vector<int32_t>> bins;
  std::multimap<int64_t, int32_t> room;  // remaining capacity -> bin
  for (int32_t q : order) {
    const int64_t s = len[size_t(q)];
    auto it = room.lower_bound(s);  // the fullest bin that still fits s
    int32_t b;
    int64_t left;
    if (it == room.end()) {
      b = int32_t(bins.size());
      bins.emplace_back();
      left = cap;
    } else {
      b = it->second;
      left = it->first;
      room.erase(it);
    }
    bins[size_t(b)].push_back(q);
    left -= s;
    if (left > 0) room.emplace(left, b);
  }
  return bins;
}

// Per-rank compute of a sequence of s tokens split over d ranks (no communication).
double piece_time(int64_t s, int d, const PlanOptions& o) {
  const double x = double(s);
  return o.layers * ((o.cost.alpha1 * x * x + o.cost.beta1 * x) / d + o.cost.gamma);
}

// Split sequences into long units (s > C) and best-fit bins of short ones. A long sequence gets
// D(s) ranks by Eq. 3 with its offload ratio; with piece_cap > 0 ("selective"), it takes more
// ranks — up to D(s) without offloading, or beyond when balancing — so that its per-rank time
// stays ≤ piece_cap, and r is lowered to what that rank count needs (offload_ratio_for).
void make_units(const std::vector<int64_t>& len, const PlanOptions& o, std::vector<Unit>& units,
                std::vector<std::vector<int32_t>>& bins, double piece_cap, bool may_exceed_d0) {
  check_options(o);
  std::vector<int32_t> shorts;
  const double l = o.layers;
  for (size_t i = 0; i < len.size(); i++) {
    LCX_CHECK(len[i] > 0, "sequence {} has length {} (must be > 0)", i, len[i]);
    if (len[i] <= o.capacity) shorts.push_back(int32_t(i));
  }
  bins = pack_best_fit(len, shorts, o.capacity);
  if (piece_cap < 0) {  // the largest packed micro-batch (at least one full C-token slice)
    piece_cap = piece_time(o.capacity, 1, o);
    for (const auto& b : bins) {
      double t = l * o.cost.gamma;
      for (int32_t q : b) t += piece_time(len[size_t(q)], 1, o) - l * o.cost.gamma;
      piece_cap = std::max(piece_cap, t);
    }
  }
  for (size_t i = 0; i < len.size(); i++) {
    const int64_t s = len[i];
    if (s <= o.capacity) continue;
    Unit u;
    u.seq = int32_t(i);
    u.r = offload_ratio(s, o);
    u.d = ranks_for(s, u.r, o);
    LCX_CHECK(u.d <= o.ranks,
              "sequence {} (length {}) needs {} ranks at capacity {} tokens{}, but only {} HDP "
              "ranks exist; raise --ranks or --capacity{}",
              i, s, u.d, o.capacity, u.r > 0 ? fmt::format(" with offload ratio {:.2f}", u.r) : "",
              o.ranks, o.offload_bw > 0 ? "" : ", or enable offloading");
    if (piece_cap > 0 && piece_time(s, u.d, o) > piece_cap) {
      const double over = piece_cap - l * o.cost.gamma;
      const double need = over > 0 ? std::ceil(piece_time(s, 1, o) / over - 1e-9) : double(o.ranks);
      int d = int(std::min<double>(need, o.ranks));
      if (!may_exceed_d0) d = std::min(d, ranks_for(s, 0.0, o));
      // More ranks cut compute per rank but not ring traffic, and every rank of the sequence pays
      // it: spread only while the communication stays hidden under attention (as at u.d).
      int best = u.d;
      const double base = cp_comm_exposed(s, std::max(2, u.d), o, o.link_inter);
      for (int k = u.d + 1; k <= d; k++) {
        if (cp_comm_exposed(s, k, o, o.link_inter) > base + 1e-12) break;
        best = k;
      }
      if (best > u.d) {
        u.d = best;
        u.r = offload_ratio_for(s, best, o);
      }
    }
    u.tokens = s;
    u.work = piece_time(s, u.d, o) - l * o.cost.gamma;
    units.push_back(u);
  }
  for (size_t b = 0; b < bins.size(); b++) {
    Unit u;
    u.bin = int32_t(b);
    for (int32_t q : bins[b]) {
      const double s = double(len[size_t(q)]);
      u.work += l * (o.cost.alpha1 * s * s + o.cost.beta1 * s);
      u.tokens += len[size_t(q)];
    }
    units.push_back(u);
  }
}

}  // namespace

// Alg. 1: long sequences first (longest first), each on D(s) consecutive ranks of the first
// micro-batch "wave" with room; bins fill the free slots wave by wave. Every rank thus runs about
// the same number of micro-batches with the same tokens, whatever their FLOPs.
Plan plan_naive(const std::vector<int64_t>& len, const PlanOptions& o) {
  std::vector<Unit> units;
  std::vector<std::vector<int32_t>> bins;
  // Selective offloading: no sequence is offloaded onto so few ranks that it becomes slower
  // than the slowest sequence without offloading.
  double cap = 0;
  if (o.offload_bw > 0) {
    check_options(o);
    for (int64_t s : len)
      if (s > o.capacity) cap = std::max(cap, piece_time(s, ranks_for(s, 0.0, o), o));
  }
  make_units(len, o, units, bins, cap, false);
  std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) {
    if ((a.seq >= 0) != (b.seq >= 0)) return a.seq >= 0;
    return a.seq >= 0 && a.tokens > b.tokens;
  });
  std::vector<int> next;  // per wave: first free rank
  std::vector<std::pair<int, int>> where(units.size());  // (wave, first rank)
  size_t first_open = 0;
  for (size_t k = 0; k < units.size(); k++) {
    const int d = units[k].d;
    size_t w = first_open;
    while (w < next.size() && o.ranks - next[w] < d) w++;
    if (w == next.size()) next.push_back(0);
    where[k] = {int(w), next[w]};
    next[w] += d;
    while (first_open < next.size() && next[first_open] == o.ranks) first_open++;
  }
  std::vector<size_t> order(units.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return where[a] < where[b]; });
  Builder bd(o, len, bins);
  bd.p.scheduler = "naive";
  std::vector<int32_t> rk;
  for (size_t k : order) {
    rk.resize(size_t(units[k].d));
    std::iota(rk.begin(), rk.end(), where[k].second);
    bd.execute(units[k], rk.data());
  }
  return bd.finish();
}

// Alg. 2: ranks may run different numbers of micro-batches. Units sorted by work, longest first
// (the "first bucket" holds the longest sequences).
//  - Long sequences take the D least-loaded ranks. Beyond Eq. 3's D(s) (a minimum), a sequence
//    whose slice would exceed the mean rank load (PP > 1: the largest packed micro-batch, since a
//    rank's largest micro-batch also sets its pipeline bubble) spreads over more ranks, as long as
//    its ring traffic stays hidden under attention; its r drops to what that rank count needs.
//  - Ranks that wait for a long sequence's partners are backfilled with packed micro-batches.
//  - DP-balance: the rest go to the rank furthest behind (min-heap: longest-processing-time
//    first, i.e. Alg. 2's "ranks with max_time − exec_time_i > δ get the next sequences" with
//    δ → 0; the result is within one micro-batch of even).
//  - PP-balance: the rest, longest first, are dealt *in order* to the least-loaded rank until it
//    reaches the mean load minus δ, so each pipeline gets micro-batches of similar length.
Plan plan_balance(const std::vector<int64_t>& len, const PlanOptions& o, bool pp_balance) {
  std::vector<Unit> units;
  std::vector<std::vector<int32_t>> bins;
  // The balance target: the mean rank load (total work is the same however sequences split).
  // A long sequence whose slice would take longer than that spreads over more ranks.
  check_options(o);
  double total = 0;
  for (int64_t s : len) total += piece_time(s, 1, o) - (s <= o.capacity ? o.layers * o.cost.gamma : 0.0);
  // With pipelines, a rank's largest micro-batch also costs (pp − 1) times itself in bubbles:
  // cap long slices at the largest packed micro-batch instead (piece_cap < 0).
  make_units(len, o, units, bins, o.pp > 1 ? -1.0 : total / o.ranks, true);
  std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) {
    if ((a.seq >= 0) != (b.seq >= 0)) return a.seq >= 0;
    return a.work > b.work;
  });
  Builder bd(o, len, bins);
  bd.p.scheduler = pp_balance ? "balance-pp" : "balance-dp";
  using Item = std::pair<double, int32_t>;  // (ready time, rank)
  std::priority_queue<Item, std::vector<Item>, std::greater<Item>> heap;
  for (int32_t r = 0; r < o.ranks; r++) heap.push({0.0, r});
  std::vector<int32_t> rk;
  size_t k = 0;
  for (; k < units.size() && units[k].seq >= 0; k++) {
    rk.clear();
    for (int i = 0; i < units[k].d; i++) {
      rk.push_back(heap.top().second);
      heap.pop();
    }
    std::sort(rk.begin(), rk.end());  // neighbours on the same node where possible
    bd.execute(units[k], rk.data());
    for (int32_t r : rk) heap.push({bd.ready[size_t(r)], r});
  }
  const std::vector<bool> placed = bd.backfill(units, k);
  {  // drop the backfilled bins from what is left to deal
    std::vector<Unit> rest(units.begin(), units.begin() + std::ptrdiff_t(k));
    for (size_t j = k; j < units.size(); j++)
      if (!placed[j]) rest.push_back(units[j]);
    units.swap(rest);
  }
  if (!pp_balance) {
    for (; k < units.size(); k++) {
      int32_t r = heap.top().second;
      heap.pop();
      bd.execute(units[k], &r);
      heap.push({bd.ready[size_t(r)], r});
    }
  } else {
    double total = 0;
    for (double t : bd.ready) total += t;
    for (size_t j = k; j < units.size(); j++) total += units[j].work + o.layers * o.cost.gamma;
    const double target = total / o.ranks;
    std::vector<int32_t> by_load(size_t(o.ranks));
    std::iota(by_load.begin(), by_load.end(), 0);
    std::stable_sort(by_load.begin(), by_load.end(),
                     [&](int32_t a, int32_t b) { return bd.ready[size_t(a)] < bd.ready[size_t(b)]; });
    size_t cur = 0;
    for (; k < units.size() && cur < by_load.size(); k++) {
      int32_t r = by_load[cur];
      bd.execute(units[k], &r);
      if (bd.ready[size_t(r)] >= target - o.delta) cur++;
    }
    while (!heap.empty()) heap.pop();
    for (int32_t r = 0; r < o.ranks; r++) heap.push({bd.ready[size_t(r)], r});
    for (; k < units.size(); k++) {  // what is left after every rank reached the mean
      int32_t r = heap.top().second;
      heap.pop();
      bd.execute(units[k], &r);
      heap.push({bd.ready[size_t(r)], r});
    }
  }
  return bd.finish();
}

// Static DP×CP (MegaScale): one CP degree d_cp for the whole run — the smallest divisor of the
// rank count with d_cp·C ≥ the longest sequence; d_dp = ranks / d_cp groups. Sequences are
// best-fit packed into micro-batches of d_cp·C tokens and every sequence of a micro-batch is split
// over all d_cp ranks (ring attention for every one of them, short ones included); micro-batches
// go to DP groups round-robin in data order.
Plan plan_static(const std::vector<int64_t>& len, const PlanOptions& o) {
  check_options(o);
  int64_t longest = 0;
  for (size_t i = 0; i < len.size(); i++) {
    LCX_CHECK(len[i] > 0, "sequence {} has length {} (must be > 0)", i, len[i]);
    longest = std::max(longest, len[i]);
  }
  const int64_t need = (longest + o.capacity - 1) / o.capacity;
  int dcp = 0;
  for (int d = int(std::max<int64_t>(1, need)); d <= o.ranks; d++)
    if (o.ranks % d == 0) { dcp = d; break; }
  LCX_CHECK(dcp > 0 && need <= o.ranks,
            "static DP×CP: the longest sequence ({} tokens) needs {} ranks at capacity {}, but only "
            "{} ranks exist; raise --ranks or --capacity",
            longest, need, o.capacity, o.ranks);
  const int ddp = o.ranks / dcp;
  std::vector<int32_t> all(len.size());
  std::iota(all.begin(), all.end(), 0);
  auto bins = pack_best_fit(len, all, int64_t(dcp) * o.capacity);
  Rng rng(o.seed);
  for (size_t i = bins.size(); i > 1; i--) std::swap(bins[i - 1], bins[rng.below(i)]);
  Builder bd(o, len, bins);
  bd.p.scheduler = "static";
  bd.p.cp_degree = dcp;
  const double l = o.layers;
  std::vector<int32_t> rk(static_cast<size_t>(dcp));
  for (size_t b = 0; b < bins.size(); b++) {
    const int g = int(b % size_t(ddp));
    std::iota(rk.begin(), rk.end(), g * dcp);
    double att = 0, lin = 0;
    int64_t tokens = 0;
    for (int32_t q : bins[b]) {
      const double s = double(len[size_t(q)]);
      att += o.cost.alpha1 * s * s;
      lin += o.cost.beta1 * s;
      tokens += len[size_t(q)];
    }
    const double comm = bd.cp_comm(tokens, dcp, att / dcp, bd.link_for(rk.data(), dcp));
    const double t = l * ((att + lin) / dcp + o.cost.gamma + comm);
    double start = 0;
    for (int32_t r : rk) start = std::max(start, bd.ready[size_t(r)]);
    std::vector<MicroBatch> mbs(static_cast<size_t>(dcp));
    for (int32_t q : bins[b]) {
      const int64_t s = len[size_t(q)];
      for (int i = 0; i < dcp; i++) {
        Slice sl{q, s * i / dcp, s * (i + 1) / dcp};
        if (sl.end > sl.begin) {
          mbs[size_t(i)].slices.push_back(sl);
          mbs[size_t(i)].tokens += sl.end - sl.begin;
          bd.p.seqs[size_t(q)].ranks.push_back(rk[size_t(i)]);
        }
      }
    }
    for (int i = 0; i < dcp; i++) {
      RankPlan& rp = bd.p.ranks[size_t(rk[size_t(i)])];
      mbs[size_t(i)].time_s = t;
      rp.busy_s += t;
      rp.micro_batches.push_back(std::move(mbs[size_t(i)]));
      bd.ready[size_t(rk[size_t(i)])] = start + t;
      bd.p.comm_s += l * comm;
    }
  }
  return bd.finish();
}

Plan plan_make(Scheduler s, const std::vector<int64_t>& len, const PlanOptions& o) {
  switch (s) {
    case Scheduler::static_dpcp: return plan_static(len, o);
    case Scheduler::naive: return plan_naive(len, o);
    case Scheduler::balance_dp: return plan_balance(len, o, false);
    case Scheduler::balance_pp: return plan_balance(len, o, true);
  }
  fail("unknown scheduler");
}

void plan_check(const Plan& p, const std::vector<int64_t>& len, const PlanOptions& o) {
  LCX_CHECK(p.ranks.size() == size_t(o.ranks), "plan has {} ranks, expected {}", p.ranks.size(), o.ranks);
  LCX_CHECK(p.seqs.size() == len.size(), "plan has {} sequences, expected {}", p.seqs.size(), len.size());
  // Every token exactly once: per sequence, the slices sorted by begin must tile [0, s).
  std::vector<std::vector<std::pair<Slice, int32_t>>> by_seq(len.size());
  const double l = o.layers, act_c = o.cost.act(double(o.capacity));
  const int64_t cap = p.cp_degree > 0 ? int64_t(p.cp_degree) * o.capacity : o.capacity;
  for (size_t r = 0; r < p.ranks.size(); r++) {
    for (size_t m = 0; m < p.ranks[r].micro_batches.size(); m++) {
      const MicroBatch& mb = p.ranks[r].micro_batches[m];
      int64_t tok = 0, packed = 0;
      for (const Slice& sl : mb.slices) {
        LCX_CHECK(sl.seq >= 0 && size_t(sl.seq) < len.size(), "rank {} mb {}: bad sequence id {}", r, m, sl.seq);
        LCX_CHECK(0 <= sl.begin && sl.begin < sl.end && sl.end <= len[size_t(sl.seq)],
                  "rank {} mb {}: slice [{}, {}) outside sequence {} of length {}", r, m, sl.begin,
                  sl.end, sl.seq, len[size_t(sl.seq)]);
        by_seq[size_t(sl.seq)].push_back({sl, int32_t(r)});
        tok += sl.end - sl.begin;
        const int64_t s = len[size_t(sl.seq)];
        if (p.cp_degree > 0 || s <= o.capacity) {
          packed += p.cp_degree > 0 ? s : sl.end - sl.begin;
        } else {
          // A slice of a long sequence: device memory (2 + (1 − r)(l − 2))·Act(s)/D ≤ l·Act(C).
          const double rr = p.seqs[size_t(sl.seq)].offload_ratio;
          const double d = double(p.seqs[size_t(sl.seq)].ranks.size());
          const double keep = o.layers <= 2 ? l : 2.0 + (1.0 - rr) * (l - 2.0);
          const double mem = keep * o.cost.act(double(s)) / d;
          LCX_CHECK(mb.slices.size() == 1, "rank {} mb {}: a long sequence's slice shares a micro-batch", r, m);
          LCX_CHECK(mem <= l * act_c * (1 + 1e-9) || o.layers <= 2,
                    "rank {} mb {}: sequence {} slice needs {:.3g} bytes, capacity is {:.3g}", r, m,
                    sl.seq, mem, l * act_c);
          LCX_CHECK(o.layers > 2 || sl.end - sl.begin <= o.capacity,
                    "rank {} mb {}: slice of {} tokens exceeds capacity {}", r, m, sl.end - sl.begin, o.capacity);
          LCX_CHECK(int(d) >= ranks_for(s, rr, o), "sequence {}: spans {} ranks, Eq. 3 needs {}",
                    sl.seq, d, ranks_for(s, rr, o));
          LCX_CHECK(rr == 0 || int(d) == ranks_for(s, rr, o),
                    "sequence {}: offload ratio {} on {} ranks, but Eq. 3 gives {} ranks for it", sl.seq,
                    rr, d, ranks_for(s, rr, o));
        }
      }
      LCX_CHECK(tok == mb.tokens, "rank {} mb {}: tokens {} ≠ Σ slices {}", r, m, mb.tokens, tok);
      LCX_CHECK(packed <= cap, "rank {} mb {}: packed micro-batch holds {} tokens > capacity {}", r,
                m, packed, cap);
    }
  }
  for (size_t q = 0; q < len.size(); q++) {
    auto& v = by_seq[q];
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first.begin < b.first.begin; });
    int64_t at = 0;
    for (const auto& [sl, r] : v) {
      LCX_CHECK(sl.begin == at, "sequence {}: tokens [{}, {}) {}", q, std::min(at, sl.begin),
                std::max(at, sl.begin), sl.begin > at ? "not assigned" : "assigned twice");
      at = sl.end;
    }
    LCX_CHECK(at == len[q], "sequence {}: tokens [{}, {}) not assigned", q, at, len[q]);
    LCX_CHECK(p.seqs[q].ranks.size() == v.size(), "sequence {}: {} ranks listed, {} slices", q,
              p.seqs[q].ranks.size(), v.size());
    for (size_t i = 0; i < v.size(); i++)
      LCX_CHECK(p.seqs[q].ranks[i] == v[i].second, "sequence {}: rank list out of slice order", q);
  }
}

nlohmann::json plan_to_json(const Plan& p, bool full) {
  using nlohmann::json;
  json j = {{"scheduler", p.scheduler},   {"ranks", p.ranks.size()},
            {"capacity", p.capacity},     {"cp_degree", p.cp_degree},
            {"step_time_s", p.step_time_s}, {"imbalance_s", p.imbalance_s},
            {"delta_s", p.delta_s},       {"exposed_comm_s", p.comm_s}};
  json seqs = json::array();
  for (size_t i = 0; i < p.seqs.size(); i++) {
    const SeqPlan& s = p.seqs[i];
    seqs.push_back({{"id", i}, {"length", s.length}, {"ranks", s.ranks}, {"offload_ratio", s.offload_ratio}});
  }
  j["sequences"] = std::move(seqs);
  json ranks = json::array();
  for (size_t r = 0; r < p.ranks.size(); r++) {
    const RankPlan& rp = p.ranks[r];
    json rj = {{"rank", r}, {"time_s", rp.time_s}, {"busy_s", rp.busy_s},
               {"n_micro_batches", rp.micro_batches.size()}};
    if (full) {
      json mbs = json::array();
      for (const auto& mb : rp.micro_batches) {
        json sl = json::array();
        for (const auto& s : mb.slices) sl.push_back({s.seq, s.begin, s.end});
        mbs.push_back({{"tokens", mb.tokens}, {"time_s", mb.time_s}, {"slices", std::move(sl)}});
      }
      rj["micro_batches"] = std::move(mbs);
    }
    ranks.push_back(std::move(rj));
  }
  j["rank_plans"] = std::move(ranks);
  return j;
}

Plan plan_from_json(const nlohmann::json& j, const std::string& where) {
  using nlohmann::json;
  auto field = [&](const json& o, const char* k, const std::string& at) -> const json& {
    LCX_CHECK(o.is_object() && o.contains(k), "{}: {} is missing \"{}\"", where, at, k);
    return o[k];
  };
  auto num = [&](const json& o, const char* k, const std::string& at) {
    const json& v = field(o, k, at);
    LCX_CHECK(v.is_number(), "{}: {}.{} must be a number", where, at, k);
    return v.get<double>();
  };
  auto integer = [&](const json& v, const std::string& at) {
    LCX_CHECK(v.is_number_integer(), "{}: {} must be an integer", where, at);
    return v.get<int64_t>();
  };
  Plan p;
  const json& sc = field(j, "scheduler", "plan");
  LCX_CHECK(sc.is_string(), "{}: plan.scheduler must be a string", where);
  p.scheduler = sc.get<std::string>();
  p.capacity = integer(field(j, "capacity", "plan"), "plan.capacity");
  p.cp_degree = int(integer(field(j, "cp_degree", "plan"), "plan.cp_degree"));
  p.step_time_s = num(j, "step_time_s", "plan");
  p.imbalance_s = num(j, "imbalance_s", "plan");
  p.delta_s = num(j, "delta_s", "plan");
  p.comm_s = num(j, "exposed_comm_s", "plan");
  const json& seqs = field(j, "sequences", "plan");
  LCX_CHECK(seqs.is_array(), "{}: plan.sequences must be an array", where);
  for (size_t i = 0; i < seqs.size(); i++) {
    const std::string at = fmt::format("sequences[{}]", i);
    SeqPlan sp;
    sp.length = integer(field(seqs[i], "length", at), at + ".length");
    sp.offload_ratio = num(seqs[i], "offload_ratio", at);
    const json& rk = field(seqs[i], "ranks", at);
    LCX_CHECK(rk.is_array(), "{}: {}.ranks must be an array", where, at);
    for (size_t k = 0; k < rk.size(); k++) sp.ranks.push_back(int32_t(integer(rk[k], fmt::format("{}.ranks[{}]", at, k))));
    p.seqs.push_back(std::move(sp));
  }
  const json& ranks = field(j, "rank_plans", "plan");
  LCX_CHECK(ranks.is_array(), "{}: plan.rank_plans must be an array", where);
  for (size_t r = 0; r < ranks.size(); r++) {
    const std::string at = fmt::format("rank_plans[{}]", r);
    RankPlan rp;
    rp.time_s = num(ranks[r], "time_s", at);
    rp.busy_s = num(ranks[r], "busy_s", at);
    const json& mbs = field(ranks[r], "micro_batches", at);
    LCX_CHECK(mbs.is_array(), "{}: {}.micro_batches must be an array (write the plan with full = true)", where, at);
    for (size_t m = 0; m < mbs.size(); m++) {
      const std::string am = fmt::format("{}.micro_batches[{}]", at, m);
      MicroBatch mb;
      mb.tokens = integer(field(mbs[m], "tokens", am), am + ".tokens");
      mb.time_s = num(mbs[m], "time_s", am);
      const json& sl = field(mbs[m], "slices", am);
      LCX_CHECK(sl.is_array(), "{}: {}.slices must be an array", where, am);
      for (size_t k = 0; k < sl.size(); k++) {
        const std::string as = fmt::format("{}.slices[{}]", am, k);
        LCX_CHECK(sl[k].is_array() && sl[k].size() == 3, "{}: {} must be [sequence, begin, end]", where, as);
        Slice s{int32_t(integer(sl[k][0], as)), integer(sl[k][1], as), integer(sl[k][2], as)};
        LCX_CHECK(s.seq >= 0 && size_t(s.seq) < p.seqs.size(), "{}: {} names sequence {} of {}", where,
                  as, s.seq, p.seqs.size());
        mb.slices.push_back(s);
      }
      rp.micro_batches.push_back(std::move(mb));
    }
    p.ranks.push_back(std::move(rp));
  }
  return p;
}

std::string plan_summary(const Plan& p) {
  std::string out;
  int64_t tokens = 0, multi = 0, max_span = 0;
  double max_r = 0;
  for (const auto& s : p.seqs) {
    tokens += s.length;
    if (s.ranks.size() > 1) multi++;
    max_span = std::max<int64_t>(max_span, int64_t(s.ranks.size()));
    max_r = std::max(max_r, s.offload_ratio);
  }
  size_t mb_min = SIZE_MAX, mb_max = 0, idle = 0;
  double tmin = 1e300, tmax = 0, tsum = 0;
  for (const auto& r : p.ranks) {
    mb_min = std::min(mb_min, r.micro_batches.size());
    mb_max = std::max(mb_max, r.micro_batches.size());
    idle += r.micro_batches.empty();
    tmin = std::min(tmin, r.time_s);
    tmax = std::max(tmax, r.time_s);
    tsum += r.time_s;
  }
  out += fmt::format("scheduler      {}{}\n", p.scheduler,
                     p.cp_degree ? fmt::format(" (d_cp = {}, d_dp = {})", p.cp_degree, p.ranks.size() / p.cp_degree) : "");
  out += fmt::format("sequences      {} ({} tokens); {} span > 1 rank (max {} ranks); max offload ratio {:.2f}\n",
                     p.seqs.size(), tokens, multi, max_span, max_r);
  out += fmt::format("ranks          {} (capacity C = {} tokens); micro-batches per rank {}..{}; {} idle\n",
                     p.ranks.size(), p.capacity, mb_min, mb_max, idle);
  out += fmt::format("predicted time per rank  min {:.4g} s  mean {:.4g} s  max {:.4g} s\n", tmin,
                     tsum / double(p.ranks.size()), tmax);
  out += fmt::format("step time      {:.4g} s; imbalance (max − min) {:.4g} s ({:.1f} %); δ = {:.3g} s\n",
                     p.step_time_s, p.imbalance_s, tmax > 0 ? 100.0 * p.imbalance_s / tmax : 0.0, p.delta_s);
  return out;
}

}  // namespace longctx
