// `longctx plan`: an HDP plan (ByteScale Alg. 1/2 or the static DP×CP baseline) for a list of
// sequence lengths: a readable summary on stdout, the full plan as JSON with --json.
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/hdp_planner.h"
#include "dist/lengths.h"
#include "dist/simulator.h"

namespace longctx {

void register_plan(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "plan",
      "Plan a global batch with ByteScale HDP: ranks per sequence (Eq. 3), micro-batches per rank "
      "(Alg. 1 naive / Alg. 2 balance) or the static DP×CP baseline");
  struct Opts {
    SimOptions sim;
    std::string lengths, scheduler = "balance", json_out;
    int ranks = 0, layers = 0, repeat = 1;
    bool no_offload = false, quiet = false;
    double offload_bw = 0;
  };
  auto o = std::make_shared<Opts>();
  o->sim.gpus = 1024;
  cmd->add_option("--lengths", o->lengths, "File of sequence lengths, one per line ('#' comments)");
  cmd->add_option("--dist", o->sim.dist, "Named distribution when no --lengths: bytescale | github | uniform")
      ->capture_default_str();
  cmd->add_option("--tokens", o->sim.global_tokens, "Global batch tokens drawn from --dist")->capture_default_str();
  cmd->add_option("--context", o->sim.context, "Longest sequence drawn from --dist")->capture_default_str();
  cmd->add_option("--seed", o->sim.seed, "Seed of the drawn lengths")->capture_default_str();
  cmd->add_option("--scheduler", o->scheduler, "static | naive | balance (= balance-dp) | balance-pp")
      ->capture_default_str();
  cmd->add_option("--model", o->sim.model, "Model preset for the cost model: 7b | 13b | 30b | 70b")
      ->capture_default_str();
  cmd->add_option("--hardware", o->sim.hardware, "GPU specs: h100 | a100")->capture_default_str();
  cmd->add_option("--gpus", o->sim.gpus, "GPUs (HDP ranks = gpus / (TP·PP))")->capture_default_str();
  cmd->add_option("--ranks", o->ranks, "HDP ranks (overrides --gpus)");
  cmd->add_option("--tp", o->sim.tp, "Tensor parallel size (default: the model preset's)");
  cmd->add_option("--pp", o->sim.pp, "Pipeline stages (default: the model preset's)");
  cmd->add_option("--capacity,-C", o->sim.capacity, "Tokens per rank per micro-batch (default: from GPU memory)");
  cmd->add_option("--layers", o->layers, "Layers held by one rank, l in Eq. 3 (default: model layers / PP)");
  cmd->add_option("--cost", o->sim.cost_file, "Cost profile JSON from `longctx bench profile` (default: from specs)");
  cmd->add_option("--mfu", o->sim.mfu, "Achieved fraction of peak FLOP/s for the spec cost model")->capture_default_str();
  cmd->add_option("--attention", o->sim.attention,
                  "full (causal softmax: quadratic T(s), ring K/V exchange) | swat (linear T(s), "
                  "halo exchange; --window, default 256); default: swat iff --window");
  cmd->add_option("--window", o->sim.window, "SWAT window (0 = full causal attention)")->capture_default_str();
  cmd->add_flag("--no-offload", o->no_offload, "Disable selective activation offloading (r = 0)");
  cmd->add_option("--offload-bw", o->offload_bw, "min(B_d2h, B_h2d) in bytes/s (default: the hardware's PCIe)");
  cmd->add_option("--delta", o->sim.delta, "Balance tolerance δ in seconds")->capture_default_str();
  cmd->add_option("--json", o->json_out, "Write the full plan (every rank's micro-batches and slices) here");
  cmd->add_option("--repeat", o->repeat, "Plan this many times and report the time (benchmark)")->capture_default_str();
  cmd->add_flag("--quiet", o->quiet, "Print only the timing line");
  cmd->callback([o] {
    sim_window(o->sim);  // check --attention / --window before reading any lengths
    std::vector<int64_t> len =
        o->lengths.empty() ? lengths_sample(o->sim.dist, o->sim.global_tokens, o->sim.context, o->sim.seed)
                           : lengths_read(o->lengths);
    const Scheduler sched = scheduler_from_string(o->scheduler);
    SimOptions so = o->sim;
    if (o->ranks > 0) {  // ranks given directly: size the cluster from them
      ModelShape m = model_shape_preset(so.model);
      const int tp = so.tp > 0 ? so.tp : m.tp, pp = so.pp > 0 ? so.pp : m.pp;
      so.gpus = o->ranks * tp * pp;
    }
    SimSetup su = sim_setup(so);
    PlanOptions po = su.plan;
    if (o->layers > 0) po.layers = o->layers;
    po.offload_bw = o->no_offload ? 0.0 : (o->offload_bw > 0 ? o->offload_bw : su.hw.pcie.bandwidth);
    LCX_CHECK(o->repeat > 0, "--repeat must be > 0, got {}", o->repeat);
    Plan p;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < o->repeat; i++) p = plan_make(sched, len, po);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / o->repeat;
    int64_t tokens = 0;
    for (int64_t s : len) tokens += s;
    if (!o->quiet) fmt::print("{}", plan_summary(p));
    fmt::print("planned {} sequences ({} tokens) on {} ranks in {:.1f} ms\n", len.size(), tokens,
               po.ranks, dt * 1e3);
    if (!o->json_out.empty()) {
      std::ofstream out(o->json_out);
      LCX_CHECK(out.good(), "cannot write {}", o->json_out);
      nlohmann::json j = plan_to_json(p, true);
      j["plan_time_s"] = dt;
      out << j.dump() << "\n";
      LCX_CHECK(out.good(), "error writing {}", o->json_out);
      if (!o->quiet) fmt::print("wrote {}\n", o->json_out);
    }
  });
}

}  // namespace longctx
