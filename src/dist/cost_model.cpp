// Cost model fits, JSON, hardware specs and model shapes (see cost_model.h).
#include "dist/cost_model.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_file.h"
#include "model/config.h"

namespace longctx {

namespace {

// Solve the n×n system A x = b (n ≤ 3) by Gaussian elimination with partial pivoting.
bool solve_small(std::vector<std::vector<double>> A, std::vector<double> b, std::vector<double>& x) {
  const size_t n = b.size();
  for (size_t c = 0; c < n; c++) {
    size_t p = c;
    for (size_t r = c + 1; r < n; r++)
      if (std::fabs(A[r][c]) > std::fabs(A[p][c])) p = r;
    if (std::fabs(A[p][c]) < 1e-300) return false;
    std::swap(A[p], A[c]);
    std::swap(b[p], b[c]);
    for (size_t r = c + 1; r < n; r++) {
      double f = A[r][c] / A[c][c];
      for (size_t k = c; k < n; k++) A[r][k] -= f * A[c][k];
      b[r] -= f * b[c];
    }
  }
  x.assign(n, 0.0);
  for (size_t c = n; c-- > 0;) {
    double v = b[c];
    for (size_t k = c + 1; k < n; k++) v -= A[c][k] * x[k];
    x[c] = v / A[c][c];
  }
  return true;
}

// Least squares y ≈ Σ_k coef_k · u^k (k < n_coef), u = s / 1000, via the normal equations.
std::vector<double> polyfit(const std::vector<ProfilePoint>& pts, bool time, int n_coef,
                            const char* what) {
  std::vector<double> distinct;
  for (const auto& p : pts) {
    bool seen = false;
    for (double d : distinct) seen |= d == p.s;
    if (!seen) distinct.push_back(p.s);
  }
  LCX_CHECK(int(distinct.size()) >= n_coef,
            "cost fit of {}: need at least {} distinct sequence lengths, got {}", what, n_coef,
            distinct.size());
  std::vector<std::vector<double>> A(n_coef, std::vector<double>(n_coef, 0.0));
  std::vector<double> b(n_coef, 0.0), x;
  for (const auto& p : pts) {
    double u = p.s / 1000.0, y = time ? p.time_s : p.act_bytes;
    double pw[3] = {1.0, u, u * u};
    for (int i = 0; i < n_coef; i++) {
      b[i] += pw[i] * y;
      for (int j = 0; j < n_coef; j++) A[i][j] += pw[i] * pw[j];
    }
  }
  LCX_CHECK(solve_small(A, b, x), "cost fit of {}: singular system", what);
  return x;
}

double get_num(const nlohmann::json& j, const char* obj, const char* field, const std::string& where) {
  LCX_CHECK(j.is_object() && j.contains(obj) && j[obj].is_object(),
            "{}: missing object \"{}\" (expected the output of `longctx bench profile`)", where, obj);
  const auto& o = j[obj];
  LCX_CHECK(o.contains(field) && o[field].is_number(), "{}: \"{}.{}\" must be a number", where, obj,
            field);
  return o[field].get<double>();
}

}  // namespace

void cost_fit_time(CostModel& c, const std::vector<ProfilePoint>& pts) {
  auto x = polyfit(pts, true, 3, "T(s)");
  c.gamma = x[0];
  c.beta1 = x[1] / 1e3;
  c.alpha1 = x[2] / 1e6;
}

void cost_fit_act(CostModel& c, const std::vector<ProfilePoint>& pts) {
  auto x = polyfit(pts, false, 2, "Act(s)");
  c.beta2 = x[0];
  c.alpha2 = x[1] / 1e3;
}

nlohmann::json cost_to_json(const CostModel& c) {
  return {{"time", {{"alpha1", c.alpha1}, {"beta1", c.beta1}, {"gamma", c.gamma}}},
          {"act", {{"alpha2", c.alpha2}, {"beta2", c.beta2}}}};
}

CostModel cost_from_json(const nlohmann::json& j, const std::string& where) {
  CostModel c;
  c.alpha1 = get_num(j, "time", "alpha1", where);
  c.beta1 = get_num(j, "time", "beta1", where);
  c.gamma = get_num(j, "time", "gamma", where);
  c.alpha2 = get_num(j, "act", "alpha2", where);
  c.beta2 = get_num(j, "act", "beta2", where);
  LCX_CHECK(c.alpha2 > 0, "{}: act.alpha2 must be > 0 (activation bytes per token), got {}", where,
            c.alpha2);
  return c;
}

CostModel cost_from_file(const std::string& path) {
  return cost_from_json(json_from_file(path, "cost profile"), path);
}

Hardware hardware_preset(const std::string& name) {
  Hardware h;
  h.name = name;
  if (name == "h100") {
    // H100 SXM5: 989 TFLOP/s dense bf16, 80 GB HBM3, NVLink 4 900 GB/s (450 each way),
    // ConnectX-7 400 Gb/s per GPU, PCIe Gen5 x16 64 GB/s each way.
    h.flops = 989e12;
    h.hbm_bytes = 80e9;
    h.nvlink = {3e-6, 450e9};
    h.ib = {8e-6, 50e9};
    h.pcie = {5e-6, 64e9};
  } else if (name == "a100") {
    // A100 SXM4 80GB: 312 TFLOP/s bf16, NVLink 3 600 GB/s (300 each way), 200 Gb/s HDR per GPU,
    // PCIe Gen4 x16 32 GB/s.
    h.flops = 312e12;
    h.hbm_bytes = 80e9;
    h.nvlink = {3e-6, 300e9};
    h.ib = {8e-6, 25e9};
    h.pcie = {5e-6, 32e9};
  } else {
    fail("unknown hardware '{}' (expected one of: h100, a100)", name);
  }
  return h;
}

std::vector<std::string> hardware_preset_names() { return {"h100", "a100"}; }

double ModelShape::layer_params() const {
  const double hd = double(hidden) / heads;
  return double(hidden) * hidden * 2           // q, o
         + 2.0 * hidden * kv_heads * hd        // k, v
         + 3.0 * hidden * ffn;                 // gate, up, down
}

double ModelShape::params() const { return layers * layer_params() + 2.0 * vocab * hidden; }

ModelShape model_shape_preset(const std::string& name) {
  // LLaMA shapes (the paper's 7B/13B/30B/70B). TP/PP: ours, chosen so model states fit an
  // 80 GB GPU with room for activations (the paper fixes TP/PP per model but we do not copy
  // its numbers blindly; override with --tp/--pp).
  ModelShape m;
  m.name = name;
  if (name == "7b") {
    m.layers = 32; m.hidden = 4096; m.heads = 32; m.kv_heads = 32; m.ffn = 11008; m.tp = 4; m.pp = 1;
  } else if (name == "13b") {
    m.layers = 40; m.hidden = 5120; m.heads = 40; m.kv_heads = 40; m.ffn = 13824; m.tp = 8; m.pp = 1;
  } else if (name == "30b") {
    m.layers = 60; m.hidden = 6656; m.heads = 52; m.kv_heads = 52; m.ffn = 17920; m.tp = 4; m.pp = 4;
  } else if (name == "70b") {
    m.layers = 80; m.hidden = 8192; m.heads = 64; m.kv_heads = 8; m.ffn = 28672; m.tp = 8; m.pp = 4;
  } else {
    // longctx's own presets (model/config.h), on one GPU per rank: the shapes a measured
    // profile (`bench profile --preset P`) belongs to, so the simulator can be checked against
    // a real run of the same model.
    const auto ours = config_preset_names();
    LCX_CHECK(std::find(ours.begin(), ours.end(), name) != ours.end(),
              "unknown model '{}' (expected one of: {})", name, fmt::join(model_shape_preset_names(), ", "));
    const Config c = config_preset(name);
    m.layers = c.num_hidden_layers, m.hidden = c.hidden_size, m.heads = c.num_attention_heads;
    m.kv_heads = c.num_key_value_heads, m.ffn = c.intermediate_size, m.vocab = c.vocab_size;
    m.tp = m.pp = 1;
  }
  return m;
}

std::vector<std::string> model_shape_preset_names() {
  std::vector<std::string> names{"7b", "13b", "30b", "70b"};
  for (const auto& n : config_preset_names()) names.push_back(n);
  return names;
}

CostModel cost_from_specs(const ModelShape& m, const Hardware& hw, double mfu) {
  LCX_CHECK(mfu > 0 && mfu <= 1, "--mfu must be in (0, 1], got {}", mfu);
  const double F = hw.flops * mfu * m.tp;  // FLOP/s of one HDP rank (a TP group)
  CostModel c;
  // Causal attention forward = 4·s²·h/2 FLOPs (QKᵀ and PV over the lower triangle); a window w
  // caps it at 4·s·w·h. Forward + backward = 3× forward.
  if (m.window > 0) {
    c.alpha1 = 0;
    c.beta1 = (6.0 * m.layer_params() + 6.0 * 2.0 * m.window * m.hidden) / F;
  } else {
    c.alpha1 = 6.0 * m.hidden / F;
    c.beta1 = 6.0 * m.layer_params() / F;
  }
  c.gamma = 20 * 10e-6;  // ~20 kernels per layer fwd+bwd at ~10 µs launch + sync each
  c.alpha2 = 34.0 * m.hidden / m.tp;
  c.beta2 = 0;
  return c;
}

double kv_bytes_per_token(const ModelShape& m) {
  const double hd = double(m.hidden) / m.heads;
  const double kv_per_gpu = std::max(1.0, double(m.kv_heads) / m.tp);
  return 2.0 * kv_per_gpu * hd * 2.0;  // K and V, bf16
}

double model_state_bytes(const ModelShape& m, int dp) {
  const double n = m.params() / (double(m.tp) * m.pp);  // parameters per GPU
  return n * 4.0 + n * 12.0 / std::max(1, dp);          // bf16 w + g; fp32 master, m, v (ZeRO-1)
}

}  // namespace longctx
