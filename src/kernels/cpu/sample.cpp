#include "kernels/cpu/sample.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "core/error.h"

namespace longctx {

double softmax_weights(double* w, const float* logits, int V, float temperature) {
  const double mx = *std::max_element(logits, logits + V);
  double total = 0.0;
  for (int i = 0; i < V; i++) total += w[i] = std::exp((logits[i] - mx) / temperature);
  return total;
}

int32_t sample_draw(const float* logits, int V, float temperature, float u) {
  if (temperature == 0.0f) return int32_t(std::max_element(logits, logits + V) - logits);
  thread_local std::vector<double> w;  // scratch per thread (rows are drawn on all threads)
  w.resize(size_t(V));
  const double target = double(u) * softmax_weights(w.data(), logits, V, temperature);
  double prefix = 0.0;  // Σ_{j≤i} w_j, summed in the order of the total: it ends at the total
  for (int i = 0; i < V; i++)
    if ((prefix += w[size_t(i)]) > target) return i;
  return V - 1;  // only for NaN logits
}

namespace {
// sample_draw per row; in parallel over OpenMP threads (the cpu backend) or in order (cpu_ref).
void draw_rows(int32_t* tokens, const float* logits, const float* u, const float* temperature,
               int rows, int V, bool parallel) {
  LCX_CHECK(rows >= 0 && V >= 1, "sample_rows: bad shape rows={} V={}", rows, V);
#pragma omp parallel for schedule(static) if (parallel && rows > 1)
  for (int r = 0; r < rows; r++)
    tokens[r] = sample_draw(logits + size_t(r) * V, V, temperature[r], u[r]);
}
}  // namespace

void ref::sample_rows(int32_t* tokens, const float* logits, const float* u,
                      const float* temperature, int rows, int V) {
  draw_rows(tokens, logits, u, temperature, rows, V, false);
}
void cpu::sample_rows(int32_t* tokens, const float* logits, const float* u,
                      const float* temperature, int rows, int V) {
  draw_rows(tokens, logits, u, temperature, rows, V, true);
}

}  // namespace longctx
