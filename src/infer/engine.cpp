#include "infer/engine.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <type_traits>

#include "core/clock.h"
#include "core/error.h"

namespace longctx {

Engine::Engine(Model& m, const EngineOptions& opt) : m_(m), opt_(opt) {
  LCX_CHECK(opt.chunk >= 1, "engine: chunk must be ≥ 1, got {}", opt.chunk);
  LCX_CHECK(opt.max_context >= 1, "engine: max_context must be ≥ 1, got {}", opt.max_context);
}

void Engine::reserve(int T, int n_segs, int kv_rows) {
  const Config& c = m_.config;
  const Backend& be = *m_.backend;
  const size_t d = c.hidden_size, qd = size_t(c.num_attention_heads) * c.head_dim();
  const size_t kvd = size_t(c.num_key_value_heads) * c.head_dim(), F = c.intermediate_size;
  auto grow = [&](auto& b, size_t n) { if (b.size() < n) b = std::decay_t<decltype(b)>(be, n); };
  const size_t rows = size_t(std::max(T, n_segs));
  grow(x_, rows * d), grow(ln_, rows * d), grow(rstd_, rows), grow(mid_, T * d);
  grow(q_, T * qd), grow(att_, T * qd), grow(k_, T * kvd), grow(v_, T * kvd);
  grow(lse_, size_t(T) * c.num_attention_heads);
  grow(gate_, T * F), grow(up_, T * F), grow(h_, T * F);
  if (be.device) grow(logits_, size_t(n_segs) * c.vocab_size);
  grow(tokens_, size_t(T)), grow(pos_, size_t(T));
  if (host_tokens_.size() < size_t(T)) host_tokens_.resize(T), host_pos_.resize(T);
  // Host backends attend to several segments in parallel (one scratch per thread).
  const size_t threads = be.device ? 1 : size_t(omp_get_max_threads());
  if (gk_.size() < threads) gk_.resize(threads), gv_.resize(threads);
  for (size_t i = 0; i < threads; i++) grow(gk_[i], size_t(kv_rows) * kvd), grow(gv_[i], size_t(kv_rows) * kvd);
  T_max_ = std::max(T_max_, T);
}

size_t Engine::scratch_bytes() const {
  size_t n = 0;
  for (const auto* b : {&x_, &ln_, &rstd_, &q_, &k_, &v_, &att_, &lse_, &mid_, &gate_, &up_, &h_, &logits_})
    n += b->size();
  for (size_t i = 0; i < gk_.size(); i++) n += gk_[i].size() + gv_[i].size();
  return n * sizeof(float) + (tokens_.size() + pos_.size()) * sizeof(int32_t) +
         rings_.size() * sizeof(KvRing);
}

void Engine::forward(const Segment* segs, int n_segs, float* logits) {
  run(segs, n_segs, logits);
  if (m_.backend->device) logits_.download(logits, size_t(n_segs) * m_.config.vocab_size);
}

const float* Engine::forward_device(const Segment* segs, int n_segs) {
  LCX_CHECK(m_.backend->device, "engine: forward_device needs a device backend, not '{}'", m_.backend->name);
  run(segs, n_segs, nullptr);
  return logits_.data();
}

void Engine::run(const Segment* segs, int n_segs, float* logits) {
  const Config& c = m_.config;
  const Backend& be = *m_.backend;
  const ParamLayout& P = m_.layout;
  const float* w = m_.params.data();
  const int d = c.hidden_size, hd = c.head_dim(), V = c.vocab_size;
  const int H = c.num_attention_heads, Hkv = c.num_key_value_heads, qd = H * hd, kvd = Hkv * hd;
  LCX_CHECK(n_segs >= 1, "engine: forward needs at least one segment");
  // Validate everything before touching a cache. The leading one-token segments (a scheduler's
  // running sequences, before a prefill chunk) attend in one batched decode call per layer.
  const int n_dec = int(std::find_if(segs, segs + n_segs, [](const Segment& s) { return s.n != 1; }) - segs);
  const bool decode = n_dec == n_segs;
  int T = 0, kv_rows = 0;
  std::vector<int> off(n_segs);
  for (int i = 0; i < n_segs; i++) {
    const Segment& s = segs[i];
    LCX_CHECK(s.cache && s.n >= 1, "engine: segment {} is empty", i);
    LCX_CHECK(s.cache->be == &be, "engine: segment {}'s cache is on another backend", i);
    for (int j = 0; j < i; j++) LCX_CHECK(segs[j].cache != s.cache, "engine: segments {} and {} share a cache", j, i);
    for (int j = 0; j < s.n; j++)
      LCX_CHECK(s.tokens[j] >= 0 && s.tokens[j] < V, "token id {} is outside the vocabulary [0, {})", s.tokens[j], V);
    kv_cache_reserve(*s.cache, s.n);
    off[i] = T;
    T += s.n;
    if (i >= n_dec && s.cache->n_past + s.n > s.cache->capacity) kv_rows = std::max(kv_rows, s.cache->n_old() + s.n);
  }
  reserve(T, n_segs, kv_rows);
  for (int i = 0; i < n_segs; i++)
    for (int j = 0; j < segs[i].n; j++) {
      host_tokens_[off[i] + j] = segs[i].tokens[j];
      host_pos_[off[i] + j] = int32_t(segs[i].cache->n_past + j);  // absolute position (RoPE)
    }
  tokens_.upload(host_tokens_.data(), size_t(T));
  pos_.upload(host_pos_.data(), size_t(T));
  // The decode segments' rings, (layer, segment), go to the backend once for all layers.
  const int L = c.num_hidden_layers;
  if (n_dec > 0) {
    host_rings_.resize(size_t(L) * n_dec);
    for (int l = 0; l < L; l++)
      for (int i = 0; i < n_dec; i++) {
        KvCache& kc = *segs[i].cache;
        host_rings_[size_t(l) * n_dec + i] = {kc.k[l].data(), kc.v[l].data(), kc.capacity, int32_t(kc.n_past)};
      }
    fit(rings_, be, host_rings_.size());
    rings_.upload(host_rings_.data(), host_rings_.size());
  }

  const AttnShape shape = model_attn_shape(m_);
  const size_t kv_bytes = sizeof(float) * size_t(kvd);
  // Queries of segment i against [its cache's last w−1 entries + its own keys]. Before the ring
  // first wraps (always, for a softmax-full cache) those rows are contiguous in the cache: store
  // the segment's keys first and attend in place; otherwise gather them into a scratch copy.
  auto in_place = [&](const Segment& sg) { return sg.cache->n_past + sg.n <= sg.cache->capacity; };
  auto attend = [&](int l, int i, int tid) {
    const Segment& sg = segs[i];
    KvCache& kc = *sg.cache;
    const int no = kc.n_old(), t0 = off[i];
    const float *K, *Vv;
    if (in_place(sg)) {
      kv_cache_store(kc, l, k_.data() + size_t(t0) * kvd, v_.data() + size_t(t0) * kvd, sg.n);
      K = kc.k[l].data() + size_t(kc.n_past - no) * kvd;
      Vv = kc.v[l].data() + size_t(kc.n_past - no) * kvd;
    } else {
      float *gk = gk_[tid].data(), *gv = gv_[tid].data();
      kv_cache_gather(kc, l, gk, gv);
      be.copy(gk + size_t(no) * kvd, k_.data() + size_t(t0) * kvd, sg.n * kv_bytes, Copy::within);
      be.copy(gv + size_t(no) * kvd, v_.data() + size_t(t0) * kvd, sg.n * kv_bytes, Copy::within);
      K = gk, Vv = gv;
    }
    AttnShape s = shape;
    s.T = sg.n, s.Tk = no + sg.n;
    float* out = att_.data() + size_t(t0) * qd;
    const float* q = q_.data() + size_t(t0) * qd;
    if (c.attention == AttnKind::swat)
      be.swat_forward(out, q, K, Vv, s);
    else
      be.softmax_attn_forward(out, lse_.data() + size_t(t0) * H, q, K, Vv, s);
  };

  float* x = x_.data();
  be.embedding_forward(x, tokens_.data(), w + P.wte, T, d);
  for (int l = 0; l < L; l++) {
    // x = x + Attn(RMSNorm(x));  x = x + SwiGLU(RMSNorm(x)), as model_forward
    layer_qkv_forward(m_, l, q_.data(), k_.data(), v_.data(), ln_.data(), rstd_.data(), x,
                      pos_.data(), T);
    if (n_dec > 0)  // rows 0..n_dec−1; also stores their new keys/values in the rings
      be.decode_attn_forward(att_.data(), q_.data(), k_.data(), v_.data(),
                             rings_.data() + size_t(l) * n_dec, n_dec, shape,
                             c.attention == AttnKind::softmax);
    if (!decode) {
      if (n_segs - n_dec == 1 || be.device) {
        for (int i = n_dec; i < n_segs; i++) attend(l, i, 0);  // the kernel parallelises inside
      } else {
#pragma omp parallel for schedule(dynamic)
        for (int i = n_dec; i < n_segs; i++) attend(l, i, omp_get_thread_num());
      }
      for (int i = n_dec; i < n_segs; i++)
        if (!in_place(segs[i]))
          kv_cache_store(*segs[i].cache, l, k_.data() + size_t(off[i]) * kvd,
                         v_.data() + size_t(off[i]) * kvd, segs[i].n);
    }
    layer_out_mlp_forward(m_, l, x, mid_.data(), ln_.data(), rstd_.data(), gate_.data(),
                          up_.data(), h_.data(), att_.data(), x, T);
  }
  for (int i = 0; i < n_segs; i++) segs[i].cache->n_past += segs[i].n;
  // Only the last row of each segment reaches the head, as row i of x: the decode rows are there
  // already; a longer segment's last row moves up (off[i] ≥ i, and every later segment's rows lie
  // below row i, so no row is overwritten before it is read). A device keeps the logits in
  // logits_.
  for (int i = n_dec; i < n_segs; i++)
    if (const int last = off[i] + segs[i].n - 1; last != i)
      be.copy(x + size_t(i) * d, x + size_t(last) * d, sizeof(float) * d, Copy::within);
  float* out = be.device ? logits_.data() : logits;
  be.rmsnorm_forward(ln_.data(), rstd_.data(), x, w + P.lnf, n_segs, d, c.rms_norm_eps);
  be.matmul_forward(out, ln_.data(), w + P.lm_head, n_segs, d, V);
}

void Engine::prefill(KvCache& c, const int32_t* tokens, int n, float* logits) {
  LCX_CHECK(n >= 1, "engine: empty prompt (it needs at least a BOS token)");
  LCX_CHECK(n <= c.room(), "prompt of {} tokens exceeds the context limit of {} tokens", c.n_past + n,
            c.n_past + c.room());
  for (int i = 0; i < n; i += opt_.chunk) {
    Segment s{&c, tokens + i, std::min(opt_.chunk, n - i)};
    forward(&s, 1, logits);
  }
}

// ---------------------------------------------------------------- scheduler

const char* to_string(Finish f) {
  switch (f) {
    case Finish::none: return "none";
    case Finish::stop: return "stop";
    case Finish::length: return "length";
    case Finish::cancelled: return "cancelled";
    case Finish::error: return "error";
  }
  return "?";
}

Scheduler::Scheduler(Engine& e, int max_batch) : e_(e), max_batch_(max_batch) {
  LCX_CHECK(max_batch >= 1, "max_batch must be ≥ 1, got {}", max_batch);
}

Scheduler::~Scheduler() {
  stop();
  auto finish_all = [](GenRequest& r) { if (r.on_finish) for (int i = 0; i < r.n; i++) r.on_finish(i, Finish::cancelled); };
  for (auto& r : queue_) finish_all(*r);
  if (prefill_) finish_all(*prefill_->req);
  for (auto& s : running_) if (s->req->on_finish) s->req->on_finish(s->index, Finish::cancelled);
}

void Scheduler::submit(std::shared_ptr<GenRequest> r) {
  LCX_CHECK(!r->prompt.empty(), "the prompt is empty");
  LCX_CHECK(r->n >= 1, "n must be ≥ 1, got {}", r->n);
  LCX_CHECK(r->max_tokens >= 1, "max_tokens must be ≥ 1, got {}", r->max_tokens);
  const int64_t limit = e_.max_sequence();
  LCX_CHECK(int64_t(r->prompt.size()) + r->max_tokens <= limit,
            "prompt ({} tokens) + max_tokens ({}) exceeds the model's context of {} tokens",
            r->prompt.size(), r->max_tokens, limit);
  const SamplerParams& p = r->sampling;
  LCX_CHECK(p.temperature >= 0.0f && std::isfinite(p.temperature), "temperature must be ≥ 0, got {}", p.temperature);
  LCX_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "top_p must be in (0, 1], got {}", p.top_p);
  LCX_CHECK(p.top_k >= 0, "top_k must be ≥ 0, got {}", p.top_k);
  for (int32_t t : r->prompt)
    LCX_CHECK(t >= 0 && t < e_.config().vocab_size, "token id {} is outside the vocabulary", t);
  {
    std::lock_guard<std::mutex> lk(mu_);
    queue_.push_back(std::move(r));
    stats_.requests++;
    stats_.waiting = int(queue_.size());
  }
  cv_.notify_one();
}

void Scheduler::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Scheduler::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stopping_ || !queue_.empty() || !running_.empty() || prefill_; });
      if (stopping_) return;
    }
    try {
      step();
    } catch (const std::exception&) {  // never leave a client waiting
      for (auto& s : running_) if (s->req->on_finish) s->req->on_finish(s->index, Finish::error);
      running_.clear();
      if (prefill_ && prefill_->req->on_finish)
        for (int i = 0; i < prefill_->req->n; i++) prefill_->req->on_finish(i, Finish::error);
      prefill_.reset();
    }
  }
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

bool Scheduler::emit(Seq& s, int32_t token) {
  GenRequest& r = *s.req;
  Finish why = Finish::none;
  if (token == r.eos) {
    why = Finish::stop;
  } else {
    s.produced++;
    {
      std::lock_guard<std::mutex> lk(mu_);
      stats_.generated_tokens++;
    }
    if (r.on_token && !r.on_token(s.index, token))
      why = r.cancelled ? Finish::cancelled : Finish::stop;
    else if (s.produced >= r.max_tokens)
      why = Finish::length;
  }
  if (why == Finish::none) {
    s.next = token;
    return true;
  }
  if (r.on_finish) r.on_finish(s.index, why);
  return false;
}

KvCache Scheduler::take_cache() {
  counters_.caches_used++;
  if (free_caches_.empty()) {
    counters_.caches_allocated++;
    return e_.new_cache();
  }
  KvCache c = std::move(free_caches_.back());
  free_caches_.pop_back();
  return c;
}

void Scheduler::recycle(KvCache&& c) {
  c.n_past = 0;
  free_caches_.push_back(std::move(c));
}

bool Scheduler::step() {
  const auto t_step = std::chrono::steady_clock::now();
  const int V = e_.config().vocab_size;
  // Admit the oldest waiting request when its samples fit in the batch (or nothing runs).
  std::shared_ptr<GenRequest> admit;
  if (!prefill_) {
    std::lock_guard<std::mutex> lk(mu_);
    if (!queue_.empty() && (running_.empty() || int(running_.size()) + queue_.front()->n <= max_batch_)) {
      admit = queue_.front();
      queue_.pop_front();
      stats_.waiting = int(queue_.size());
      stats_.running = int(running_.size()) + admit->n;
    }
  }
  if (admit) {
    const auto t0 = std::chrono::steady_clock::now();
    prefill_ = std::make_unique<Prefill>(Prefill{std::move(admit), take_cache(), 0});
    counters_.cache_s += seconds_since(t0);
  }
  // Cancelled requests leave now (a client that disconnected frees its slots).
  for (size_t i = 0; i < running_.size();) {
    if (running_[i]->req->cancelled) {
      if (running_[i]->req->on_finish) running_[i]->req->on_finish(running_[i]->index, Finish::cancelled);
      recycle(std::move(running_[i]->cache));
      running_.erase(running_.begin() + long(i));
    } else {
      i++;
    }
  }
  if (prefill_ && prefill_->req->cancelled) {
    GenRequest& r = *prefill_->req;
    if (r.on_finish) for (int i = 0; i < r.n; i++) r.on_finish(i, Finish::cancelled);
    recycle(std::move(prefill_->cache));
    prefill_.reset();
  }
  if (running_.empty() && !prefill_) {
    std::lock_guard<std::mutex> lk(mu_);
    stats_.running = 0;
    if (queue_.empty()) free_caches_.clear();  // idle: give the recycled caches' memory back
    return !queue_.empty();
  }

  std::vector<Segment> segs;
  for (auto& s : running_) segs.push_back({&s->cache, &s->next, 1});
  int chunk = 0;
  if (prefill_) {
    const auto& prompt = prefill_->req->prompt;
    chunk = int(std::min<int64_t>(e_.options().chunk, int64_t(prompt.size()) - prefill_->done));
    segs.push_back({&prefill_->cache, prompt.data() + prefill_->done, chunk});
  }
  const int n_dec = int(running_.size());
  counters_.steps++;
  counters_.mixed_steps += chunk > 0;
  counters_.decode_rows += n_dec;
  counters_.prefill_rows += chunk;
  counters_.max_decode_rows = std::max(counters_.max_decode_rows, n_dec);
  counters_.full_steps += n_dec >= max_batch_;
  const Backend& be = e_.backend();
  if (logits_floats_ < segs.size() * size_t(V)) {
    logits_floats_ = 2 * segs.size() * size_t(V);  // room for the batch to grow
    logits_ = {be.pinned_alloc(logits_floats_ * sizeof(float)), be.pinned_release};
  }
  float* logits = static_cast<float*>(logits_.get());
  const bool prefill_ends = prefill_ && prefill_->done + chunk == int64_t(prefill_->req->prompt.size());
  // A device backend draws the decode rows' tokens itself when no sequence cuts (top-k/top-p):
  // Backend::sample_rows with u from each sequence's own stream, as Sampler::sample would draw.
  // The finished prefill's row still comes back: its samples' first tokens are drawn here.
  const bool on_device = be.device && n_dec > 0 &&
                         std::all_of(running_.begin(), running_.end(), [](const auto& s) { return s->sampler.plain(); });
  std::vector<int32_t> drawn(running_.size());
  auto t0 = std::chrono::steady_clock::now();
  if (on_device) {
    const float* dev_logits = e_.forward_device(segs.data(), int(segs.size()));
    const size_t last = (segs.size() - 1) * size_t(V);
    if (prefill_ends) be.copy(logits + last, dev_logits + last, sizeof(float) * V, Copy::to_host);
    be.sync();  // forward_s holds the device's work, as with the logits download
    counters_.forward_s += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    host_draw_.resize(2 * size_t(n_dec));  // u of every row, then its temperature
    for (int i = 0; i < n_dec; i++) {
      host_draw_[size_t(i)] = running_[size_t(i)]->sampler.next_u();
      host_draw_[size_t(n_dec + i)] = running_[size_t(i)]->sampler.params.temperature;
    }
    fit(draw_, be, host_draw_.size());
    draw_.upload(host_draw_.data(), host_draw_.size());
    be.sample_rows(fit(drawn_, be, size_t(n_dec)), dev_logits, draw_.data(), draw_.data() + n_dec, n_dec, V);
    drawn_.download(drawn.data(), size_t(n_dec));
    counters_.device_rows += n_dec;
  } else {
    e_.forward(segs.data(), int(segs.size()), logits);
    counters_.forward_s += seconds_since(t0);
    // Each sequence draws with its own sampler (in parallel: O(V) host work per sequence).
    t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < running_.size(); i++) drawn[i] = running_[i]->sampler.sample(logits + i * V, V);
  }
  counters_.sample_s += seconds_since(t0);
  // The tokens are emitted in order.
  t0 = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Seq>> keep;
  for (size_t i = 0; i < running_.size(); i++)
    if (emit(*running_[i], drawn[i])) keep.push_back(std::move(running_[i]));
    else recycle(std::move(running_[i]->cache));
  running_ = std::move(keep);
  counters_.emit_s += seconds_since(t0);
  if (prefill_) {
    prefill_->done += chunk;
    GenRequest& r = *prefill_->req;
    if (prefill_ends) {
      const float* lg = logits + (segs.size() - 1) * V;
      for (int i = 0; i < r.n; i++) {  // n samples share the prefill: copy its cache
        t0 = std::chrono::steady_clock::now();
        KvCache cache;
        if (i + 1 < r.n) {
          cache = take_cache();
          kv_cache_assign(cache, prefill_->cache);
        } else {
          cache = std::move(prefill_->cache);
        }
        counters_.cache_s += seconds_since(t0);
        SamplerParams sp = r.sampling;
        sp.seed += uint64_t(i);
        auto s = std::make_unique<Seq>(Seq{prefill_->req, i, std::move(cache), Sampler(sp), 0, 0});
        t0 = std::chrono::steady_clock::now();
        const int32_t first = s->sampler.sample(lg, V);
        counters_.sample_s += seconds_since(t0);
        t0 = std::chrono::steady_clock::now();
        if (emit(*s, first)) running_.push_back(std::move(s));
        else recycle(std::move(s->cache));
        counters_.emit_s += seconds_since(t0);
      }
      std::lock_guard<std::mutex> lk(mu_);
      stats_.prompt_tokens += int64_t(r.prompt.size());
      prefill_.reset();
    }
  }
  counters_.step_s += seconds_since(t_step);
  std::lock_guard<std::mutex> lk(mu_);
  stats_.steps++;
  stats_.running = int(running_.size()) + (prefill_ ? prefill_->req->n : 0);
  return true;
}

}  // namespace longctx
