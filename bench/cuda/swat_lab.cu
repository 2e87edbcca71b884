// SWAT attention lab (llm.c dev/cuda style): CPU reference, validation and benchmark of the fused
// kernels in src/kernels/cuda/swat_attention.cu (DESIGN.md §2.1).
//
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fopenmp -Isrc
//        bench/cuda/swat_lab.cu src/kernels/cuda/swat_attention.cu -o swat_lab
//   (bench/cuda/run_device.sh does this on the GPU machine)
//   ./swat_lab check        correctness cases against an fp64 CPU reference
//   ./swat_lab small        two small cases (for compute-sanitizer memcheck / racecheck)
//   ./swat_lab bench        the goal shapes (B = 1, one causal document), JSON per shape
//
// Validation: relative error ‖x − ref‖ / ‖ref‖ over the whole tensor; the reference is computed
// in fp64 from the same bf16-rounded inputs. Tolerance 2e-2 (bf16 outputs and bf16 P / dZ
// operands in the second GEMMs: expected 3e-3 to 1e-2). Outputs are poisoned with NaN before
// each run, so an unwritten element fails the check. Inputs are fresh random numbers per case.
#include "kernels/cuda/swat_attention.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using longctx::cuda::SwatArgs;

#define CK(x)                                                                            \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

// ------------------------------------------------------------------------------------------
// random inputs

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static double urand() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return ((g_rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float nrand() { return static_cast<float>(std::sqrt(-2.0 * std::log(urand())) * std::cos(6.283185307179586 * urand())); }

static uint16_t f2bf(float f) {  // round to nearest even
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
static float bf2f(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// ALiBi slopes (DESIGN.md §2.1): 0 none, 1 balanced, 2 neg, 3 pos
static std::vector<float> make_slopes(int kind, int H) {
  std::vector<float> s(H, 0.f);
  if (kind == 1) {
    const int half = H / 2;
    for (int k = 1; k <= half; ++k) {
      const float a = std::pow(2.f, -8.f * k / half);
      s[k - 1] = -a;
      s[half + k - 1] = a;
    }
  } else if (kind == 2 || kind == 3) {
    for (int i = 0; i < H; ++i) s[i] = (kind == 2 ? -1.f : 1.f) * std::pow(2.f, -8.f * (i + 1) / H);
  }
  return s;
}
static const char* alibi_name(int k) {
  static const char* n[] = {"none", "balanced", "neg", "pos"};
  return n[k];
}

// ------------------------------------------------------------------------------------------
// CPU reference, fp64. q (T,H,D), k v (T,Hkv,D); all floats are bf16-rounded inputs.

struct Problem {
  int T, H, Hkv, D, w;
  std::vector<int> cu;
  std::vector<float> slopes;
  float bias, scale;
};

static int doc_start(const Problem& P, int t) {
  int i = static_cast<int>(std::upper_bound(P.cu.begin(), P.cu.end(), t) - P.cu.begin()) - 1;
  return P.cu[i];
}

static double pair_p(const Problem& P, const float* q, const float* k, int m, int n, int h, int hk) {
  double z = 0;
  for (int d = 0; d < P.D; ++d)
    z += static_cast<double>(q[(static_cast<long>(m) * P.H + h) * P.D + d]) *
         k[(static_cast<long>(n) * P.Hkv + hk) * P.D + d];
  z = z * P.scale + static_cast<double>(P.slopes[h]) * (m - n) + P.bias;
  return 1.0 / (1.0 + std::exp(-z));
}
static double pair_dp(const Problem& P, const float* dout, const float* v, int m, int n, int h, int hk) {
  double s = 0;
  for (int d = 0; d < P.D; ++d)
    s += static_cast<double>(dout[(static_cast<long>(m) * P.H + h) * P.D + d]) *
         v[(static_cast<long>(n) * P.Hkv + hk) * P.D + d];
  return s;
}

static void ref_forward(const Problem& P, const float* q, const float* k, const float* v, double* out) {
  const int G = P.H / P.Hkv, D = P.D;
#pragma omp parallel for schedule(dynamic, 16)
  for (long mh = 0; mh < static_cast<long>(P.T) * P.H; ++mh) {
    const int m = static_cast<int>(mh / P.H), h = static_cast<int>(mh % P.H), hk = h / G;
    std::vector<double> acc(D, 0.0);
    const int lo = std::max(m - P.w + 1, doc_start(P, m));
    for (int n = lo; n <= m; ++n) {
      const double p = pair_p(P, q, k, m, n, h, hk);
      for (int d = 0; d < D; ++d) acc[d] += p * v[(static_cast<long>(n) * P.Hkv + hk) * D + d];
    }
    for (int d = 0; d < D; ++d) out[mh * D + d] = acc[d];
  }
}

static void ref_backward(const Problem& P, const float* q, const float* k, const float* v,
                         const float* dout, double* dq, double* dk, double* dv) {
  const int G = P.H / P.Hkv, D = P.D;
#pragma omp parallel for schedule(dynamic, 16)
  for (long mh = 0; mh < static_cast<long>(P.T) * P.H; ++mh) {
    const int m = static_cast<int>(mh / P.H), h = static_cast<int>(mh % P.H), hk = h / G;
    std::vector<double> acc(D, 0.0);
    const int lo = std::max(m - P.w + 1, doc_start(P, m));
    for (int n = lo; n <= m; ++n) {
      const double p = pair_p(P, q, k, m, n, h, hk);
      const double dz = p * (1 - p) * pair_dp(P, dout, v, m, n, h, hk);
      for (int d = 0; d < D; ++d) acc[d] += dz * k[(static_cast<long>(n) * P.Hkv + hk) * D + d];
    }
    for (int d = 0; d < D; ++d) dq[mh * D + d] = acc[d] * P.scale;
  }
#pragma omp parallel for schedule(dynamic, 16)
  for (long nh = 0; nh < static_cast<long>(P.T) * P.Hkv; ++nh) {
    const int n = static_cast<int>(nh / P.Hkv), hk = static_cast<int>(nh % P.Hkv);
    std::vector<double> ak(D, 0.0), av(D, 0.0);
    const int start = doc_start(P, n);
    const int end = *std::upper_bound(P.cu.begin(), P.cu.end(), start);
    const int hi = std::min(n + P.w - 1, end - 1);
    for (int h = hk * G; h < (hk + 1) * G; ++h)
      for (int m = n; m <= hi; ++m) {
        const double p = pair_p(P, q, k, m, n, h, hk);
        const double dz = p * (1 - p) * pair_dp(P, dout, v, m, n, h, hk);
        for (int d = 0; d < D; ++d) {
          const double qd = q[(static_cast<long>(m) * P.H + h) * D + d];
          const double od = dout[(static_cast<long>(m) * P.H + h) * D + d];
          av[d] += p * od;
          ak[d] += dz * qd;
        }
      }
    for (int d = 0; d < D; ++d) {
      dk[nh * D + d] = ak[d] * P.scale;
      dv[nh * D + d] = av[d];
    }
  }
}

// ------------------------------------------------------------------------------------------
// device buffers

struct Dev {
  __nv_bfloat16 *q, *k, *v, *out, *dout, *dq, *dk, *dv;
  int* cu;
  float* slopes;
  void* ws;
  SwatArgs args;
};

static __nv_bfloat16* to_dev(const std::vector<uint16_t>& h) {
  __nv_bfloat16* d;
  CK(cudaMalloc(&d, h.size() * 2));
  CK(cudaMemcpy(d, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  return d;
}
static std::vector<uint16_t> rand_bf16(size_t n, std::vector<float>& f) {
  std::vector<uint16_t> b(n);
  f.resize(n);
  for (size_t i = 0; i < n; ++i) {
    b[i] = f2bf(nrand());
    f[i] = bf2f(b[i]);
  }
  return b;
}

static Dev make_dev(const Problem& P, std::vector<float>& q, std::vector<float>& k,
                    std::vector<float>& v, std::vector<float>& dout) {
  Dev d{};
  const size_t nq = static_cast<size_t>(P.T) * P.H * P.D, nk = static_cast<size_t>(P.T) * P.Hkv * P.D;
  d.q = to_dev(rand_bf16(nq, q));
  d.k = to_dev(rand_bf16(nk, k));
  d.v = to_dev(rand_bf16(nk, v));
  d.dout = to_dev(rand_bf16(nq, dout));
  CK(cudaMalloc(&d.out, nq * 2));
  CK(cudaMalloc(&d.dq, nq * 2));
  CK(cudaMalloc(&d.dk, nk * 2));
  CK(cudaMalloc(&d.dv, nk * 2));
  CK(cudaMalloc(&d.cu, P.cu.size() * 4));
  CK(cudaMemcpy(d.cu, P.cu.data(), P.cu.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&d.slopes, P.H * 4));
  CK(cudaMemcpy(d.slopes, P.slopes.data(), P.H * 4, cudaMemcpyHostToDevice));
  d.args = SwatArgs{d.q, d.k, d.v, d.out, P.T, P.H, P.Hkv, P.D, P.w, d.cu,
                    static_cast<int>(P.cu.size()) - 1, d.slopes, P.bias, P.scale};
  CK(cudaMalloc(&d.ws, longctx::cuda::swat_backward_workspace_bytes(d.args)));
  return d;
}
static void free_dev(Dev& d) {
  for (void* p : {(void*)d.q, (void*)d.k, (void*)d.v, (void*)d.out, (void*)d.dout, (void*)d.dq,
                  (void*)d.dk, (void*)d.dv, (void*)d.cu, (void*)d.slopes, d.ws})
    CK(cudaFree(p));
}

static double rel_err(const __nv_bfloat16* dptr, const std::vector<double>& ref) {
  std::vector<uint16_t> h(ref.size());
  CK(cudaMemcpy(h.data(), dptr, h.size() * 2, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    const double x = bf2f(h[i]);
    if (!std::isfinite(x)) return NAN;  // unwritten (poisoned) or broken
    num += (x - ref[i]) * (x - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// ------------------------------------------------------------------------------------------
// validate

struct Case {
  int T, H, Hkv, D, w;
  std::vector<int> cu;  // empty: one document
  int alibi;
  float bias;
};

static bool validate(const Case& c, double tol) {
  Problem P{c.T, c.H, c.Hkv, c.D, c.w, c.cu.empty() ? std::vector<int>{0, c.T} : c.cu,
            make_slopes(c.alibi, c.H), c.bias, 1.f / std::sqrt(static_cast<float>(c.D))};
  std::vector<float> q, k, v, dout;
  Dev d = make_dev(P, q, k, v, dout);
  const size_t nq = static_cast<size_t>(P.T) * P.H * P.D, nk = static_cast<size_t>(P.T) * P.Hkv * P.D;
  // poison outputs (0xFFFF is a bf16 NaN)
  CK(cudaMemset(d.out, 0xFF, nq * 2));
  CK(cudaMemset(d.dq, 0xFF, nq * 2));
  CK(cudaMemset(d.dk, 0xFF, nk * 2));
  CK(cudaMemset(d.dv, 0xFF, nk * 2));
  CK(cudaMemset(d.ws, 0xFF, longctx::cuda::swat_backward_workspace_bytes(d.args)));
  longctx::cuda::swat_forward(d.args, 0);
  longctx::cuda::swat_backward(d.args, d.dout, d.dq, d.dk, d.dv, false, d.ws, 0);
  CK(cudaDeviceSynchronize());
  CK(cudaGetLastError());
  std::vector<double> ro(nq), rdq(nq), rdk(nk), rdv(nk);
  ref_forward(P, q.data(), k.data(), v.data(), ro.data());
  ref_backward(P, q.data(), k.data(), v.data(), dout.data(), rdq.data(), rdk.data(), rdv.data());
  const double eo = rel_err(d.out, ro), eq = rel_err(d.dq, rdq), ek = rel_err(d.dk, rdk),
               ev = rel_err(d.dv, rdv);
  // accumulate mode: a second backward adds to the first: expect 2× the reference
  longctx::cuda::swat_backward(d.args, d.dout, d.dq, d.dk, d.dv, true, d.ws, 0);
  CK(cudaDeviceSynchronize());
  for (auto& x : rdk) x *= 2;
  const double ek2 = rel_err(d.dk, rdk);
  const bool ok = eo < tol && eq < tol && ek < tol && ev < tol && ek2 < tol;
  printf("{\"case\": \"T%d H%d Hkv%d D%d w%d docs%zu %s b%.2f\", \"out\": %.2e, \"dq\": %.2e, "
         "\"dk\": %.2e, \"dv\": %.2e, \"dk_accum\": %.2e, \"pass\": %s}\n",
         c.T, c.H, c.Hkv, c.D, c.w, P.cu.size() - 1, alibi_name(c.alibi), c.bias, eo, eq, ek, ev,
         ek2, ok ? "true" : "false");
  fflush(stdout);
  free_dev(d);
  return ok;
}

static std::vector<Case> check_cases() {
  std::vector<Case> cs;
  const std::vector<int> docs_a = {0, 100, 101, 400, 777};  // includes a 1-token document
  const std::vector<int> docs_b = {0, 1000, 1300, 3001};
  for (int D : {64, 128}) {
    cs.push_back({300, 2, 2, D, 1, {}, 2, 0.f});
    cs.push_back({777, 2, 2, D, 63, docs_a, 1, -2.f});
    cs.push_back({1500, 4, 4, D, 256, {}, 3, -std::log(256.f)});
    cs.push_back({3001, 2, 2, D, 1024, docs_b, 0, 0.5f});
    cs.push_back({5000, 1, 1, D, 4096, {}, 2, 0.f});
    cs.push_back({1234, 2, 2, D, 1 << 20, {}, 1, -1.f});            // w ≥ S: causal
    cs.push_back({1001, 8, 2, D, 256, {0, 333, 1001}, 2, -0.7f});  // GQA
    cs.push_back({517, 8, 2, D, 100000, {0, 17, 517}, 3, 0.f});    // GQA, w ≥ S, odd
  }
  return cs;
}

// ------------------------------------------------------------------------------------------
// benchmark

static float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

static void benchmark(const char* card, int S, int w, int D, int H, int reps) {
  Problem P{S, H, H, D, w, {0, S}, make_slopes(2, H), 0.f, 1.f / std::sqrt(static_cast<float>(D))};
  std::vector<float> q, k, v, dout;
  Dev d = make_dev(P, q, k, v, dout);
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> tf, tb;
  for (int i = 0; i < reps + 3; ++i) {
    CK(cudaEventRecord(a));
    longctx::cuda::swat_forward(d.args, 0);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 3) tf.push_back(ms);
    CK(cudaEventRecord(a));
    longctx::cuda::swat_backward(d.args, d.dout, d.dq, d.dk, d.dv, false, d.ws, 0);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 3) tb.push_back(ms);
  }
  CK(cudaGetLastError());
  const double pairs = static_cast<double>(S) * w - static_cast<double>(w) * w / 2;
  const double ffwd = 4 * pairs * D * H;
  const float mf = median(tf), mb = median(tb);
  printf("{\"card\": \"%s\", \"S\": %d, \"w\": %d, \"D\": %d, \"H\": %d, \"fwd_ms\": %.4f, "
         "\"bwd_ms\": %.4f, \"fwd_tflops\": %.1f, \"bwd_tflops\": %.1f, \"fwdbwd_tflops\": %.1f}\n",
         card, S, w, D, H, mf, mb, ffwd / (mf * 1e9), 2.5 * ffwd / (mb * 1e9), 3.5 * ffwd / ((mf + mb) * 1e9));
  fflush(stdout);
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  free_dev(d);
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "check";
  int n_devices = 0;
  if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices == 0) {
    fprintf(stderr, "swat_lab: no CUDA GPU found, skipping\n");
    return 77;  // CTest SKIP_RETURN_CODE
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  fprintf(stderr, "device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  if (mode == "check") {
    int fails = 0;
    for (const Case& c : check_cases()) fails += !validate(c, 2e-2);
    printf("check: %d failures\n", fails);
    return fails ? 1 : 0;
  }
  if (mode == "small") {
    int fails = 0;
    fails += !validate({300, 2, 2, 64, 63, {0, 100, 101, 300}, 1, -1.f}, 2e-2);
    fails += !validate({200, 4, 2, 128, 1000, {0, 77, 200}, 3, 0.3f}, 2e-2);
    return fails ? 1 : 0;
  }
  if (mode == "bench") {
    const int reps = argc > 2 ? atoi(argv[2]) : 20;
    benchmark(prop.name, 16384, 1024, 64, 16, reps);
    benchmark(prop.name, 65536, 1024, 64, 16, reps);
    benchmark(prop.name, 16384, 4096, 128, 8, reps);
    benchmark(prop.name, 65536, 4096, 128, 8, reps);
    return 0;
  }
  fprintf(stderr, "usage: swat_lab check|small|bench [reps]\n");
  return 2;
}
