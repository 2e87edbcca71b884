// `longctx simulate`: the ByteScale cluster simulator — step time and tokens/s of the ablation
// stages (a)–(e) next to the paper's, per-rank time bars and speedup-vs-context plots (gnuplot).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/gnuplot.h"
#include "core/error.h"
#include "dist/simulator.h"

namespace fs = std::filesystem;

namespace longctx {

namespace {

// Per-rank predicted time: static DP×CP vs naive HDP vs balanced HDP (the paper's case study).
void plot_ranks(const SimResult& r, const std::string& out) {
  fs::path tmp = fs::temp_directory_path() / fmt::format("longctx-sim-{}", ::getpid());
  fs::create_directories(tmp);
  const Plan* plans[3] = {&r.plan_static, &r.plan_naive, &r.plan_balance};
  const char* titles[3] = {"(a) static DP×CP", "(b) naive HDP", "(d) HDP + offload + balance"};
  double ymax = 0;
  for (const Plan* p : plans) ymax = std::max(ymax, p->step_time_s);
  std::ofstream gp(tmp / "ranks.gp");
  gp << "set terminal pngcairo size 1400,900 font 'sans,10'\nset output " << gp_quote(out) << "\n"
     << "set multiplot layout 3,1 title "
     << gp_quote(fmt::format("predicted time per HDP rank — {} on {} GPUs, {} tokens/batch",
                             r.setup["model"].get<std::string>(), r.setup["gpus"].get<int>(),
                             r.setup["global_tokens"].get<int64_t>()))
     << "\nset style fill solid 0.8 noborder\nset boxwidth 0.9 relative\nset grid y\n"
     << "set ylabel 'seconds'\nset yrange [0:" << ymax * 1.05 << "]\nset xrange [-1:" << r.plan_static.ranks.size() << "]\n";
  for (int i = 0; i < 3; i++) {
    fs::path dat = tmp / fmt::format("ranks{}.dat", i);
    std::ofstream d(dat);
    for (size_t k = 0; k < plans[i]->ranks.size(); k++)
      d << k << ' ' << plans[i]->ranks[k].busy_s << ' ' << plans[i]->ranks[k].time_s << '\n';
    gp << "set title " << gp_quote(fmt::format("{}: step {:.2f} s", titles[i], plans[i]->step_time_s))
       << "\n" << (i == 2 ? "set xlabel 'HDP rank'\n" : "unset xlabel\n")
       << "plot " << gp_quote(dat.string()) << " using 1:3 with boxes linecolor rgb '#c0c0c0' title 'finish (incl. waits)', "
       << gp_quote(dat.string()) << " using 1:2 with boxes linecolor " << i + 1 << " title 'busy'\n";
  }
  gp << "unset multiplot\n";
  gp.close();
  run_gnuplot(tmp / "ranks.gp", out);
  fs::remove_all(tmp);
}

}  // namespace

void register_simulate(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "simulate",
      "Simulate ByteScale HDP on a GPU cluster: step time and tokens/s of the ablation stages "
      "(a) static DP×CP (b) +dynamic communication (c) +selective offloading (d) +balance "
      "scheduler (e) +remote dataloader, next to the paper's 7B/2M/1,024-GPU ablation");
  struct Opts {
    SimOptions sim;
    std::string json_out, plot_ranks, plot_context;
    std::vector<int64_t> contexts = {256 << 10, 512 << 10, 1 << 20, 2 << 20};
  };
  auto o = std::make_shared<Opts>();
  SimOptions& s = o->sim;
  cmd->add_option("--model", s.model, "7b | 13b | 30b | 70b (LLaMA shapes) or a longctx preset (e.g. swat-340m, with a profile of it: --cost)")->capture_default_str();
  cmd->add_option("--hardware", s.hardware, "h100 | a100 (public specs)")->capture_default_str();
  cmd->add_option("--gpus", s.gpus, "GPUs in the cluster")->capture_default_str();
  cmd->add_option("--context", s.context, "Longest sequence (tokens)")->capture_default_str();
  cmd->add_option("--tokens", s.global_tokens, "Tokens per global batch")->capture_default_str();
  cmd->add_option("--dist", s.dist, "Length distribution: bytescale | github | uniform")->capture_default_str();
  cmd->add_option("--lengths", s.lengths_file, "File of sequence lengths (one global batch), overrides --dist");
  cmd->add_option("--tp", s.tp, "Tensor parallel size (default: the preset's)");
  cmd->add_option("--pp", s.pp, "Pipeline stages (default: the preset's)");
  cmd->add_option("--attention", s.attention,
                  "full (causal softmax, Llama-style: quadratic cost, ring K/V exchange) | swat "
                  "(sliding window: linear cost, halo exchange; --window, default 256) | both "
                  "(the two side by side on the same data and cluster); default: swat iff --window");
  cmd->add_option("--window", s.window, "Simulate a SWAT model with this window (0 = full causal)")->capture_default_str();
  cmd->add_option("--mfu", s.mfu, "Achieved fraction of peak FLOP/s")->capture_default_str();
  cmd->add_option("--capacity,-C", s.capacity, "Tokens per rank per micro-batch (default: from GPU memory)");
  cmd->add_option("--cost", s.cost_file, "Cost profile JSON (`longctx bench profile`) instead of specs");
  cmd->add_option("--delta", s.delta, "Balance tolerance δ in seconds")->capture_default_str();
  cmd->add_option("--steps", s.steps, "Global batches to average")->capture_default_str();
  cmd->add_option("--seed", s.seed, "Seed of the drawn lengths")->capture_default_str();
  cmd->add_option("--loader-cores", s.loader_cores, "Host cores per node tokenizing (no remote loader)")->capture_default_str();
  cmd->add_option("--tokenize-rate", s.tokenize_rate, "Tokens/s per host core")->capture_default_str();
  cmd->add_option("--json", o->json_out, "Write the results as JSON here");
  cmd->add_option("--plot-ranks", o->plot_ranks, "PNG: per-rank time, static vs naive vs balanced");
  cmd->add_option("--plot-context", o->plot_context, "PNG: speedup of each stage vs context length");
  cmd->add_option("--contexts", o->contexts, "Context lengths for --plot-context (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->callback([o] {
    auto write_json = [&](const nlohmann::json& j) {
      if (o->json_out.empty()) return;
      std::ofstream out(o->json_out);
      LCX_CHECK(out.good(), "cannot write {}", o->json_out);
      out << j.dump(2) << "\n";
      fmt::print("wrote {}\n", o->json_out);
    };
    if (o->sim.attention == "both") {
      LCX_CHECK(o->plot_ranks.empty() && o->plot_context.empty(),
                "--attention both prints a comparison table; plots need one attention kind");
      const SimComparison c = simulate_attention_kinds(o->sim);
      fmt::print("{}", sim_comparison_table(c));
      write_json({{"full", sim_to_json(c.full)}, {"swat", sim_to_json(c.swat)}});
      return;
    }
    SimResult r = simulate(o->sim);
    fmt::print("{}", sim_table(r, true));
    fmt::print("(paper column: ByteScale ablation, 7B, 2M context, 1,024 GPUs)\n");
    nlohmann::json j = sim_to_json(r);
    if (!o->plot_ranks.empty()) plot_ranks(r, o->plot_ranks);
    if (!o->plot_context.empty()) {
      fs::path tmp = fs::temp_directory_path() / fmt::format("longctx-simctx-{}", ::getpid());
      fs::create_directories(tmp);
      std::ofstream d(tmp / "ctx.dat");
      nlohmann::json sweep = nlohmann::json::array();
      for (int64_t c : o->contexts) {
        SimOptions sc = o->sim;
        sc.context = c;
        SimResult rc = simulate(sc);
        d << c / 1024;
        nlohmann::json row = {{"context", c}};
        for (const auto& st : rc.stages) {
          d << ' ' << st.speedup;
          row[st.name] = st.speedup;
        }
        d << '\n';
        sweep.push_back(row);
        fmt::print("context {:>8}: {:.2f}x {:.2f}x {:.2f}x {:.2f}x {:.2f}x\n", c, rc.stages[0].speedup,
                   rc.stages[1].speedup, rc.stages[2].speedup, rc.stages[3].speedup, rc.stages[4].speedup);
      }
      d.close();
      j["context_sweep"] = sweep;
      std::ofstream gp(tmp / "ctx.gp");
      std::string dat = gp_quote((tmp / "ctx.dat").string());
      gp << "set terminal pngcairo size 900,600 font 'sans,10'\nset output " << gp_quote(o->plot_context)
         << "\nset title " << gp_quote(fmt::format("simulated speedup over static DP×CP — {} on {} GPUs",
                                                   r.setup["model"].get<std::string>(), r.setup["gpus"].get<int>()))
         << "\nset logscale x 2\nset xlabel 'context (K tokens)'\nset ylabel 'speedup vs (a)'\nset grid\n"
         << "set key top left\nplot " << dat << " using 1:3 with linespoints title '(b) +dynamic comm', "
         << dat << " using 1:4 with linespoints title '(c) +offload', " << dat
         << " using 1:5 with linespoints title '(d) +balance', " << dat
         << " using 1:6 with linespoints title '(e) +remote loader'\n";
      gp.close();
      run_gnuplot(tmp / "ctx.gp", o->plot_context);
      fs::remove_all(tmp);
    }
    write_json(j);
  });
}

}  // namespace longctx
