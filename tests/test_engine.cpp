// Inference engine (src/infer/engine.h): the logits after chunked prefill + decode over a ring
// KV cache equal the full-sequence model_forward logits, for SWAT (window smaller than the
// context, so the ring wraps, several chunks) and softmax (growing cache and sliding window);
// batched decode equals decoding alone; n samples sharing one prefill equal separate requests;
// cancellation frees slots; context limits give clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/loader.h"
#include "infer/engine.h"
#include "infer/generate.h"
#include "model/model.h"
#include "model/params.h"
#include "test_util.h"

using namespace longctx;
using longctx::testing::max_rel_err;

namespace {

Config tiny_config(AttnKind kind, int window) {
  Config c;
  c.hidden_size = 64, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.intermediate_size = 128, c.vocab_size = 97;
  c.attention = kind, c.window = window;
  c.alibi = kind == AttnKind::swat ? Alibi::balanced : Alibi::none;
  return c;
}

std::unique_ptr<Model> make_model(const Config& c) {
  auto m = std::make_unique<Model>(c, backend_cpu());
  param_init(m->params.data(), m->layout, c, 7);
  // Larger weights than the training init so attention is far from uniform.
  Rng r(3);
  for (float& p : m->params) p += 0.05f * r.normal();
  return m;
}

std::vector<int32_t> random_tokens(int n, int V, uint64_t seed) {
  return random_batch(1, n, V, seed).tokens;
}

// Logits (T, V) of every position from one full-sequence model_forward.
std::vector<float> full_logits(Model& m, const std::vector<int32_t>& toks) {
  const int T = int(toks.size()), d = m.config.hidden_size, V = m.config.vocab_size;
  m.reserve(T);
  std::vector<int32_t> pos(T);
  for (int i = 0; i < T; i++) pos[i] = i;
  const int32_t cu[2] = {0, T};
  TokenBatch b;
  b.tokens = toks.data(), b.pos = pos.data(), b.cu_seqlens = cu, b.T = T, b.n_docs = 1;
  model_forward(m, b, nullptr);
  std::vector<float> out(size_t(T) * V);
  m.backend->matmul_forward(out.data(), m.acts.lnf, m.params.data() + m.layout.lm_head, T, d, V);
  return out;
}

// Prefill `n_prompt` tokens in chunks of `chunk`, then decode the rest one at a time; every
// logits vector must match the full forward's.
void check_exact(AttnKind kind, int window, int max_context, int chunk, int T, int n_prompt) {
  auto m = make_model(tiny_config(kind, window));
  const int V = m->config.vocab_size;
  auto toks = random_tokens(T, V, 11);
  auto ref = full_logits(*m, toks);
  EngineOptions opt;
  opt.chunk = chunk, opt.max_context = max_context;
  Engine e(*m, opt);
  KvCache c = e.new_cache();
  std::vector<float> lg(V);
  e.prefill(c, toks.data(), n_prompt, lg.data());
  EXPECT_LE(max_rel_err(lg.data(), &ref[size_t(n_prompt - 1) * V], V), 1e-4) << "after prefill";
  for (int t = n_prompt; t < T; t++) {
    Segment s{&c, &toks[t], 1};
    e.forward(&s, 1, lg.data());
    ASSERT_LE(max_rel_err(lg.data(), &ref[size_t(t) * V], V), 1e-4) << "decode position " << t;
  }
  EXPECT_EQ(c.n_past, T);
  EXPECT_LE(c.rows, std::min(window, max_context));  // the cache never outgrows its ring
}

}  // namespace

TEST(EngineExact, SwatRingWrapsOverSeveralChunks) { check_exact(AttnKind::swat, 16, 1 << 20, 7, 120, 61); }
TEST(EngineExact, SwatChunkLargerThanWindow) { check_exact(AttnKind::swat, 5, 1 << 20, 32, 90, 80); }
TEST(EngineExact, SwatPromptOfOneToken) { check_exact(AttnKind::swat, 8, 1 << 20, 4, 40, 1); }
TEST(EngineExact, SoftmaxFullGrowingCache) { check_exact(AttnKind::softmax, 1 << 20, 128, 9, 110, 50); }
TEST(EngineExact, SoftmaxSlidingWindow) { check_exact(AttnKind::softmax, 12, 1 << 20, 10, 80, 33); }

TEST(Engine, BatchedDecodeEqualsAlone) {
  auto m = make_model(tiny_config(AttnKind::swat, 16));
  const int V = m->config.vocab_size;
  Engine e(*m, {});
  const int lens[3] = {5, 40, 17};
  std::vector<KvCache> batch, alone;
  std::vector<std::vector<int32_t>> toks;
  std::vector<float> lg(3 * V), one(V);
  for (int i = 0; i < 3; i++) {
    toks.push_back(random_tokens(lens[i] + 6, V, 100 + i));
    batch.push_back(e.new_cache());
    e.prefill(batch.back(), toks[i].data(), lens[i], one.data());
    alone.push_back(batch.back());
  }
  for (int step = 0; step < 6; step++) {
    std::vector<Segment> segs;
    for (int i = 0; i < 3; i++) segs.push_back({&batch[i], &toks[i][lens[i] + step], 1});
    e.forward(segs.data(), 3, lg.data());
    for (int i = 0; i < 3; i++) {
      Segment s{&alone[i], &toks[i][lens[i] + step], 1};
      e.forward(&s, 1, one.data());
      EXPECT_LE(max_rel_err(&lg[size_t(i) * V], one.data(), V), 1e-5) << "seq " << i << " step " << step;
    }
  }
  // Decode tokens (batched decode op; seq 1's ring has wrapped) and a prefill chunk mixed in one
  // step (continuous batching): every row equals its sequence alone.
  KvCache fresh = e.new_cache(), fresh2 = e.new_cache();
  auto p = random_tokens(30, V, 9);
  std::vector<Segment> mixed = {{&batch[0], &toks[0][0], 1}, {&batch[1], &toks[1][0], 1}, {&fresh, p.data(), 30}};
  e.forward(mixed.data(), 3, lg.data());
  for (int i = 0; i < 2; i++) {
    Segment s{&alone[i], &toks[i][0], 1};
    e.forward(&s, 1, one.data());
    EXPECT_LE(max_rel_err(&lg[size_t(i) * V], one.data(), V), 1e-5) << "mixed step, decode seq " << i;
  }
  e.prefill(fresh2, p.data(), 30, one.data());
  EXPECT_LE(max_rel_err(&lg[size_t(2) * V], one.data(), V), 1e-5);
}

// Several prefill segments after the decode rows in one forward (their last rows move up to
// rows n_dec.. of the stream before the head): each equals its sequence alone.
TEST(Engine, SeveralPrefillSegmentsInOneStep) {
  auto m = make_model(tiny_config(AttnKind::swat, 16));
  const int V = m->config.vocab_size;
  Engine e(*m, {});
  auto p = random_tokens(40, V, 21);
  KvCache dec = e.new_cache(), dec_alone = e.new_cache();
  std::vector<float> one(V);
  e.prefill(dec, p.data(), 20, one.data());
  e.prefill(dec_alone, p.data(), 20, one.data());
  const int lens[3] = {7, 1, 4};
  std::vector<KvCache> pre, alone;
  for (int i = 0; i < 3; i++) pre.push_back(e.new_cache()), alone.push_back(e.new_cache());
  std::vector<Segment> segs = {{&dec, &p[20], 1}, {&pre[0], &p[21], lens[0]}, {&pre[1], &p[28], lens[1]},
                               {&pre[2], &p[29], lens[2]}};
  std::vector<float> lg(4 * V);
  e.forward(segs.data(), 4, lg.data());
  Segment d{&dec_alone, &p[20], 1};
  e.forward(&d, 1, one.data());
  EXPECT_LE(max_rel_err(lg.data(), one.data(), V), 1e-5) << "decode row";
  for (int i = 0; i < 3; i++) {
    e.prefill(alone[i], segs[i + 1].tokens, lens[i], one.data());
    EXPECT_LE(max_rel_err(&lg[size_t(i + 1) * V], one.data(), V), 1e-5) << "prefill segment " << i;
  }
}

namespace {
struct Collect {
  std::vector<std::vector<int32_t>> out;
  std::vector<Finish> why;
  std::shared_ptr<GenRequest> req(std::vector<int32_t> prompt, int n, int max_tokens, float temp,
                                  uint64_t seed) {
    out.assign(n, {}), why.assign(n, Finish::none);
    auto r = std::make_shared<GenRequest>();
    r->prompt = std::move(prompt), r->n = n, r->max_tokens = max_tokens;
    r->sampling.temperature = temp, r->sampling.seed = seed, r->sampling.top_k = 0;
    r->on_token = [this](int i, int32_t t) { out[i].push_back(t); return true; };
    r->on_finish = [this](int i, Finish f) { why[i] = f; };
    return r;
  }
};
}  // namespace

TEST(Scheduler, SamplesSharingOnePrefillEqualSeparateRequests) {
  auto m = make_model(tiny_config(AttnKind::swat, 16));
  EngineOptions opt;
  opt.chunk = 8;
  Engine e(*m, opt);
  auto prompt = random_tokens(37, m->config.vocab_size, 5);
  Collect shared, single;
  {
    Scheduler s(e, 8);
    s.submit(shared.req(prompt, 4, 12, 1.0f, 100));
    s.run_until_idle();
  }
  for (int i = 0; i < 4; i++) {
    Scheduler s(e, 8);
    s.submit(single.req(prompt, 1, 12, 1.0f, 100 + i));
    s.run_until_idle();
    EXPECT_EQ(shared.out[i], single.out[0]) << "sample " << i;
    EXPECT_EQ(shared.why[i], Finish::length);
  }
  EXPECT_NE(shared.out[0], shared.out[1]);  // different seeds, different samples
  // The same request through generate() (greedy) and the scheduler agree.
  Collect greedy;
  Scheduler s(e, 8);
  s.submit(greedy.req(prompt, 2, 10, 0.0f, 0));
  s.run_until_idle();
  std::vector<int32_t> g = prompt;
  Sampler sm({0.0f, 0, 1.0f, 0});
  generate(*m, g, 10, sm, -1, 1 << 20, nullptr);
  EXPECT_EQ(std::vector<int32_t>(g.begin() + 37, g.end()), greedy.out[0]);
  EXPECT_EQ(greedy.out[0], greedy.out[1]);
}

// One scheduler serves requests of different lengths over a small batch, so finished sequences'
// caches (grown, with stale entries; a wrapped ring for SWAT) serve later prompts and samples:
// every sample equals the same request on a fresh scheduler, few caches are new, and the counters
// add up.
TEST(Scheduler, RecycledCachesGiveTheSameSamples) {
  for (AttnKind kind : {AttnKind::swat, AttnKind::softmax}) {
    auto m = make_model(tiny_config(kind, kind == AttnKind::swat ? 16 : 1 << 20));
    EngineOptions opt;
    opt.chunk = 8, opt.max_context = 128;
    Engine e(*m, opt);
    const int lens[5] = {37, 5, 50, 12, 23}, ns[5] = {3, 2, 1, 4, 2}, max_tokens[5] = {12, 20, 6, 9, 15};
    std::vector<Collect> together(5), alone(5);  // sized once: the callbacks point into them
    Scheduler s(e, 4);
    int64_t decode_rows = 0, prefill_rows = 0, samples = 0;
    for (int r = 0; r < 5; r++) {
      s.submit(together[r].req(random_tokens(lens[r], 97, 40 + r), ns[r], max_tokens[r], 0.9f, 7 * r));
      decode_rows += ns[r] * (max_tokens[r] - 1);  // the first token comes from the prefill's logits
      prefill_rows += lens[r], samples += ns[r];
    }
    s.run_until_idle();
    for (int r = 0; r < 5; r++) {
      Scheduler fresh(e, 4);
      fresh.submit(alone[r].req(random_tokens(lens[r], 97, 40 + r), ns[r], max_tokens[r], 0.9f, 7 * r));
      fresh.run_until_idle();
      EXPECT_EQ(together[r].out, alone[r].out) << to_string(kind) << " request " << r;
      EXPECT_EQ(fresh.counters().caches_allocated, ns[r]);
    }
    const StepCounters& c = s.counters();
    EXPECT_EQ(c.caches_used, samples);
    EXPECT_LE(c.caches_allocated, 5) << "at most a batch of 4 and one prefill at a time";
    EXPECT_EQ(c.decode_rows, decode_rows);
    EXPECT_EQ(c.prefill_rows, prefill_rows);
    EXPECT_EQ(c.steps, s.stats().steps);
    EXPECT_LE(c.max_decode_rows, 4);
    EXPECT_GT(c.full_steps, 0);
    EXPECT_GT(c.forward_s, 0.0);
    EXPECT_GE(c.step_s, c.forward_s + c.sample_s + c.cache_s + c.emit_s);
  }
}

// A device backend's step draws the decode rows' tokens with Backend::sample_rows on logits left
// in its memory (Engine::forward_device) when no running sequence cuts: the same tokens as the
// host path. Here the cpu table marked as a device backend runs that path (the same ops, so the
// same logits bit for bit); a request with a top-k cut sends its batches' rows to the host path.
TEST(Scheduler, DeviceSamplingPathDrawsTheHostTokens) {
  Backend as_device = backend_cpu();
  as_device.name = "cpu_as_device", as_device.device = true;
  auto host = make_model(tiny_config(AttnKind::swat, 16));
  Model dev(host->config, as_device);
  dev.params.upload(host->params.data(), host->params.size());
  auto run = [](Model& m, int top_k_of_last, StepCounters& counters) {
    EngineOptions opt;
    opt.chunk = 8;
    Engine e(m, opt);
    std::vector<Collect> c(3);
    Scheduler s(e, 6);
    for (int r = 0; r < 3; r++) {
      auto req = c[size_t(r)].req(random_tokens(20 + 9 * r, 97, 60 + r), 2, 10, r == 1 ? 0.0f : 0.8f, 3 * r);
      if (r == 2) req->sampling.top_k = top_k_of_last;
      s.submit(req);
    }
    s.run_until_idle();
    counters = s.counters();
    std::vector<std::vector<int32_t>> out;
    for (const Collect& x : c) out.insert(out.end(), x.out.begin(), x.out.end());
    return out;
  };
  for (int top_k : {0, 5}) {
    StepCounters on_host, on_device;
    const auto want = run(*host, top_k, on_host), got = run(dev, top_k, on_device);
    EXPECT_EQ(got, want) << "top_k " << top_k;
    EXPECT_EQ(on_host.device_rows, 0);
    EXPECT_EQ(on_device.decode_rows, on_host.decode_rows);
    if (top_k == 0)
      EXPECT_EQ(on_device.device_rows, on_device.decode_rows);
    else
      EXPECT_LT(on_device.device_rows, on_device.decode_rows);
    EXPECT_GT(on_device.device_rows, 0);
  }
  Engine e(*host, {});
  KvCache kc = e.new_cache();
  const int32_t tok = 1;
  Segment sg{&kc, &tok, 1};
  EXPECT_THROW(e.forward_device(&sg, 1), Error);  // a host backend's logits are host memory
}

TEST(Scheduler, ContinuousBatchingThreadedCancelAndErrors) {
  auto m = make_model(tiny_config(AttnKind::softmax, 1 << 20));
  EngineOptions opt;
  opt.max_context = 64;
  Engine e(*m, opt);
  Scheduler s(e, 3);
  // Prompt + max_tokens over the 64-token context of a softmax-full model: a clear error.
  auto too_long = std::make_shared<GenRequest>();
  too_long->prompt = random_tokens(60, 97, 1), too_long->max_tokens = 5;
  EXPECT_THROW(s.submit(too_long), Error);
  auto bad = std::make_shared<GenRequest>();
  bad->prompt = {1, 2}, bad->max_tokens = 0;
  EXPECT_THROW(s.submit(bad), Error);
  // Five requests over a batch of 3, one cancelled after its first token: all finish.
  s.start();
  std::vector<Collect> cs(5);
  std::vector<std::shared_ptr<GenRequest>> rs;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  for (int i = 0; i < 5; i++) {
    auto r = cs[i].req(random_tokens(10 + i, 97, 20 + i), 1, 20, 0.7f, i);
    auto on_tok = r->on_token;
    if (i == 2) r->on_token = [&, on_tok, rp = r.get()](int k, int32_t t) { on_tok(k, t); rp->cancelled = true; return true; };
    auto on_fin = r->on_finish;
    r->on_finish = [&, on_fin](int k, Finish f) { on_fin(k, f); std::lock_guard<std::mutex> lk(mu); done++; cv.notify_all(); };
    rs.push_back(r);
    s.submit(r);
  }
  std::unique_lock<std::mutex> lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(30), [&] { return done == 5; }));
  lk.unlock();
  for (int i = 0; i < 5; i++) {
    if (i == 2) {
      EXPECT_EQ(cs[i].why[0], Finish::cancelled);
      EXPECT_LE(cs[i].out[0].size(), 2u);
    } else {
      EXPECT_EQ(cs[i].why[0], Finish::length);
      EXPECT_EQ(cs[i].out[0].size(), 20u);
    }
  }
  s.stop();
  auto st = s.stats();
  EXPECT_EQ(st.requests, 5);
  EXPECT_EQ(st.running, 0);
}

TEST(Engine, SwatMemoryIsConstantInContext) {
  auto m = make_model(tiny_config(AttnKind::swat, 16));
  EngineOptions opt;
  opt.chunk = 64;
  Engine e(*m, opt);
  KvCache c = e.new_cache();
  auto toks = random_tokens(2000, 97, 4);
  std::vector<float> lg(97);
  e.prefill(c, toks.data(), 1000, lg.data());
  const size_t cache = c.bytes(), scratch = e.scratch_bytes();
  e.prefill(c, toks.data() + 1000, 1000, lg.data());
  EXPECT_EQ(c.bytes(), cache);
  EXPECT_EQ(e.scratch_bytes(), scratch);
  EXPECT_EQ(c.rows, 16);
}
