// Helpers shared by the MPI test drivers (mpi_cp_test, mpi_ring_test, mpi_hdp_test): relative
// error, random documents, packed batches, the tiny test model, and for the mode drivers (one
// mode per mpirun) mismatch reporting and a main() that gives every rank the same exit code.
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "dist/comm.h"
#include "model/model.h"
#include "test_util.h"  // randn

namespace longctx::testing {

// ‖a − b‖ / ‖b‖ (‖a − b‖ when b = 0).
inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Documents of the given lengths, tokens uniform in [0, V).
inline std::vector<std::vector<int32_t>> random_docs(const std::vector<int64_t>& len, int V,
                                                     uint64_t seed) {
  Rng rng(seed, 0);
  std::vector<std::vector<int32_t>> docs(len.size());
  for (size_t i = 0; i < len.size(); i++) {
    docs[i].resize(size_t(len[i]));
    for (auto& t : docs[i]) t = int32_t(rng.below(uint64_t(V)));
  }
  return docs;
}

// Documents packed into one stream (what one process trains on): positions restart per
// document, a document's last token has no target.
struct Packed {
  std::vector<int32_t> tokens, targets, pos, cu{0};
  TokenBatch view() const {
    return {tokens.data(), targets.data(), pos.data(), cu.data(), int(tokens.size()),
            int(cu.size()) - 1};
  }
};
inline Packed pack(const std::vector<std::vector<int32_t>>& docs) {
  Packed b;
  for (const auto& d : docs) {
    for (size_t t = 0; t < d.size(); t++) {
      b.tokens.push_back(d[t]);
      b.targets.push_back(t + 1 < d.size() ? d[t + 1] : -1);
      b.pos.push_back(int32_t(t));
    }
    b.cu.push_back(int32_t(b.tokens.size()));
  }
  return b;
}

// The test model: hidden 64, 2 layers, 4 query heads over 2 KV heads (GQA), vocabulary 96.
inline Config tiny_config() {
  Config cfg;
  cfg.hidden_size = 64;
  cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.intermediate_size = 128;
  cfg.vocab_size = 96;
  return cfg;
}

// ---- mode drivers ------------------------------------------------------------------------------

inline int& mpi_failures() {
  static int n = 0;
  return n;
}

// Reports a failed check on this rank (the job's exit code becomes 1).
inline void mismatch(Comm& c, const std::string& what) {
  std::fprintf(stderr, "rank %d: MISMATCH %s\n", c.rank(), what.c_str());
  mpi_failures()++;
}

inline void expect_close(Comm& c, const std::string& what, const float* got, const float* want,
                         size_t n, double tol = 1e-5) {
  const double e = rel_err(got, want, n);
  if (!(e < tol)) mismatch(c, what + ": relative error " + std::to_string(e) + " >= " + std::to_string(tol));
}

// main() of a mode driver: MPI up (blocking calls time out after timeout_s), run(comm, args) on
// every rank with args = argv[1..] (args[0]: the mode) — false for unknown arguments (the job ends
// with `usage`), an exception ends the job with its message — then every rank exits 1 if any rank
// reported a mismatch, else 0.
inline int mpi_mode_main(const char* prog, int argc, char** argv, double timeout_s,
                         const std::string& usage,
                         const std::function<bool(Comm&, const std::vector<std::string>&)>& run) {
  std::unique_ptr<Comm> c;
  try {
    c = comm_mpi_init(&argc, &argv, timeout_s);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: %s\n", prog, e.what());
    return 1;
  }
  const std::vector<std::string> args(argv + 1, argv + argc);
  const std::string mode = args.empty() ? "" : args[0];
  try {
    if (!run(*c, args)) c->abort("usage: " + usage, 2);
  } catch (const std::exception& e) {  // Error, or a malformed number in args
    c->abort(std::string("error: ") + e.what(), 1);
  }
  std::vector<float> f{float(mpi_failures())};
  c->allreduce_sum(f.data(), 1);
  if (f[0] > 0) {
    if (c->rank() == 0) std::fprintf(stderr, "%s %s: %g mismatches\n", prog, mode.c_str(), double(f[0]));
    return 1;
  }
  if (c->rank() == 0) std::printf("%s %s: ok (%d ranks)\n", prog, mode.c_str(), c->size());
  return 0;
}

}  // namespace longctx::testing
