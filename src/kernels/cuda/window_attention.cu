// fp32 sliding-window attention on the GPU (ops.h): SWAT (σ) and softmax, any head dim ≤ 256,
// documents (cu_seqlens), GQA, ALiBi, queries after a KV cache (Tk > T, forward), a decode batch
// over KV rings (forward); W(m) = [lo, m] as kernels/cpu/ref.h (DESIGN.md §2.1). The model uses the wgmma kernel (swat_attention.cu) for
// SWAT training and the softmax backward at D 64/128; this file serves the rest, inference above all.
//   Forward, FlashDecoding-style (Dao et al. 2023): a CTA takes a tile of queries of one head and
//   a split of the keys their windows cover; K/V tiles go to shared memory by cp.async (double
//   buffered), lanes score one key each, then accumulate P·V one head dim each; splits are merged
//   by a second kernel (σ: a sum; softmax: log-sum-exp). Decode (T = 1) gets its parallelism from
//   the splits, chunked prefill from the query tiles (K/V reused by 8–32 queries). A decode batch
//   over rings (WindowArgs::rings) is the same kernel with one sequence's query per CTA, its keys
//   read in place from slot n % C of its ring; the CTAs of split 0 store the new entries.
//   Backward (head dims other than 64/128 only): one warp per (query, head) walks W(m) key by
//   key; dk, dv by atomics.
#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include <cuda_pipeline.h>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/warp.cuh"

namespace longctx::cuda {

namespace {

constexpr int max_per_lane = 8;  // D ≤ 256

// Key index m of query row i and the first key lo of its window W(m).
__device__ void window_of(const WindowArgs& a, int i, int* m, int* lo) {
  if (a.rings) {  // sequence i's position; its ring holds the last C positions
    const KvRing r = a.rings[i];
    *m = r.pos;
    *lo = max(0, max(r.pos - a.window + 1, r.pos - r.capacity + 1));
    return;
  }
  if (a.Tk > a.T) {  // one document of Tk keys; the queries are its last T positions
    *m = a.Tk - a.T + i;
    *lo = max(0, *m - a.window + 1);
    return;
  }
  int begin = 0;
  if (a.cu_seqlens) {  // last document start ≤ i
    int l = 0, r = a.n_docs - 1;
    while (l < r) {
      const int mid = (l + r + 1) / 2;
      if (a.cu_seqlens[mid] <= i) l = mid; else r = mid - 1;
    }
    begin = a.cu_seqlens[l];
  }
  *m = i;
  *lo = max(begin, i - a.window + 1);
}

__device__ float logit(const WindowArgs& a, const float* qr, const float* kn, int lane, int h,
                       int m, int n) {
  float dot = 0.0f;
  for (int j = 0; j < max_per_lane; j++) {
    const int d = lane + 32 * j;
    if (d < a.D) dot += qr[j] * kn[d];
  }
  return warp_sum(dot) * a.scale + (a.slopes ? a.slopes[h] : 0.0f) * float(m - n);
}

// ---- forward (FlashDecoding-style: keys split over warps' lanes, CTAs and splits)
constexpr int qt = 8;           // query rows per warp
constexpr int kt = 32;          // keys per tile: one per lane when scoring
constexpr int max_splits = 64;  // key splits of one (query tile, head)

// Shared memory of k_forward, in floats (every part 16-byte aligned): two buffers of a K tile
// [kt][ks] and a V tile [kt][dp], the CTA's queries [warps·qt][dp] (pre-scaled), and each warp's
// probabilities [kt][qt]. dp = D rounded up to 4; ks/4 odd keeps lane-per-row float4 reads free
// of bank conflicts.
struct FwdSmem {
  int dp, ks, warps;
  __host__ __device__ FwdSmem(int D, int w)
      : dp((D + 3) & ~3), ks((dp / 4) % 2 ? dp : dp + 4), warps(w) {}
  __host__ __device__ int k(int buf) const { return buf * kt * ks; }
  __host__ __device__ int v(int buf) const { return 2 * kt * ks + buf * kt * dp; }
  __host__ __device__ int q() const { return 2 * kt * (ks + dp); }
  __host__ __device__ int p() const { return q() + warps * qt * dp; }
  __host__ __device__ size_t bytes() const { return sizeof(float) * size_t(p() + warps * kt * qt); }
};

struct FwdArgs {
  float *out, *lse;               // final results (splits = 1; lse may be null)
  float *part_o, *part_lse;       // splits > 1: (splits, T, H, D) and (splits, T, H)
  const float *q, *k, *v;         // rings: k, v are the sequences' new entries (T, Hkv, D)
  int splits;
  bool vec;                       // D % 4 = 0 and k, v 16-byte aligned: 16-byte copies
};

// Query rows of one CTA: a tile of the stream, or one sequence of a decode batch over rings.
__host__ __device__ int cta_rows(const WindowArgs& a, int warps) { return a.rings ? 1 : warps * qt; }

// cp.async of key rows [kb, kb+nk) of head g into buffer `buf` (committed as one group). With a
// ring (sequence i's; null: the stream), key n is slot n % C, except the new token's (n = pos):
// row i of k, v (the launch stores it in the ring meanwhile; no other key maps to its slot).
__device__ void load_tile(float* sm, const FwdSmem& L, const FwdArgs& f, const WindowArgs& a,
                          const KvRing* ring, int i, int g, int kb, int nk, int buf, bool vec) {
  float *Ks = sm + L.k(buf), *Vs = sm + L.v(buf);
  const int c = vec ? 4 : 1, per_row = a.D / c;  // copies of c floats per row
  for (int e = threadIdx.x; e < nk * per_row; e += blockDim.x) {
    const int row = e / per_row, d = c * (e % per_row), n = kb + row;
    const float *k = f.k, *v = f.v;
    int r = n;
    if (ring) {
      if (n == ring->pos) r = i;
      else k = ring->k, v = ring->v, r = n % ring->capacity;
    }
    const size_t src = (size_t(r) * a.Hkv + g) * a.D + d;
    __pipeline_memcpy_async(Ks + row * L.ks + d, k + src, sizeof(float) * c);
    __pipeline_memcpy_async(Vs + row * L.dp + d, v + src, sizeof(float) * c);
  }
  __pipeline_commit();
}

// CTA (query tile, head h, split s): warp w owns query rows i0 + w·qt + r (r < qt) and walks
// the split's key tiles of the CTA's key range [lo(i0), m(last row)]; per tile, lane j scores
// key kb + j against the warp's rows (z from shared memory), then o_r += Σ_j p_rj v_j with one
// lane per head dim. σ: p = σ(z + b); softmax: online max/Σexp (l kept per lane, summed at the
// end). The result is final (splits = 1) or a partial for k_combine (softmax: o/l and lse).
template <bool softmax, int J>  // J = dims per lane: D ≤ 32·J
__global__ void k_forward(FwdArgs f, WindowArgs a) {
  extern __shared__ float4 smem4[];
  float* sm = reinterpret_cast<float*>(smem4);
  const int warps = blockDim.x / 32, w = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = blockIdx.y, g = h / (a.H / a.Hkv), s = blockIdx.z;
  const FwdSmem L(a.D, warps);
  const int rows = cta_rows(a, warps);
  const int i0 = blockIdx.x * rows, i_last = min(a.T, i0 + rows) - 1, wi0 = i0 + w * qt;
  KvRing ring{};
  bool vec = f.vec;
  if (a.rings) {
    ring = a.rings[i0];
    vec = vec && (reinterpret_cast<uintptr_t>(ring.k) | reinterpret_cast<uintptr_t>(ring.v)) % 16 == 0;
    if (s == 0 && h % (a.H / a.Hkv) == 0) {  // store the new entry of KV head g in slot pos % C
      const size_t dst = (size_t(ring.pos % ring.capacity) * a.Hkv + g) * a.D;
      const size_t src = (size_t(i0) * a.Hkv + g) * a.D;
      for (int d = threadIdx.x; d < a.D; d += blockDim.x)
        ring.k[dst + d] = f.k[src + d], ring.v[dst + d] = f.v[src + d];
    }
  }
  const KvRing* rp = a.rings ? &ring : nullptr;
  int klo, khi, unused;
  window_of(a, i0, &unused, &klo);
  window_of(a, i_last, &khi, &unused);
  const int n_tiles = (khi - klo + kt) / kt, per = (n_tiles + f.splits - 1) / f.splits;
  const int t0 = s * per, t1 = min(n_tiles, t0 + per);
  int m[qt], lo[qt], whi = -1;  // row r sees keys lo ≤ n ≤ m; the warp's band is [lo[0], whi]
#pragma unroll
  for (int r = 0; r < qt; r++) {
    if (wi0 + r <= i_last) window_of(a, wi0 + r, &m[r], &lo[r]);
    else m[r] = -1, lo[r] = INT_MAX;
    whi = max(whi, m[r]);
  }
  const float slope = a.slopes ? a.slopes[h] : 0.0f;

  if (t0 < t1) load_tile(sm, L, f, a, rp, i0, g, klo + t0 * kt, min(kt, khi - klo - t0 * kt + 1), 0, vec);
  float* Qs = sm + L.q();
  for (int e = threadIdx.x; e < warps * qt * L.dp; e += blockDim.x) {
    const int i = i0 + e / L.dp, d = e % L.dp;
    Qs[e] = i <= i_last && d < a.D ? f.q[(size_t(i) * a.H + h) * a.D + d] * a.scale : 0.0f;
  }
  for (int e = threadIdx.x; e < 2 * kt * (L.dp - a.D); e += blockDim.x)  // K pad columns: 0
    sm[e / (L.dp - a.D) * L.ks + a.D + e % (L.dp - a.D)] = 0.0f;

  float o[qt][J] = {}, mx[qt], l[qt] = {};
  for (int r = 0; r < qt; r++) mx[r] = -INFINITY;
  const float* Qw = Qs + w * qt * L.dp;
  float* Pw = sm + L.p() + w * kt * qt;
  for (int t = t0; t < t1; t++) {
    const int buf = (t - t0) & 1, kb = klo + t * kt, nk = min(kt, khi - kb + 1);
    if (t + 1 < t1) {  // prefetch the next tile into the other buffer
      load_tile(sm, L, f, a, rp, i0, g, kb + kt, min(kt, khi - kb - kt + 1), buf ^ 1, vec);
      __pipeline_wait_prior(1);
    } else {
      __pipeline_wait_prior(0);
    }
    __syncthreads();
    if (kb <= whi && kb + nk > lo[0]) {  // the warp's band meets the tile
      const float* Kn = sm + L.k(buf) + lane * L.ks;
      float z[qt] = {};
      for (int c = 0; c < L.dp; c += 4) {
        const float4 kk = *reinterpret_cast<const float4*>(Kn + c);
#pragma unroll
        for (int r = 0; r < qt; r++) {
          const float4 qq = *reinterpret_cast<const float4*>(Qw + r * L.dp + c);
          z[r] += qq.x * kk.x + qq.y * kk.y + qq.z * kk.z + qq.w * kk.w;
        }
      }
      const int n = kb + lane;
      float p[qt];
#pragma unroll
      for (int r = 0; r < qt; r++) {
        const bool vis = lane < nk && lo[r] <= n && n <= m[r];
        const float zr = z[r] + slope * float(m[r] - n);
        if (!softmax) {
          p[r] = vis ? 1.0f / (1.0f + expf(-(zr + a.bias))) : 0.0f;
          continue;
        }
        const float mn = fmaxf(mx[r], warp_max(vis ? zr : -INFINITY));
        p[r] = 0.0f;
        if (mn == -INFINITY) continue;  // row r has seen no key yet (warp-uniform)
        const float c = expf(mx[r] - mn);
        p[r] = vis ? expf(zr - mn) : 0.0f;
        l[r] = l[r] * c + p[r];
        for (int j = 0; j < J; j++) o[r][j] *= c;
        mx[r] = mn;
      }
#pragma unroll
      for (int r = 0; r < qt; r += 4)
        *reinterpret_cast<float4*>(Pw + lane * qt + r) =
            make_float4(p[r], p[r + 1], p[r + 2], p[r + 3]);
      __syncwarp();
      const float* Vs = sm + L.v(buf);
      for (int j = 0; j < nk; j++) {
        float pj[qt];
#pragma unroll
        for (int r = 0; r < qt; r += 4) {
          const float4 pp = *reinterpret_cast<const float4*>(Pw + j * qt + r);
          pj[r] = pp.x, pj[r + 1] = pp.y, pj[r + 2] = pp.z, pj[r + 3] = pp.w;
        }
#pragma unroll
        for (int jd = 0; jd < J; jd++) {
          const int d = lane + 32 * jd;
          const float vd = d < a.D ? Vs[j * L.dp + d] : 0.0f;
#pragma unroll
          for (int r = 0; r < qt; r++) o[r][jd] += pj[r] * vd;
        }
      }
    }
    __syncthreads();  // both buffers free for the next prefetch
  }

#pragma unroll
  for (int r = 0; r < qt; r++) {
    if (wi0 + r > i_last) break;
    const size_t row = size_t(wi0 + r) * a.H + h, part = size_t(s) * a.T * a.H + row;
    float* dst = f.splits == 1 ? f.out + row * a.D : f.part_o + part * a.D;
    float inv = 1.0f;
    if (softmax) {  // a split may see none of the row's keys: o = 0, lse = −inf
      const float lt = warp_sum(l[r]);
      inv = lt > 0.0f ? 1.0f / lt : 0.0f;
      if (lane == 0 && (f.splits > 1 || f.lse))
        (f.splits == 1 ? f.lse[row] : f.part_lse[part]) = lt > 0.0f ? mx[r] + logf(lt) : -INFINITY;
    }
    for (int j = 0; j < J; j++) {
      const int d = lane + 32 * j;
      if (d < a.D) dst[d] = o[r][j] * inv;
    }
  }
}

// Merge of the splits' partials, one warp per (query, head) row: σ: o = Σ_s o_s; softmax:
// M = max_s lse_s, o = Σ_s e^(lse_s − M) o_s / Σ_s e^(lse_s − M), lse = M + log Σ_s e^(lse_s − M).
template <bool softmax>
__global__ void k_combine(float* out, float* lse, const float* part_o, const float* part_lse,
                          int splits, int rows, int D) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;
  float M = -INFINITY, sum = 0.0f;
  if (softmax) {
    for (int s = 0; s < splits; s++) M = fmaxf(M, part_lse[size_t(s) * rows + row]);
    for (int s = 0; s < splits; s++) sum += expf(part_lse[size_t(s) * rows + row] - M);
  }
  for (int d = lane; d < D; d += 32) {
    float acc = 0.0f;
    for (int s = 0; s < splits; s++) {
      const float c = softmax ? expf(part_lse[size_t(s) * rows + row] - M) : 1.0f;
      acc += c * part_o[(size_t(s) * rows + row) * D + d];
    }
    out[size_t(row) * D + d] = softmax ? acc / sum : acc;
  }
  if (softmax && lse && lane == 0) lse[row] = M + logf(sum);
}

// dP = dO·v; dZ = p(1−p)dP (σ) or p(dP − Δ), Δ = dO·O (softmax); dq += dZ k·scale (this warp's
// row), dk += dZ q·scale and dv += p dO by atomics (GQA: the group's heads add up).
template <bool softmax>
__global__ void k_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v,
                           WindowArgs a) {
  const int i = blockIdx.x, h = blockIdx.y, lane = threadIdx.x, g = h / (a.H / a.Hkv);
  int m, lo;
  window_of(a, i, &m, &lo);
  const size_t row = (size_t(i) * a.H + h) * a.D;
  float qr[max_per_lane], dor[max_per_lane], dqr[max_per_lane] = {};
  float delta = 0.0f;
  for (int j = 0; j < max_per_lane; j++) {
    const int d = lane + 32 * j;
    qr[j] = d < a.D ? q[row + d] : 0.0f;
    dor[j] = d < a.D ? dout[row + d] : 0.0f;
    if (softmax && d < a.D) delta += dor[j] * out[row + d];
  }
  if (softmax) delta = warp_sum(delta);
  const float l = softmax ? lse[size_t(i) * a.H + h] : 0.0f;
  for (int n = lo; n <= m; n++) {
    const size_t kv = (size_t(n) * a.Hkv + g) * a.D;
    const float z = logit(a, qr, k + kv, lane, h, m, n);
    const float p = softmax ? expf(z - l) : 1.0f / (1.0f + expf(-(z + a.bias)));
    float dp = 0.0f;
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d < a.D) dp += dor[j] * v[kv + d];
    }
    dp = warp_sum(dp);
    const float dz = (softmax ? p * (dp - delta) : p * (1.0f - p) * dp) * a.scale;
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d >= a.D) continue;
      dqr[j] += dz * k[kv + d];
      if (dk) atomicAdd(&dk[kv + d], dz * qr[j]);
      if (dv) atomicAdd(&dv[kv + d], p * dor[j]);
    }
  }
  if (dq)
    for (int j = 0; j < max_per_lane; j++) {
      const int d = lane + 32 * j;
      if (d < a.D) dq[row + d] += dqr[j];
    }
}

void check(const WindowArgs& a) {
  if (a.D < 1 || a.D > 32 * max_per_lane)
    throw std::invalid_argument("cuda window attention: head dim " + std::to_string(a.D) +
                                " is outside [1, 256]");
}

// Launch plan: 4 warps (32 queries) per CTA when there are that many queries, else 1 (rings: 1,
// one query); key splits until about 2 CTAs per SM (decode: T = 1 query of H heads over ≤ w
// keys), each split ≥ 1 tile of the widest span (rings: the window; a CTA splits its own span).
struct Plan {
  int warps, splits;
};
Plan plan_of(const WindowArgs& a) {
  static const int sms = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      throw std::runtime_error("cuda window attention: cannot read the SM count");
    return n;
  }();
  const int warps = !a.rings && a.T >= 4 * qt ? 4 : 1, rows = cta_rows(a, warps);
  const int64_t ctas = int64_t((a.T + rows - 1) / rows) * a.H, want = 2 * sms;
  const int64_t span = a.rings ? a.window : std::min<int64_t>(a.Tk, int64_t(a.window) + rows - 1);
  const int64_t tiles = (span + kt - 1) / kt;
  if (ctas >= want) return {warps, 1};
  const int64_t splits = std::min({(want + ctas - 1) / ctas, tiles, int64_t(max_splits)});
  const int64_t per = (tiles + splits - 1) / splits;  // no empty split at the widest tile
  return {warps, int((tiles + per - 1) / per)};
}

template <bool softmax, int J>
void launch_forward(const FwdArgs& f, const WindowArgs& a, int warps) {
  static const cudaError_t opt_in = cudaFuncSetAttribute(  // the largest D of this J, 4 warps
      k_forward<softmax, J>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      int(FwdSmem(32 * J, 4).bytes()));
  if (opt_in != cudaSuccess)
    throw std::runtime_error(std::string("cuda window attention: shared memory: ") +
                             cudaGetErrorString(opt_in));
  const int rows = cta_rows(a, warps);
  const dim3 grid((a.T + rows - 1) / rows, a.H, f.splits);
  k_forward<softmax, J><<<grid, 32 * warps, FwdSmem(a.D, warps).bytes()>>>(f, a);
}

template <bool softmax>
void forward(const FwdArgs& f, const WindowArgs& a, int warps) {
  if (a.D <= 64) launch_forward<softmax, 2>(f, a, warps);
  else if (a.D <= 128) launch_forward<softmax, 4>(f, a, warps);
  else launch_forward<softmax, 8>(f, a, warps);
  if (f.splits == 1) return;
  const int rows = a.T * a.H;
  k_combine<softmax><<<(rows + 3) / 4, 128>>>(f.out, f.lse, f.part_o, f.part_lse, f.splits, rows,
                                               a.D);
}

}  // namespace

size_t window_attention_workspace_floats(const WindowArgs& a) {
  check(a);
  if (a.T <= 0) return 0;
  const Plan p = plan_of(a);
  return p.splits == 1 ? 0 : size_t(p.splits) * a.T * a.H * (a.D + 1);
}

void window_attention_forward(float* out, float* lse, const float* q, const float* k,
                              const float* v, const WindowArgs& a, bool softmax, float* workspace) {
  check(a);
  if (a.T <= 0) return;
  const Plan p = plan_of(a);
  const bool vec =
      a.D % 4 == 0 && (reinterpret_cast<uintptr_t>(k) | reinterpret_cast<uintptr_t>(v)) % 16 == 0;
  float* part_lse = p.splits == 1 ? nullptr : workspace + size_t(p.splits) * a.T * a.H * a.D;
  const FwdArgs f{out, lse, workspace, part_lse, q, k, v, p.splits, vec};
  if (softmax) forward<true>(f, a, p.warps);
  else forward<false>(f, a, p.warps);
  check_launch("window_attention_forward");
}

void window_attention_backward(float* dq, float* dk, float* dv, const float* dout,
                               const float* out, const float* lse, const float* q,
                               const float* k, const float* v, const WindowArgs& a, bool softmax) {
  check(a);
  if (a.rings) throw std::invalid_argument("cuda window attention: the backward takes no KV rings");
  if (a.T <= 0) return;
  const dim3 grid(a.T, a.H);
  if (softmax) k_backward<true><<<grid, 32>>>(dq, dk, dv, dout, out, lse, q, k, v, a);
  else k_backward<false><<<grid, 32>>>(dq, dk, dv, dout, out, lse, q, k, v, a);
  check_launch("window_attention_backward");
}

}  // namespace longctx::cuda
