// Cluster simulator (src/dist/simulator) and the `longctx plan|simulate|bench profile` commands:
// presets, scale, ablation ordering, JSON outputs, and bad inputs giving clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "dist/simulator.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace longctx;
using longctx::testing::CliRun;

namespace {

using longctx::testing::error_of;

// One OpenMP thread for the CLI runs: its thread pool spinning against a loaded CI box costs 10x.
CliRun run_cli(const std::string& args) {
  ::setenv("OMP_NUM_THREADS", "1", 1);
  return longctx::testing::run_cli(args);
}

#define EXPECT_ERROR(r, needle) EXPECT_CLI_ERROR(r, needle)


fs::path tmpfile(const std::string& name) {
  return fs::temp_directory_path() / fmt::format("lcx_sim_{}_{}", getpid(), name);
}

}  // namespace

TEST(Simulator, AblationStagesImproveOnThePaperSetup) {
  SimOptions o;  // 7B, 2M context, 1,024 H100, bytescale distribution, 32M tokens
  o.steps = 1;
  SimResult r = simulate(o);
  ASSERT_EQ(r.stages.size(), 5u);
  EXPECT_DOUBLE_EQ(r.stages[0].speedup, 1.0);
  EXPECT_GT(r.stages[1].speedup, 1.1) << "dynamic communication removes the short sequences' ring traffic";
  EXPECT_GE(r.stages[2].speedup, r.stages[1].speedup * 0.999) << "selective offloading helps on this setup";
  EXPECT_GT(r.stages[3].speedup, r.stages[2].speedup) << "balance scheduler";
  EXPECT_GT(r.stages[4].speedup, r.stages[3].speedup) << "remote loader takes loading off the step";
  EXPECT_LT(r.stages[3].imbalance_s, r.stages[1].imbalance_s);
  EXPECT_EQ(r.setup["hdp_ranks"].get<int>(), 256);
  EXPECT_GT(r.setup["capacity"].get<int64_t>(), 8192);
  EXPECT_LT(r.plan_time_s, 1.0);
  nlohmann::json j = sim_to_json(r);
  EXPECT_EQ(j["stages"][4]["paper_speedup"].get<double>(), 3.89);
  EXPECT_NE(sim_table(r, true).find("(d) + balance scheduler"), std::string::npos);
}

TEST(Simulator, PresetsAndScale) {
  for (const char* m : {"13b", "30b", "70b"}) {
    SimOptions o;
    o.model = m;
    o.steps = 1;
    o.context = 512 << 10;
    SimResult r = simulate(o);
    EXPECT_GT(r.stages[4].tokens_per_s, r.stages[0].tokens_per_s) << m;
  }
  SimOptions big;
  big.gpus = 12288;
  big.steps = 1;
  big.global_tokens = int64_t(32) << 20;
  SimResult r = simulate(big);
  EXPECT_EQ(r.setup["hdp_ranks"].get<int>(), 3072);
  EXPECT_LT(r.plan_time_s, 1.0);
  SimOptions swat;
  swat.window = 4096;
  swat.steps = 1;
  SimResult rs = simulate(swat);
  EXPECT_GT(rs.stages[4].tokens_per_s, r.stages[0].tokens_per_s * 0.0);  // runs
}

// Issue 11: one cost model for both attention kinds — a Llama-style (full causal softmax) and a
// SWAT model of the same shape on the same data and cluster.
TEST(Simulator, FullVsSwatOnTheSameData) {
  SimOptions o;  // 7B, 2M context, 1,024 H100
  o.steps = 1;
  const SimComparison c = simulate_attention_kinds(o);
  EXPECT_EQ(c.full.setup["attention"], "full");
  EXPECT_EQ(c.swat.setup["attention"], "swat");
  EXPECT_EQ(c.swat.setup["window"].get<int>(), kSwatWindow);
  EXPECT_EQ(c.full.setup["distribution"], c.swat.setup["distribution"]);
  for (size_t i = 0; i < c.full.stages.size(); i++)  // quadratic vs linear attention at 2M tokens
    EXPECT_LT(c.swat.stages[i].step_s, c.full.stages[i].step_s) << c.full.stages[i].label;
  // static DP×CP: ring exchange of whole K/V slices vs a halo of w−1 rows
  EXPECT_GT(c.full.stages[0].exposed_comm_s, c.swat.stages[0].exposed_comm_s);
  EXPECT_NE(sim_comparison_table(c).find("swat/full"), std::string::npos);
  o.attention = "swat";  // the same as --window 256
  SimOptions w;
  w.steps = 1;
  w.window = kSwatWindow;
  EXPECT_DOUBLE_EQ(simulate(o).stages[4].step_s, simulate(w).stages[4].step_s);
  o.attention = "mamba";
  EXPECT_NE(error_of([&] { simulate(o); }).find("unknown --attention 'mamba' (expected full or swat)"),
            std::string::npos);
  o.attention = "full";
  o.window = 256;
  EXPECT_NE(error_of([&] { simulate(o); }).find("--attention full has none"), std::string::npos);
}

TEST(Simulator, BadSettingsGiveClearErrors) {
  SimOptions o;
  o.model = "175b";
  EXPECT_NE(error_of([&] { simulate(o); }).find("unknown model '175b'"), std::string::npos);
  o = SimOptions{};
  o.hardware = "tpu";
  EXPECT_NE(error_of([&] { simulate(o); }).find("unknown hardware 'tpu'"), std::string::npos);
  o = SimOptions{};
  o.tp = 3;
  EXPECT_NE(error_of([&] { simulate(o); }).find("--tp 3"), std::string::npos);
  o = SimOptions{};
  o.dist = "pareto";
  EXPECT_NE(error_of([&] { simulate(o); }).find("unknown length distribution 'pareto'"), std::string::npos);
  o = SimOptions{};
  o.gpus = 64;  // 16 ranks × 58K tokens < 2M
  std::string e = error_of([&] { simulate(o); });
  EXPECT_NE(e.find("only 16"), std::string::npos) << e;
}

TEST(Simulator, LengthsFromAFile) {
  fs::path lf = tmpfile("sim_lengths.txt");
  {
    std::ofstream o(lf);
    o << "# one global batch\n";
    o << "1500000\n";
    for (int i = 0; i < 2000; i++) o << 1000 + 37 * (i % 50) << "\n";
  }
  SimOptions o;
  o.lengths_file = lf.string();
  o.steps = 1;
  SimResult r = simulate(o);
  EXPECT_EQ(r.setup["distribution"].get<std::string>(), lf.string());
  EXPECT_GT(r.stages[3].speedup, 1.0);
  {
    std::ofstream f(lf, std::ios::app);
    f << "-5\n";
  }
  CliRun c = run_cli(fmt::format("simulate --lengths {} --steps 1", lf.string()));
  EXPECT_ERROR(c, lf.string() + ":2003:");
  fs::remove(lf);
}

TEST(PlanCli, SimulateBothAttentionKinds) {
  CliRun r = run_cli("simulate --attention both --steps 1 --gpus 256 --context 524288");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("full causal attention vs SWAT w = 256"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(e) + remote dataloader"), std::string::npos) << r.out;
  EXPECT_ERROR(run_cli("simulate --attention both --plot-ranks x.png"), "plots need one attention kind");
  EXPECT_ERROR(run_cli("plan --lengths /dev/null --attention linear"), "unknown --attention 'linear'");
}

TEST(PlanCli, HelpAndJson) {
  for (const char* c : {"plan", "simulate", "bench profile"}) {
    CliRun r = run_cli(std::string(c) + " --help");
    EXPECT_EQ(r.code, 0) << c << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << c << r.out;
  }
  fs::path lf = tmpfile("lengths.txt"), jf = tmpfile("plan.json");
  {
    std::ofstream o(lf);
    o << "# one batch\n300000\n1000\n2000\n70000\n500\n";
  }
  CliRun r = run_cli(fmt::format("plan --lengths {} --ranks 16 --capacity 65536 --json {}", lf.string(), jf.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step time"), std::string::npos) << r.out;
  std::ifstream in(jf);
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["sequences"].size(), 5u);
  EXPECT_EQ(j["rank_plans"].size(), 16u);
  int64_t tokens = 0;
  for (const auto& rp : j["rank_plans"])
    for (const auto& mb : rp["micro_batches"])
      for (const auto& sl : mb["slices"]) tokens += sl[2].get<int64_t>() - sl[1].get<int64_t>();
  EXPECT_EQ(tokens, 300000 + 1000 + 2000 + 70000 + 500);
  r = run_cli(fmt::format("plan --lengths {} --ranks 16 --capacity 65536 --scheduler static", lf.string()));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("d_cp = 8"), std::string::npos) << r.out;
  fs::remove(lf);
  fs::remove(jf);
}

TEST(PlanCli, BadInputs) {
  fs::path lf = tmpfile("bad.txt");
  {
    std::ofstream o(lf);
    o << "1024\n4096\n12x\n";
  }
  EXPECT_ERROR(run_cli(fmt::format("plan --lengths {} --ranks 8", lf.string())), lf.string() + ":3:");
  EXPECT_ERROR(run_cli("plan --dist zipf --ranks 8"), "unknown length distribution 'zipf'");
  EXPECT_ERROR(run_cli("plan --dist bytescale --ranks 4 --capacity 65536 --no-offload"),
               "but only 4 HDP ranks exist");
  EXPECT_ERROR(run_cli("plan --dist bytescale --ranks 64 --scheduler fifo"), "unknown scheduler 'fifo'");
  EXPECT_ERROR(run_cli("plan --lengths /nonexistent/lengths.txt --ranks 4"), "cannot open lengths file");
  EXPECT_ERROR(run_cli("simulate --dist zipf --steps 1"), "unknown length distribution 'zipf'");
  EXPECT_ERROR(run_cli("simulate --model 1t"), "unknown model '1t'");
  EXPECT_ERROR(run_cli("simulate --gpus 64 --steps 1"), "only 16");
  EXPECT_ERROR(run_cli("plan --dist bytescale --ranks 64 --cost /nonexistent.json"), "cannot open cost profile");
  fs::remove(lf);
}

TEST(PlanCli, ProfileFitsAndFeedsThePlanner) {
  fs::path pf = tmpfile("profile.json");
  CliRun r = run_cli(fmt::format("bench profile --preset tiny --lengths 32,64,96 --repeats 1 --out {}", pf.string()));
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream in(pf);
  nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["points"].size(), 3u);
  EXPECT_GT(j["act"]["alpha2"].get<double>(), 0.0);
  for (const auto& p : j["points"]) EXPECT_GT(p["act_bytes"].get<double>(), 0.0);
  r = run_cli(fmt::format("plan --dist bytescale --tokens 200000 --context 16384 --ranks 8 --capacity 4096 --layers 4 --cost {}",
                          pf.string()));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("planned"), std::string::npos) << r.out;
  fs::remove(pf);
}
