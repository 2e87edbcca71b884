// Backend::decode_attn_forward on any backend (test_ops: cpu vs cpu_ref and the definition;
// test_cuda_ops: cuda vs cpu_ref): a decode batch of sequences at their own positions, each with
// a KV ring of its own capacity filled with random entries (stale slots included), run on a
// backend's memory; the results are the outputs and every ring after the call (the op stores the
// new entries).
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "test_util.h"

namespace longctx::testing {

struct DecodeCase {
  int H, Hkv, D, window;
  std::vector<int32_t> pos, capacity;  // per sequence: position p of its token, ring entries C
  Alibi alibi;
  float bias;
  std::string name() const {
    std::string n = "S" + std::to_string(pos.size()) + "_H" + std::to_string(H) + "_Hkv" +
                    std::to_string(Hkv) + "_D" + std::to_string(D) + "_w" +
                    std::to_string(std::min(window, 99999)) + "_p";
    for (size_t i = 0; i < pos.size(); i++) {
      if (i) n += '_';
      n += std::to_string(pos[i]);
    }
    return n + (bias != 0.0f ? "_bias" : "");
  }
};

// Host inputs of one case, deterministic in it: q (S,H,D), k_new, v_new (S,Hkv,D), and each
// sequence's ring contents before the call (C_i, Hkv, D).
struct DecodeData {
  DecodeCase c;
  int S;
  size_t kvd;
  std::vector<float> slopes, q, k_new, v_new;
  std::vector<std::vector<float>> ring_k, ring_v;
  explicit DecodeData(const DecodeCase& c_) : c(c_), S(int(c_.pos.size())), kvd(size_t(c_.Hkv) * c_.D) {
    slopes.resize(c.H);
    alibi_slopes(slopes.data(), c.alibi, c.H);
    q = randn<float>(size_t(S) * c.H * c.D, 31);
    k_new = randn<float>(size_t(S) * kvd, 32), v_new = randn<float>(size_t(S) * kvd, 33);
    for (int i = 0; i < S; i++) {
      ring_k.push_back(randn<float>(size_t(c.capacity[i]) * kvd, 40 + 2 * i));
      ring_v.push_back(randn<float>(size_t(c.capacity[i]) * kvd, 41 + 2 * i));
    }
  }
  AttnShape shape(const float* slopes_on_backend) const {
    AttnShape s;
    s.H = c.H, s.Hkv = c.Hkv, s.D = c.D, s.window = c.window;
    s.slopes = slopes_on_backend, s.bias = c.bias, s.scale = 1.0f / std::sqrt(float(c.D));
    return s;
  }
};

struct DecodeResult {
  std::vector<float> out;                       // (S,H,D)
  std::vector<std::vector<float>> ring_k, ring_v;  // each ring after the call
};

// Runs the op on `be` (inputs copied to its memory, out poisoned with NaN). Each ring starts
// `misalign` floats into its allocation (a ring the cuda kernel cannot read 16 bytes at a time).
inline DecodeResult run_decode(const Backend& be, const DecodeData& d, bool softmax,
                               size_t misalign = 0) {
  using B = Buffer<float>;
  const B q = B::from_host(be, d.q.data(), d.q.size()), kn = B::from_host(be, d.k_new.data(), d.kvd * d.S),
          vn = B::from_host(be, d.v_new.data(), d.kvd * d.S), sl = B::from_host(be, d.slopes.data(), d.slopes.size());
  const std::vector<float> nan(d.q.size(), NAN);
  B out = B::from_host(be, nan.data(), nan.size());
  std::vector<B> rk, rv;
  std::vector<KvRing> host(d.S);
  for (int i = 0; i < d.S; i++) {
    rk.emplace_back(be, d.ring_k[i].size() + misalign), rv.emplace_back(be, d.ring_v[i].size() + misalign);
    rk[i].upload(d.ring_k[i].data(), d.ring_k[i].size(), misalign);
    rv[i].upload(d.ring_v[i].data(), d.ring_v[i].size(), misalign);
    host[i] = {rk[i].data() + misalign, rv[i].data() + misalign, d.c.capacity[i], d.c.pos[i]};
  }
  const Buffer<KvRing> rings = Buffer<KvRing>::from_host(be, host.data(), host.size());
  be.decode_attn_forward(out.data(), q.data(), kn.data(), vn.data(), rings.data(), d.S,
                         d.shape(sl.data()), softmax);
  DecodeResult r{out.to_host(), {}, {}};
  for (int i = 0; i < d.S; i++) {
    std::vector<float> k = rk[i].to_host(), v = rv[i].to_host();
    r.ring_k.emplace_back(k.begin() + long(misalign), k.end());
    r.ring_v.emplace_back(v.begin() + long(misalign), v.end());
  }
  return r;
}

}  // namespace longctx::testing
