// Context parallelism over time (src/dist/chunked_seq.h): a packed stream trained in chunks, the
// halo K/V and dK/dV carried between them by SequentialComm, gives the loss and the gradients of
// the whole stream in one piece (fp32: the same sums in another order), for SWAT and softmax
// sliding-window models with GQA, chunk boundaries inside documents and on them, and a chunk
// shorter than the halo's reach through several layers; on cuda as well when a GPU is present.
// Misuse (window ≥ chunk, messages out of order) is a clear error.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/rng.h"
#include "data/shard.h"
#include "data/loader.h"
#include "dist/chunked_seq.h"
#include "model/model.h"
#include "test_util.h"
#include "train/trainer.h"

using namespace longctx;
using namespace longctx::testing;

namespace {

Config small_config(AttnKind kind) {
  Config c;
  c.hidden_size = 32, c.num_hidden_layers = 3, c.num_attention_heads = 4;
  c.num_key_value_heads = 2, c.intermediate_size = 48, c.vocab_size = 97, c.window = 7;
  c.attention = kind;
  return c;
}

struct Result {
  double loss = 0;
  int64_t targets = 0;
  std::vector<float> grads;
};

// chunk 0: the whole stream in one model_forward/model_backward.
Result run(const Backend& be, const Config& c, const Batch& batch, int chunk,
           bool halo_on_host = false) {
  Model m(c, be);
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 5);
  m.params.upload(init.data(), init.size());
  const TokenBatch b = batch_view(batch);
  const float dloss = 1.0f / float(batch.n_targets());
  Result r;
  if (chunk == 0) {
    m.reserve(b.T);
    r.loss = model_forward(m, b, &r.targets, dloss);
    model_backward(m, b);
  } else {
    ChunkedStats st;
    r.loss = chunked_forward_backward(m, b, {chunk, halo_on_host}, dloss, &r.targets, &st);
    EXPECT_EQ(st.chunks, (b.T + chunk - 1) / chunk);
    if (st.chunks > 1 && batch.cu_seqlens[1] % chunk) {  // a cut inside a document: halo rows
      EXPECT_GT(st.peak_halo_bytes, 0u);
    }
  }
  r.grads = m.grads.to_host();
  return r;
}

void expect_same(const Result& want, const Result& got, double tol, const std::string& what) {
  EXPECT_EQ(want.targets, got.targets) << what;
  EXPECT_NEAR(want.loss, got.loss, tol * std::fabs(want.loss)) << what;
  EXPECT_LT(max_rel_err(got.grads.data(), want.grads.data(), int(want.grads.size())), tol) << what;
}

}  // namespace

TEST(ChunkedSeq, EqualsWholeStreamOnCpu) {
  // Two documents of 61 tokens: chunks of 13 cut inside them, chunk 61 on their boundary.
  const Batch batch = random_batch(2, 61, 97, 4);
  for (AttnKind kind : {AttnKind::swat, AttnKind::softmax}) {
    const Config c = small_config(kind);
    const Result whole = run(backend_cpu(), c, batch, 0);
    for (int chunk : {8, 13, 61, 200}) {  // 8: a chunk barely longer than w−1 = 6
      expect_same(whole, run(backend_cpu(), c, batch, chunk), 2e-5,
                   std::string(to_string(kind)) + " chunk " + std::to_string(chunk));
    }
    expect_same(whole, run(backend_cpu(), c, batch, 13, true), 2e-5,
                std::string(to_string(kind)) + " chunk 13, halo on the host");
  }
}

TEST(ChunkedSeq, WithoutTheHaloTheLossDiffers) {
  // The comparison above can tell a carried halo from none: chunks trained alone (keys before
  // the chunk invisible) give other gradients.
  const Batch batch = random_batch(1, 64, 97, 6);
  const Config c = small_config(AttnKind::swat);
  const Result whole = run(backend_cpu(), c, batch, 0);
  Model m(c, backend_cpu());
  std::vector<float> init(m.layout.total);
  param_init(init.data(), m.layout, c, 5);
  m.params.upload(init.data(), init.size());
  m.reserve(16);
  const TokenBatch b = batch_view(batch);
  for (int c0 = 0; c0 < b.T; c0 += 16) {  // independent chunks: keys before c0 are invisible
    const int32_t cu[2] = {0, 16};
    const TokenBatch tb{b.tokens + c0, b.targets + c0, b.pos + c0, cu, 16, 1};
    model_forward(m, tb, nullptr, 1.0f / float(batch.n_targets()));
    model_backward(m, tb);
  }
  const std::vector<float> alone = m.grads.to_host();
  EXPECT_GT(max_rel_err(alone.data(), whole.grads.data(), int(alone.size())), 1e-3);
}

TEST(ChunkedSeq, CudaEqualsCpu) {
  SKIP_WITHOUT_GPU();
  const Batch batch = random_batch(2, 300, 97, 8);
  for (AttnKind kind : {AttnKind::swat, AttnKind::softmax}) {
    Config c = small_config(kind);
    c.hidden_size = 128, c.num_attention_heads = 2, c.num_key_value_heads = 1;  // head dim 64
    c.window = 33;
    const Result cpu = run(backend_cpu(), c, batch, 0);
    // bf16 GEMMs and attention on the GPU: the tolerance of test_cuda_ops' model gradients
    expect_same(cpu, run(backend_cuda(), c, batch, 128), 3e-2, std::string(to_string(kind)) + " cuda");
    expect_same(cpu, run(backend_cuda(), c, batch, 128, true), 3e-2,
                std::string(to_string(kind)) + " cuda, halo on the host");
  }
}

TEST(ChunkedSeq, HaloStoreIsReusedAcrossSteps) {
  // A ChunkedStep allocates its halo messages in its first step and reuses them afterwards.
  const Batch batch = random_batch(1, 64, 97, 6);
  Model m(small_config(AttnKind::swat), backend_cpu());
  const TokenBatch b = batch_view(batch);
  HaloPool pool;
  ChunkedStats st;
  const double l1 = chunked_forward_backward(m, b, {16}, 1.0f, nullptr, &st, &pool);
  const size_t spare = pool.size();
  EXPECT_GT(spare, 0u);
  std::vector<const void*> first;
  for (const HaloMessage& h : pool) first.push_back(h.dev.data());
  const double l2 = chunked_forward_backward(m, b, {16}, 1.0f, nullptr, &st, &pool);
  EXPECT_EQ(l1, l2);
  ASSERT_EQ(pool.size(), spare);  // nothing new allocated: the same buffers came back
  for (const HaloMessage& h : pool)
    EXPECT_NE(std::find(first.begin(), first.end(), h.dev.data()), first.end());
}

TEST(ChunkedSeq, Errors) {
  const Batch batch = random_batch(1, 40, 97, 2);
  Model m(small_config(AttnKind::swat), backend_cpu());
  const TokenBatch b = batch_view(batch);
  expect_error([&] { chunked_forward_backward(m, b, {7}, 1.0f, nullptr); }, {"window 7 must be shorter"});
  expect_error([&] { chunked_forward_backward(m, b, {0}, 1.0f, nullptr); }, {"--chunk must be"});
  SequentialComm comm(backend_cpu(), 3);
  std::vector<float> buf(4);
  comm.set_rank(2);
  CommRequest r = comm.irecv(buf.data(), buf.size(), 1, 0);
  expect_error([&] { comm.wait(r); }, {"has not sent"});
  comm.set_rank(1);
  comm.isend(buf.data(), 3, 2, 0);
  comm.set_rank(2);
  r = comm.irecv(buf.data(), buf.size(), 1, 0);
  expect_error([&] { comm.wait(r); }, {"expects 4 floats"});
  comm.finish(2);
  expect_error([&] { comm.set_rank(2); }, {"already finished"});
  expect_error([&] { comm.allreduce_sum(buf.data(), 4); }, {"no all-reduce"});
}

TEST(ChunkedSeq, TrainerWithChunksFollowsTheWholeRun) {
  // `train --chunk`: the trainer's micro-batches through chunked_forward_backward give the loss
  // curve of the plain run (fp32 rounding apart), with activations reserved for one chunk.
  TempDir tmp("chunked_train");
  const std::filesystem::path& dir = tmp.path;
  Rng rng(3);
  std::vector<std::vector<int32_t>> docs(40);
  for (auto& d : docs)
    for (int i = 0, n = 30 + int(rng.below(90)); i < n; i++) d.push_back(int32_t(rng.below(60)));
  shard_write((dir / "train.bin").string(), 64, docs);
  shard_write((dir / "val.bin").string(), 64, docs);
  TrainOptions o;
  o.data_dir = dir.string();
  o.config = small_config(AttnKind::swat);
  o.batch = 2, o.seq = 96, o.steps = 4, o.warmup = 1, o.eval_every = 0, o.save_every = 0;
  o.quiet = true;
  o.out_dir = (dir / "whole").string();
  const TrainResult whole = train(o);
  o.out_dir = (dir / "chunked").string();
  o.chunk = 40;  // 192 tokens per micro-batch: 5 chunks, cuts inside documents
  o.forward_backward = [step = std::make_shared<ChunkedStep>(ChunkedOptions{40, true})](
                           Model& m, const TokenBatch& b, float dloss) { return (*step)(m, b, dloss); };
  const TrainResult chunked = train(o);
  ASSERT_EQ(whole.losses.size(), chunked.losses.size());
  for (size_t i = 0; i < whole.losses.size(); i++)
    EXPECT_NEAR(whole.losses[i], chunked.losses[i], 1e-4 * whole.losses[i]) << "step " << i + 1;
  o.forward_backward = nullptr;
  expect_error([&] { train(o); }, {"chunked training needs its forward_backward"});
}
