// HDP planner (src/dist): Eq. 3, Alg. 1 (naive), Alg. 2 (balance), the static DP×CP baseline,
// length distributions and the cost-model fits. Property tests over random length lists.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "dist/cost_model.h"
#include "dist/hdp_planner.h"
#include "dist/lengths.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

using longctx::testing::error_of;

// A 7B-like rank: T(s) quadratic, Act(s) linear (the simulator's spec model, TP 4).
PlanOptions opts_7b(int ranks, int64_t capacity) {
  ModelShape m = model_shape_preset("7b");
  Hardware hw = hardware_preset("h100");
  PlanOptions o;
  o.ranks = ranks;
  o.capacity = capacity;
  o.layers = m.layers;
  o.cost = cost_from_specs(m, hw, 0.5);
  o.kv_bytes_per_token = kv_bytes_per_token(m);
  o.link_intra = hw.nvlink;
  o.link_inter = hw.ib;
  o.ranks_per_node = 2;
  return o;
}


std::vector<int64_t> random_lengths(Rng& rng, int n, int64_t max_len) {
  std::vector<int64_t> v;
  for (int i = 0; i < n; i++) {
    // log-uniform in [1, max_len]
    double x = std::exp(rng.uniform() * std::log(double(max_len)));
    v.push_back(std::max<int64_t>(1, int64_t(x)));
  }
  return v;
}

}  // namespace

TEST(Planner, Eq3RanksAndOffloadRatio) {
  PlanOptions o = opts_7b(256, 65536);
  const double l = o.layers, ac = o.cost.act(65536.0);
  for (int64_t s : {int64_t(1000), int64_t(65536), int64_t(65537), int64_t(300000), int64_t(2 << 20)}) {
    // r = 0: D(s) = ceil(Act(s) / Act(C)) when the (l − 2) and 2 layers all keep their activations.
    const double a = o.cost.act(double(s));
    EXPECT_EQ(ranks_for(s, 0.0, o), std::max(1, int(std::ceil(a / ac - 1e-9)))) << s;
    // r = 1: only two layers' activations stay on the device.
    EXPECT_EQ(ranks_for(s, 1.0, o), std::max(1, int(std::ceil(2 * a / (l * ac) - 1e-9)))) << s;
    EXPECT_EQ(offload_ratio(s, o), 0.0) << "offloading is off";
  }
  o.offload_bw = 64e9;
  EXPECT_EQ(offload_ratio(65536, o), 0.0) << "s ≤ C is never offloaded";
  for (int64_t s : {int64_t(100000), int64_t(500000), int64_t(2 << 20)}) {
    const double r = offload_ratio(s, o);
    const double a = o.cost.act(double(s));
    const double r_star = std::min(1.0, o.cost.time(double(s)) * o.offload_bw / a);
    EXPECT_LE(r, r_star + 1e-12) << "offload must hide under compute: T(s) ≥ Act(s)·r/B";
    EXPECT_GE(r, 0.0);
    // D at the chosen r is Eq. 3 and as small as at r*; r is the smallest reaching it.
    const int d = ranks_for(s, r, o);
    EXPECT_EQ(d, ranks_for(s, r_star, o)) << s;
    EXPECT_EQ(d, int(std::ceil((2 * a + (1 - r) * (l - 2) * a) / (l * ac) - 1e-9))) << s;
    if (r > 1e-6) {
      EXPECT_GT(ranks_for(s, r - 1e-3, o), d) << s;
    }
    EXPECT_LE(d, ranks_for(s, 0.0, o));
  }
}

TEST(Planner, PropertiesOverRandomLengths) {
  Rng rng(42);
  const Scheduler all[] = {Scheduler::naive, Scheduler::balance_dp, Scheduler::balance_pp,
                           Scheduler::static_dpcp};
  for (int trial = 0; trial < 40; trial++) {
    const int64_t cap = 256 << rng.below(6);           // 256 .. 8192
    const int ranks = 4 + int(rng.below(60));
    const int n = 1 + int(rng.below(300));
    auto len = random_lengths(rng, n, cap * int64_t(1 + rng.below(uint64_t(ranks))));
    PlanOptions o = opts_7b(ranks, cap);
    o.layers = 2 + int(rng.below(30));
    o.pp = 1 + int(rng.below(3));
    o.offload_bw = (trial % 2) ? 64e9 : 0.0;
    o.delta = 0.01;
    o.window = (trial % 3 == 0) ? 256 : 0;
    for (Scheduler s : all) {
      SCOPED_TRACE(fmt::format("trial {} scheduler {} C {} ranks {} n {}", trial, to_string(s), cap, ranks, n));
      Plan p;
      std::string err = error_of([&] { p = plan_make(s, len, o); });
      if (err != "(no error)") {  // only allowed failure: too few ranks for one sequence
        EXPECT_NE(err.find("ranks"), std::string::npos) << err;
        continue;
      }
      EXPECT_NO_THROW(plan_check(p, len, o));
      if (s == Scheduler::naive && o.offload_bw == 0) {
        for (size_t i = 0; i < len.size(); i++)
          EXPECT_EQ(int(p.seqs[i].ranks.size()), len[i] <= cap ? 1 : ranks_for(len[i], 0.0, o)) << i;
      }
      if (s != Scheduler::static_dpcp) {
        for (size_t i = 0; i < len.size(); i++) {
          if (len[i] <= cap || o.offload_bw == 0) {
            EXPECT_EQ(p.seqs[i].offload_ratio, 0.0) << "packed sequences and no offloading keep r = 0";
          }
        }
      }
      double mx = 0;
      for (const auto& r : p.ranks) mx = std::max(mx, r.time_s);
      EXPECT_DOUBLE_EQ(p.step_time_s, mx);
    }
  }
}

TEST(Planner, PlanCheckCatchesViolations) {
  PlanOptions o = opts_7b(8, 1024);
  std::vector<int64_t> len = {100, 900, 3000, 50};
  Plan p = plan_naive(len, o);
  ASSERT_NO_THROW(plan_check(p, len, o));
  Plan twice = p;  // sequence 0 (100 tokens) copied into the micro-batch holding sequence 3
  bool done = false;
  for (auto& r : twice.ranks)
    for (auto& mb : r.micro_batches)
      if (!done && mb.slices.size() == 1 && mb.slices[0].seq == 3) {
        mb.slices.push_back(Slice{0, 0, 100});
        mb.tokens += 100;
        done = true;
      }
  ASSERT_TRUE(done);
  std::string e = error_of([&] { plan_check(twice, len, o); });
  EXPECT_NE(e.find("sequence 0: tokens [0, 100) assigned twice"), std::string::npos) << e;
  Plan missing = p;
  for (auto& r : missing.ranks)
    for (auto& mb : r.micro_batches)
      if (mb.slices.size() == 1 && mb.slices[0].seq == 2) {
        mb.slices[0].end -= 1;
        mb.tokens -= 1;
      }
  EXPECT_NE(error_of([&] { plan_check(missing, len, o); }).find("not assigned"), std::string::npos);
}

TEST(Planner, BalanceWithinDeltaWhereAchievable) {
  // Many short sequences (each far below δ of work) plus a few long ones: the balance
  // scheduler must even out the ranks to within δ; naive HDP does not.
  Rng rng(7);
  PlanOptions o = opts_7b(64, 8192);
  std::vector<int64_t> len;
  for (int i = 0; i < 4000; i++) len.push_back(64 + int64_t(rng.below(2000)));
  for (int i = 0; i < 6; i++) len.push_back(8192 * (4 + int64_t(rng.below(12))));
  double biggest_bin = 0;
  {
    Plan p = plan_naive(len, o);
    for (const auto& r : p.ranks)
      for (const auto& mb : r.micro_batches)
        if (mb.slices.size() > 1) biggest_bin = std::max(biggest_bin, mb.time_s);
  }
  o.delta = 1.01 * biggest_bin;
  for (bool pp : {false, true}) {
    Plan b = plan_balance(len, o, pp);
    plan_check(b, len, o);
    EXPECT_LE(b.imbalance_s, o.delta) << (pp ? "balance-pp" : "balance-dp");
  }
  Plan n = plan_naive(len, o);
  EXPECT_GT(n.imbalance_s, o.delta) << "the naive plan should be visibly imbalanced here";
  EXPECT_LT(plan_balance(len, o, false).step_time_s, n.step_time_s);
}

TEST(Planner, RanksRunDifferentNumbersOfMicroBatches) {
  PlanOptions o = opts_7b(16, 4096);
  std::vector<int64_t> len = {4096 * 12};
  for (int i = 0; i < 400; i++) len.push_back(1000);
  Plan p = plan_balance(len, o, false);
  plan_check(p, len, o);
  size_t mn = SIZE_MAX, mx = 0;
  for (const auto& r : p.ranks) {
    mn = std::min(mn, r.micro_batches.size());
    mx = std::max(mx, r.micro_batches.size());
  }
  EXPECT_LT(mn, mx);
}

TEST(Planner, StaticBaseline) {
  PlanOptions o = opts_7b(12, 1000);
  std::vector<int64_t> len = {2500, 100, 200, 700, 900};
  Plan p = plan_static(len, o);
  EXPECT_EQ(p.cp_degree, 3) << "smallest divisor of 12 with d_cp·C ≥ 2500";
  plan_check(p, len, o);
  for (const auto& s : p.seqs) EXPECT_EQ(s.ranks.size(), 3u) << "every sequence spans its CP group";
  o.ranks = 2;
  std::string e = error_of([&] { plan_static(len, o); });
  EXPECT_NE(e.find("needs 3 ranks"), std::string::npos) << e;
  EXPECT_NE(e.find("only 2 ranks"), std::string::npos) << e;
}

TEST(Planner, MoreRanksNeededThanExist) {
  PlanOptions o = opts_7b(4, 1000);
  std::vector<int64_t> len = {100, 9000};
  for (Scheduler s : {Scheduler::naive, Scheduler::balance_dp}) {
    std::string e = error_of([&] { plan_make(s, len, o); });
    EXPECT_NE(e.find("sequence 1 (length 9000) needs 9 ranks"), std::string::npos) << e;
    EXPECT_NE(e.find("only 4 HDP ranks"), std::string::npos) << e;
  }
  EXPECT_NE(error_of([] { scheduler_from_string("fifo"); }).find("unknown scheduler 'fifo'"), std::string::npos);
}

TEST(Planner, TwelveThousandRanksUnderOneSecond) {
  auto len = lengths_sample("bytescale", int64_t(32) << 20, 2 << 20, 3);
  PlanOptions o = opts_7b(12288, 16384);
  o.offload_bw = 64e9;
  for (Scheduler s : {Scheduler::naive, Scheduler::balance_dp, Scheduler::balance_pp}) {
    auto t0 = std::chrono::steady_clock::now();
    Plan p = plan_make(s, len, o);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(dt, 1.0) << to_string(s);
    plan_check(p, len, o);
  }
}

TEST(Lengths, ByteScaleDistributionShares) {
  auto len = lengths_sample("bytescale", int64_t(1) << 30, 2 << 20, 11);
  double n = double(len.size()), tok = 0, short_n = 0, long_n = 0, long_tok = 0, top_n = 0, top_tok = 0;
  for (int64_t s : len) {
    tok += double(s);
    short_n += s <= 4096;
    if (s >= 131072) { long_n++; long_tok += double(s); }
    if (s == 2 << 20) { top_n++; top_tok += double(s); }
  }
  EXPECT_NEAR(short_n / n, 0.80, 0.02);
  EXPECT_NEAR(long_n / n, 0.01, 0.002);
  EXPECT_NEAR(long_tok / tok, 0.44, 0.06);
  EXPECT_NEAR(top_n / n, 0.0005, 0.0002);
  EXPECT_NEAR(top_tok / tok, 0.12, 0.04);
  int64_t total = 0;
  for (int64_t s : lengths_sample("github", 1000000, 65536, 1)) {
    EXPECT_LE(s, 65536);
    total += s;
  }
  EXPECT_EQ(total, 1000000) << "exactly the requested tokens";
}

TEST(Lengths, BadInputsNameTheProblem) {
  EXPECT_NE(error_of([] { lengths_sample("zipf", 1000, 100, 1); }).find("unknown length distribution 'zipf'"),
            std::string::npos);
  fs::path f = fs::temp_directory_path() / fmt::format("lcx_lengths_{}.txt", getpid());
  {
    std::ofstream o(f);
    o << "# lengths\n1024\n\n2048 \nabc\n";
  }
  std::string e = error_of([&] { lengths_read(f.string()); });
  EXPECT_NE(e.find(f.string() + ":5:"), std::string::npos) << e;
  EXPECT_NE(e.find("'abc'"), std::string::npos) << e;
  {
    std::ofstream o(f);
    o << "12\n0\n";
  }
  EXPECT_NE(error_of([&] { lengths_read(f.string()); }).find(":2: sequence length must be > 0"), std::string::npos);
  {
    std::ofstream o(f);
    o << "5\n7\n";
  }
  EXPECT_EQ(lengths_read(f.string()), (std::vector<int64_t>{5, 7}));
  fs::remove(f);
}

TEST(CostModel, LeastSquaresRecoversCoefficients) {
  CostModel truth;
  truth.alpha1 = 3e-12;
  truth.beta1 = 2e-7;
  truth.gamma = 1e-4;
  truth.alpha2 = 5000;
  truth.beta2 = 1e6;
  std::vector<ProfilePoint> pts;
  for (double s : {256.0, 512.0, 1024.0, 4096.0, 16384.0})
    pts.push_back({s, truth.time(s), truth.act(s)});
  CostModel c;
  cost_fit_time(c, pts);
  cost_fit_act(c, pts);
  EXPECT_NEAR(c.alpha1, truth.alpha1, 1e-6 * truth.alpha1 + 1e-18);
  EXPECT_NEAR(c.beta1, truth.beta1, 1e-6 * truth.beta1);
  EXPECT_NEAR(c.gamma, truth.gamma, 1e-6 * truth.gamma);
  EXPECT_NEAR(c.alpha2, truth.alpha2, 1e-6 * truth.alpha2);
  EXPECT_NEAR(c.beta2, truth.beta2, 1e-6 * truth.beta2);
  CostModel back = cost_from_json(cost_to_json(c), "x");
  EXPECT_DOUBLE_EQ(back.alpha1, c.alpha1);
  EXPECT_NE(error_of([] { cost_from_json(nlohmann::json{{"time", {{"alpha1", 1}}}}, "p.json"); })
                .find("p.json: \"time.beta1\" must be a number"),
            std::string::npos);
  EXPECT_NE(error_of([&] { cost_fit_time(c, {pts[0], pts[1]}); }).find("at least 3"), std::string::npos);
  Link ib{8e-6, 50e9};
  EXPECT_DOUBLE_EQ(ib.time(50e9), 1.0 + 8e-6);
  EXPECT_DOUBLE_EQ(ib.time(0), 0.0);
}

TEST(Planner, JsonRoundTripForTheRuntime) {
  Rng rng(3);
  auto len = random_lengths(rng, 200, 40000);
  PlanOptions o = opts_7b(16, 4096);
  o.offload_bw = 64e9;
  Plan p = plan_balance(len, o, false);
  nlohmann::json j = plan_to_json(p, true);
  Plan q = plan_from_json(nlohmann::json::parse(j.dump()), "plan.json");
  ASSERT_NO_THROW(plan_check(q, len, o));
  ASSERT_EQ(q.ranks.size(), p.ranks.size());
  for (size_t r = 0; r < p.ranks.size(); r++) {
    ASSERT_EQ(q.ranks[r].micro_batches.size(), p.ranks[r].micro_batches.size());
    for (size_t m = 0; m < p.ranks[r].micro_batches.size(); m++)
      for (size_t k = 0; k < p.ranks[r].micro_batches[m].slices.size(); k++) {
        EXPECT_EQ(q.ranks[r].micro_batches[m].slices[k].seq, p.ranks[r].micro_batches[m].slices[k].seq);
        EXPECT_EQ(q.ranks[r].micro_batches[m].slices[k].end, p.ranks[r].micro_batches[m].slices[k].end);
      }
  }
  for (size_t i = 0; i < len.size(); i++) {
    EXPECT_EQ(q.seqs[i].ranks, p.seqs[i].ranks);
    EXPECT_DOUBLE_EQ(q.seqs[i].offload_ratio, p.seqs[i].offload_ratio);
  }
  nlohmann::json bad = j;
  bad["rank_plans"][2]["micro_batches"][0]["slices"][0] = {1, 2};
  std::string e = error_of([&] { plan_from_json(bad, "plan.json"); });
  EXPECT_NE(e.find("plan.json: rank_plans[2].micro_batches[0].slices[0] must be [sequence, begin, end]"),
            std::string::npos) << e;
  bad = j;
  bad.erase("sequences");
  EXPECT_NE(error_of([&] { plan_from_json(bad, "plan.json"); }).find("missing \"sequences\""), std::string::npos);
}
