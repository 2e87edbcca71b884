// Cluster simulator (simulator.h).
#include "dist/simulator.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "dist/lengths.h"

namespace longctx {

const double kPaperAblation[5] = {1.00, 1.59, 2.01, 3.69, 3.89};

namespace {

const char* kStageNames[5] = {"a", "b", "c", "d", "e"};
const char* kStageLabels[5] = {"static DP×CP", "+ dynamic communication (HDP)",
                               "+ selective offloading", "+ balance scheduler",
                               "+ remote dataloader"};

}  // namespace

int sim_window(const SimOptions& o) {
  LCX_CHECK(o.window >= 0, "--window must be >= 0, got {}", o.window);
  if (o.attention.empty()) return o.window;
  if (o.attention == "full") {
    LCX_CHECK(o.window == 0, "--window {} is for sliding-window attention; --attention full has "
              "none (use --attention swat)", o.window);
    return 0;
  }
  LCX_CHECK(o.attention == "swat", "unknown --attention '{}' (expected full or swat)", o.attention);
  return o.window > 0 ? o.window : kSwatWindow;
}

SimSetup sim_setup(const SimOptions& o) {
  SimSetup su;
  ModelShape& m = su.model;
  PlanOptions& po = su.plan;
  m = model_shape_preset(o.model);
  su.hw = hardware_preset(o.hardware);
  const Hardware& hw = su.hw;
  if (o.tp > 0) m.tp = o.tp;
  if (o.pp > 0) m.pp = o.pp;
  m.window = sim_window(o);
  LCX_CHECK(m.tp <= hw.gpus_per_node && hw.gpus_per_node % m.tp == 0,
            "--tp {} must divide the {} GPUs of a node", m.tp, hw.gpus_per_node);
  LCX_CHECK(m.layers % m.pp == 0, "--pp {} must divide the model's {} layers", m.pp, m.layers);
  LCX_CHECK(m.heads % m.tp == 0, "--tp {} must divide the model's {} heads", m.tp, m.heads);
  LCX_CHECK(o.gpus >= m.tp * m.pp && o.gpus % (m.tp * m.pp) == 0,
            "--gpus {} must be a multiple of TP×PP = {}", o.gpus, m.tp * m.pp);
  LCX_CHECK(o.steps > 0, "--steps must be > 0, got {}", o.steps);
  const int ranks = o.gpus / (m.tp * m.pp);

  po.ranks = ranks;
  po.layers = m.layers / m.pp;
  po.pp = m.pp;
  po.cost = o.cost_file.empty() ? cost_from_specs(m, hw, o.mfu) : cost_from_file(o.cost_file);
  po.kv_bytes_per_token = kv_bytes_per_token(m);
  po.window = m.window;
  po.link_intra = hw.nvlink;
  po.link_inter = hw.ib;
  po.ranks_per_node = std::max(1, hw.gpus_per_node / m.tp);
  po.delta = o.delta;
  po.seed = o.seed;
  const double states = su.state_bytes = model_state_bytes(m, ranks);
  const double free_bytes = hw.hbm_bytes * o.mem_usable - states;
  LCX_CHECK(free_bytes > 0,
            "model {} with TP {} PP {} needs {:.1f} GB of model states per GPU, more than {:.0f} % of "
            "{:.0f} GB; raise --tp/--pp",
            m.name, m.tp, m.pp, states / 1e9, 100 * o.mem_usable, hw.hbm_bytes / 1e9);
  if (o.capacity > 0) {
    po.capacity = o.capacity;
  } else {
    // 1F1B keeps pp micro-batches in flight on the first stage: pp · l · Act(C) ≤ free memory.
    const double per_token = double(m.pp) * po.layers * po.cost.alpha2;
    po.capacity = int64_t(free_bytes / per_token) / 1024 * 1024;
    LCX_CHECK(po.capacity >= 1024, "less than 1024 tokens of activation memory per GPU; raise --tp/--pp");
  }

  return su;
}

SimResult simulate(const SimOptions& o) {
  SimSetup su = sim_setup(o);
  const ModelShape& m = su.model;
  const Hardware& hw = su.hw;
  const PlanOptions& po = su.plan;
  const int ranks = po.ranks;
  const double states = su.state_bytes;
  const double grad_bytes = m.params() / (double(m.tp) * m.pp) * 2.0;  // bf16 per GPU
  const double grad_sync = ranks > 1 ? 2.0 * (ranks - 1) / ranks * grad_bytes / hw.ib.bandwidth : 0.0;
  const double loader = double(o.global_tokens) / (o.tokenize_rate * o.loader_cores) +
                        double(o.global_tokens) * o.bytes_per_token / o.storage_bw;

  SimResult res;
  res.setup = {{"model", m.name},        {"hardware", hw.name},
               {"gpus", o.gpus},         {"tp", m.tp},
               {"pp", m.pp},             {"hdp_ranks", ranks},
               {"layers_per_rank", po.layers},
               {"capacity", po.capacity}, {"context", o.context},
               {"global_tokens", o.global_tokens},
               {"distribution", o.lengths_file.empty() ? o.dist : o.lengths_file},
               {"attention", m.window > 0 ? "swat" : "full"},
               {"window", m.window},     {"mfu", o.mfu},
               {"model_state_gb_per_gpu", states / 1e9},
               {"cost", cost_to_json(po.cost)},
               {"offload_bw", hw.pcie.bandwidth},
               {"grad_sync_s", grad_sync}, {"loader_s", loader}};

  std::vector<StageResult> st(5);
  for (int i = 0; i < 5; i++) {
    st[size_t(i)].name = kStageNames[i];
    st[size_t(i)].label = kStageLabels[i];
  }
  double tokens_total = 0;
  for (int step = 0; step < o.steps; step++) {
    std::vector<int64_t> len = o.lengths_file.empty()
                                   ? lengths_sample(o.dist, o.global_tokens, o.context, o.seed + step)
                                   : lengths_read(o.lengths_file);
    int64_t toks = 0;
    for (int64_t s : len) toks += s;
    tokens_total += double(toks);
    PlanOptions off = po;
    off.offload_bw = hw.pcie.bandwidth;
    Plan pa = plan_static(len, po);
    Plan pb = plan_naive(len, po);
    Plan pc = plan_naive(len, off);
    auto t0 = std::chrono::steady_clock::now();
    Plan pd = plan_balance(len, off, m.pp > 1);
    double pt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step == 0) res.plan_time_s = pt;
    const Plan* plans[4] = {&pa, &pb, &pc, &pd};
    for (int i = 0; i < 5; i++) {
      const Plan& p = *plans[std::min(i, 3)];
      StageResult& s = st[size_t(i)];
      const double ld = i < 4 ? loader : 0.0;  // (e): prefetched by the remote loader, off the critical path
      s.step_s += p.step_time_s + grad_sync + ld;
      s.compute_s += p.step_time_s;
      s.exposed_comm_s += p.comm_s / ranks;
      s.imbalance_s += p.imbalance_s;
      s.loader_s += ld;
      s.grad_sync_s += grad_sync;
    }
    if (step == 0) {
      res.plan_static = std::move(pa);
      res.plan_naive = std::move(pb);
      res.plan_balance = std::move(pd);
    }
  }
  for (auto& s : st) {
    s.tokens_per_s = tokens_total / s.step_s;
    s.step_s /= o.steps;
    s.compute_s /= o.steps;
    s.exposed_comm_s /= o.steps;
    s.imbalance_s /= o.steps;
    s.loader_s /= o.steps;
    s.grad_sync_s /= o.steps;
  }
  for (auto& s : st) s.speedup = s.tokens_per_s / st[0].tokens_per_s;
  res.stages = std::move(st);
  return res;
}

nlohmann::json sim_to_json(const SimResult& r) {
  nlohmann::json j = {{"setup", r.setup}, {"plan_time_s", r.plan_time_s}};
  nlohmann::json st = nlohmann::json::array();
  for (size_t i = 0; i < r.stages.size(); i++) {
    const auto& s = r.stages[i];
    st.push_back({{"stage", s.name},
                  {"label", s.label},
                  {"step_s", s.step_s},
                  {"tokens_per_s", s.tokens_per_s},
                  {"speedup", s.speedup},
                  {"paper_speedup", kPaperAblation[i]},
                  {"critical_path_s", s.compute_s},
                  {"exposed_cp_comm_s_per_rank", s.exposed_comm_s},
                  {"imbalance_s", s.imbalance_s},
                  {"loader_s", s.loader_s},
                  {"grad_sync_s", s.grad_sync_s}});
  }
  j["stages"] = std::move(st);
  return j;
}

std::string sim_table(const SimResult& r, bool compare_paper) {
  const auto& su = r.setup;
  std::string out = fmt::format(
      "model {} on {} × {} (TP {}, PP {}, {} HDP ranks, {} layers/rank), C = {} tokens/rank, "
      "context {}, {} tokens/batch, distribution {}\n",
      su["model"].get<std::string>(), su["gpus"].get<int>(), su["hardware"].get<std::string>(),
      su["tp"].get<int>(), su["pp"].get<int>(), su["hdp_ranks"].get<int>(),
      su["layers_per_rank"].get<int>(), su["capacity"].get<int64_t>(), su["context"].get<int64_t>(),
      su["global_tokens"].get<int64_t>(), su["distribution"].get<std::string>());
  out += fmt::format("{:<34} {:>10} {:>12} {:>8}{}  {:>9} {:>10} {:>8}\n", "stage", "step (s)",
                     "tokens/s", "speedup", compare_paper ? "    paper" : "", "comm (s)",
                     "imbal (s)", "load (s)");
  for (size_t i = 0; i < r.stages.size(); i++) {
    const auto& s = r.stages[i];
    out += fmt::format("({}) {:<30} {:>10.3f} {:>12.4g} {:>7.2f}x{}  {:>9.3f} {:>10.3f} {:>8.3f}\n",
                       s.name, s.label, s.step_s, s.tokens_per_s, s.speedup,
                       compare_paper ? fmt::format(" {:>7.2f}x", kPaperAblation[i]) : "",
                       s.exposed_comm_s, s.imbalance_s, s.loader_s);
  }
  out += fmt::format("planner (balance scheduler) time for one batch: {:.1f} ms\n", r.plan_time_s * 1e3);
  return out;
}

SimComparison simulate_attention_kinds(SimOptions o) {
  const int w = o.window > 0 ? o.window : kSwatWindow;
  SimComparison c;
  o.attention = "full";
  o.window = 0;
  c.full = simulate(o);
  o.attention = "swat";
  o.window = w;
  c.swat = simulate(o);
  return c;
}

std::string sim_comparison_table(const SimComparison& c) {
  const auto& su = c.full.setup;
  std::string out = fmt::format(
      "model {} (full causal attention vs SWAT w = {}) on {} × {} (TP {}, PP {}, {} HDP ranks), "
      "C = {} / {} tokens/rank, context {}, {} tokens/batch, distribution {}\n",
      su["model"].get<std::string>(), c.swat.setup["window"].get<int>(), su["gpus"].get<int>(),
      su["hardware"].get<std::string>(), su["tp"].get<int>(), su["pp"].get<int>(),
      su["hdp_ranks"].get<int>(), su["capacity"].get<int64_t>(),
      c.swat.setup["capacity"].get<int64_t>(), su["context"].get<int64_t>(),
      su["global_tokens"].get<int64_t>(), su["distribution"].get<std::string>());
  out += fmt::format("{:<34} {:>10} {:>10} {:>12} {:>12} {:>9} {:>9} {:>8}\n", "stage",
                     "full (s)", "swat (s)", "full tok/s", "swat tok/s", "full comm", "swat comm",
                     "swat/full");
  for (size_t i = 0; i < c.full.stages.size(); i++) {
    const auto &f = c.full.stages[i], &s = c.swat.stages[i];
    out += fmt::format("({}) {:<30} {:>10.3f} {:>10.3f} {:>12.4g} {:>12.4g} {:>9.3f} {:>9.3f} {:>7.2f}x\n",
                       f.name, f.label, f.step_s, s.step_s, f.tokens_per_s, s.tokens_per_s,
                       f.exposed_comm_s, s.exposed_comm_s, f.step_s / s.step_s);
  }
  return out;
}

}  // namespace longctx
