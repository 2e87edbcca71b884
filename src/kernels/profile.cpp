// backend_profiled and OpProfile (profile.h): one template, Timed<&Backend::op>, wraps every
// timed op of the table; Flops<&Backend::op> counts the GEMM FLOPs of one call.
#include "kernels/profile.h"

#include <algorithm>
#include <chrono>
#include <type_traits>

#include "core/clock.h"
#include "core/error.h"

namespace longctx {

void OpProfile::add(const char* op, double s, double flops) {
  auto it = std::find_if(entries.begin(), entries.end(),
                         [op](const Entry& e) { return e.op == op; });
  if (it == entries.end()) it = entries.insert(entries.end(), Entry{op});
  it->calls++;
  it->seconds += s;
  it->flops += flops;
}

double OpProfile::seconds() const {
  double s = 0;
  for (const Entry& e : entries) s += e.seconds;
  return s;
}

nlohmann::json OpProfile::to_json() const {
  std::vector<Entry> sorted = entries;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  const double total = seconds();
  auto out = nlohmann::json::array();
  for (const Entry& e : sorted) {
    nlohmann::json j = {{"op", e.op},
                        {"calls", e.calls},
                        {"ms_total", e.seconds * 1e3},
                        {"ms_per_step", e.seconds * 1e3 / steps},
                        {"share", total > 0 ? 100.0 * e.seconds / total : 0.0}};
    if (e.flops > 0 && e.seconds > 0) j["tflops"] = e.flops / e.seconds / 1e12;
    out.push_back(std::move(j));
  }
  return out;
}

void print_op_table(std::FILE* out, const nlohmann::json& ops) {
  fmt::print(out, "{:<24}{:>8}{:>12}{:>9}{:>10}\n", "op", "calls", "ms/step", "share %", "TFLOP/s");
  for (const auto& e : ops)
    fmt::print(out, "{:<24}{:>8}{:>12.3f}{:>9.1f}{:>10}\n", e["op"].get<std::string>(),
               e["calls"].get<int64_t>(), e["ms_per_step"].get<double>(), e["share"].get<double>(),
               e.contains("tflops") ? fmt::format("{:.2f}", e["tflops"].get<double>()) : "");
}

namespace {

// What the one profiled table (profile.h) runs and where it charges the time.
struct Target {
  const Backend* inner = nullptr;
  OpProfile* prof = nullptr;
};
Target target;

// FLOPs of one call of op Member: 2·M·N·K per GEMM; 0 for the ops that are not GEMMs.
template <auto Member>
struct Flops {
  template <class... A>
  static double of(A...) { return 0; }
};
template <>
struct Flops<&Backend::matmul_forward> {  // out = inp · weightᵀ
  static double of(float*, const float*, const float*, int T, int C, int OC) {
    return 2.0 * T * C * OC;
  }
};
template <>
struct Flops<&Backend::matmul_backward> {  // one GEMM per gradient asked for
  static double of(float* dinp, float* dweight, const float*, const float*, const float*, int T,
                   int C, int OC, Grad) {
    return 2.0 * T * C * OC * ((dinp != nullptr) + (dweight != nullptr));
  }
};
template <>
struct Flops<&Backend::matmul_forward_group> {  // matmul_forward per projection
  static double of(float* const*, const float*, const float* const*, int T, int C, const int* OC,
                   int G) {
    double f = 0;
    for (int g = 0; g < G; g++) f += 2.0 * T * C * OC[g];
    return f;
  }
};
template <>
struct Flops<&Backend::matmul_backward_group> {  // matmul_backward per projection
  static double of(float* dinp, float* const* dweight, const float* const*, const float*,
                   const float* const*, int T, int C, const int* OC, int G, Grad) {
    double f = 0;
    for (int g = 0; g < G; g++)
      f += 2.0 * T * C * OC[g] * ((dinp != nullptr) + (dweight[g] != nullptr));
    return f;
  }
};
template <>
struct Flops<&Backend::lm_head_xent> {  // the logits sweep; with gradients also its recompute
  static double of(float*, float* dx, float* dweight, const float*, const float*, const int32_t*,
                   int T, int C, int V, float) {  // and one GEMM per gradient (backend.h)
    const double sweep = 2.0 * T * C * V;
    return dx || dweight ? sweep * (2 + (dx != nullptr) + (dweight != nullptr)) : sweep;
  }
};

// The table entry of op Member: inner's op between two syncs, charged to `name`.
template <auto Member>
struct Timed;
template <class R, class... A, R (*Backend::*Member)(A...)>
struct Timed<Member> {
  inline static const char* name = nullptr;

  static R call(A... a) {
    const Backend& be = *target.inner;
    be.sync();
    const auto t0 = std::chrono::steady_clock::now();
    if constexpr (std::is_void_v<R>) {
      (be.*Member)(a...);
      charge(t0, a...);
    } else {
      R r = (be.*Member)(a...);
      charge(t0, a...);
      return r;
    }
  }
  static void charge(std::chrono::steady_clock::time_point t0, A... a) {
    target.inner->sync();
    target.prof->add(name, seconds_since(t0), Flops<Member>::of(a...));
  }
};

}  // namespace

const Backend& backend_profiled(const Backend& inner, OpProfile& prof) {
  LCX_CHECK(!target.inner || target.inner == &inner,
            "backend_profiled: the profiled table already wraps backend '{}'; it cannot also "
            "wrap '{}' (one inner backend per process)",
            target.inner ? target.inner->name : "", inner.name);
  target = {&inner, &prof};
  static Backend table;
  table = inner;  // name, device and the pass-through memory/stream ops
#define LCX_TIMED(op) Timed<&Backend::op>::name = #op, table.op = Timed<&Backend::op>::call
  LCX_TIMED(copy);
  LCX_TIMED(zero);
  LCX_TIMED(add);
  LCX_TIMED(scale);
  LCX_TIMED(sum);
  LCX_TIMED(sum_squares);
  LCX_TIMED(copy_async);
  LCX_TIMED(matmul_forward);
  LCX_TIMED(matmul_backward);
  LCX_TIMED(matmul_forward_group);
  LCX_TIMED(matmul_backward_group);
  LCX_TIMED(embedding_forward);
  LCX_TIMED(embedding_backward);
  LCX_TIMED(rmsnorm_forward);
  LCX_TIMED(rmsnorm_backward);
  LCX_TIMED(rope_forward);
  LCX_TIMED(rope_backward);
  LCX_TIMED(swat_forward);
  LCX_TIMED(swat_backward);
  LCX_TIMED(softmax_attn_forward);
  LCX_TIMED(softmax_attn_backward);
  LCX_TIMED(decode_attn_forward);
  LCX_TIMED(attn_block_forward);
  LCX_TIMED(attn_block_backward);
  LCX_TIMED(attn_block_merge);
  LCX_TIMED(swiglu_forward);
  LCX_TIMED(swiglu_backward);
  LCX_TIMED(lm_head_xent);
  LCX_TIMED(adamw_update);
  LCX_TIMED(sample_rows);
#undef LCX_TIMED
  return table;
}

}  // namespace longctx
