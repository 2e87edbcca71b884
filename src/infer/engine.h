// The inference engine (DESIGN.md §2.2): the model's forward over KV caches instead of whole
// sequences, with the op table of training (src/kernels/backend.h).
//
//   Engine::forward   one step over several sequences at once: each Segment feeds n tokens of
//                     one sequence (a prefill chunk, or 1 token when decoding); the rows of all
//                     segments go through the matmuls together, attention runs per segment
//                     against [its cache's last w−1 entries + its own keys] (AttnShape::Tk);
//                     a pure decode step (every segment 1 token) attends in one
//                     Backend::decode_attn_forward per layer, reading the rings in place.
//   Engine::prefill   a prompt in chunks of EngineOptions::chunk tokens: a 1M-token prompt
//                     streams through in memory bounded by the chunk and the window.
//   Scheduler         continuous batching: requests join and leave between steps; each step is
//                     one Engine::forward over every running sequence's next token plus one
//                     prefill chunk of the oldest waiting request. `n` samples of a prompt share
//                     its prefill (the cache is copied n times). A finished sequence's cache is
//                     recycled for the next one while work is queued (no device allocation per
//                     sequence); StepCounters tell where the steps' time goes.
// Any backend: caches, activations and scratch live in the backend's memory (Buffer); the host
// only sends tokens and positions and receives each segment's last-row logits (Backend::copy), or,
// on a device backend whose running sequences all sample without a top-k/top-p cut, the decode
// rows' tokens drawn on the device (Backend::sample_rows, u from each sequence's own Rng).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "model/model.h"

namespace longctx {

struct EngineOptions {
  int max_context = 1 << 20;  // bounds a growing (softmax-full) cache; SWAT runs past it
  int chunk = 512;            // prefill tokens per forward
};

// n tokens of one sequence for Engine::forward (caches of one call must be distinct).
struct Segment {
  KvCache* cache = nullptr;
  const int32_t* tokens = nullptr;
  int n = 0;
};

class Engine {
 public:
  Engine(Model& m, const EngineOptions& opt);
  const Config& config() const { return m_.config; }
  const EngineOptions& options() const { return opt_; }
  const Backend& backend() const { return *m_.backend; }
  KvCache new_cache() const { return kv_cache_init(m_.config, opt_.max_context, *m_.backend); }
  // Tokens a new sequence may hold in total (prompt + generated).
  int64_t max_sequence() const { return new_cache().room(); }

  // Feeds each segment's tokens at positions cache->n_past.. and appends their keys/values;
  // writes the logits (V) of each segment's last token to logits + i·V (host memory).
  void forward(const Segment* segs, int n_segs, float* logits);
  // forward on a device backend, the logits (n_segs, V) left in its memory (valid until the next
  // call): for Backend::sample_rows, which downloads n_segs tokens instead of n_segs × V floats.
  const float* forward_device(const Segment* segs, int n_segs);
  // Chunked prefill of n ≥ 1 tokens; logits (V) of the last one.
  void prefill(KvCache& c, const int32_t* tokens, int n, float* logits);
  size_t scratch_bytes() const;

 private:
  void reserve(int T, int n_segs, int kv_rows);
  void run(const Segment* segs, int n_segs, float* logits);  // forward; device: logits in logits_
  Model& m_;
  EngineOptions opt_;
  int T_max_ = 0;
  Buffer<float> x_, ln_, rstd_, q_, k_, v_, att_, lse_, mid_, gate_, up_, h_;
  Buffer<float> logits_;                     // device backends: the logits before the download
  Buffer<int32_t> tokens_, pos_;
  std::vector<int32_t> host_tokens_, host_pos_;
  std::vector<Buffer<float>> gk_, gv_;       // per-thread [cache + chunk] keys/values
  Buffer<KvRing> rings_;                     // decode steps: (layer, segment) rings
  std::vector<KvRing> host_rings_;
};

enum class Finish { none, stop, length, cancelled, error };
const char* to_string(Finish f);

// One request: n samples of a prompt. Callbacks run on the scheduler's thread.
struct GenRequest {
  std::vector<int32_t> prompt;  // ≥ 1 token
  int n = 1;
  int max_tokens = 16;          // per sample
  SamplerParams sampling;       // sample i draws with seed + i
  int32_t eos = -1;             // ends a sample (not passed to on_token)
  // A new token of sample i; return false to end the sample (stop string, client gone).
  std::function<bool(int i, int32_t token)> on_token;
  // Sample i finished (once per sample); after the last one the request is done.
  std::function<void(int i, Finish why)> on_finish;
  std::atomic<bool> cancelled{false};  // set from any thread: frees the request's slots
};

struct SchedulerStats {
  int64_t requests = 0, prompt_tokens = 0, generated_tokens = 0, steps = 0;
  int waiting = 0;  // requests queued, not yet admitted
  int running = 0;  // sequences admitted (prefilling or decoding), not yet finished
};

// What a Scheduler's steps did and where their host wall time went (--engine-stats and
// --profile-ops of reps sample / judge / eval). forward_s includes the device's work (the logits
// download waits for it) and a cache's growth (kv_cache_reserve).
struct StepCounters {
  int64_t steps = 0;
  int64_t mixed_steps = 0;      // steps with a prefill chunk (and decode rows, if any)
  int64_t decode_rows = 0;      // Σ over steps of the sequences decoding one token
  int64_t prefill_rows = 0;     // Σ over steps of the prefill chunk's tokens
  int max_decode_rows = 0;
  int64_t full_steps = 0;       // steps decoding max_batch sequences
  int64_t caches_used = 0;      // KV caches a prefill or a sample started with
  int64_t caches_allocated = 0; // of those, new ones (the rest were recycled)
  int64_t device_rows = 0;      // decode rows drawn on the device (Backend::sample_rows)
  double forward_s = 0;         // Engine::forward
  double sample_s = 0;          // drawing the next tokens from the logits
  double cache_s = 0;           // KV caches: taking one (new or recycled), copying the prefill's
  double emit_s = 0;            // the requests' callbacks (on_token, on_finish)
  double step_s = 0;            // the whole of step() (the rest: admission and bookkeeping)
};

class Scheduler {
 public:
  Scheduler(Engine& e, int max_batch);
  ~Scheduler();  // stops the thread, cancels what is left
  // Queue a request (thread-safe). Throws Error if it can never fit (prompt too long).
  void submit(std::shared_ptr<GenRequest> r);
  void start();                 // run steps on a background thread
  void stop();
  bool step();                  // one step on the caller's thread; false when idle
  void run_until_idle() { while (step()) {} }
  SchedulerStats stats() const;
  // The scheduler thread's counters: read them between step() calls, or after stop().
  const StepCounters& counters() const { return counters_; }

 private:
  struct Seq {
    std::shared_ptr<GenRequest> req;
    int index = 0;
    KvCache cache;
    Sampler sampler;
    int32_t next = 0;  // sampled, not yet fed
    int produced = 0;
  };
  struct Prefill {
    std::shared_ptr<GenRequest> req;
    KvCache cache;
    int64_t done = 0;
  };
  bool emit(Seq& s, int32_t token);  // false: the sequence finished
  void loop();
  KvCache take_cache();              // a recycled cache (n_past 0) or a new one
  void recycle(KvCache&& c);

  Engine& e_;
  int max_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<GenRequest>> queue_;  // guarded by mu_
  std::vector<std::unique_ptr<Seq>> running_;      // scheduler thread only
  std::unique_ptr<Prefill> prefill_;
  std::vector<KvCache> free_caches_;               // finished sequences' caches, while work is queued
  StepCounters counters_;                          // scheduler thread only
  SchedulerStats stats_;                           // guarded by mu_
  std::thread thread_;
  bool stopping_ = false;
  // The step's logits (rows × V) in page-locked host memory: a device backend's download of
  // them (every step) runs at the bus's speed, not through a staging copy.
  std::unique_ptr<void, void (*)(void*)> logits_{nullptr, nullptr};
  size_t logits_floats_ = 0;
  // Device backends with plain samplers: the decode rows' (u, temperature) as uploaded, and the
  // tokens Backend::sample_rows draws from them.
  std::vector<float> host_draw_;
  Buffer<float> draw_;
  Buffer<int32_t> drawn_;
};

}  // namespace longctx
