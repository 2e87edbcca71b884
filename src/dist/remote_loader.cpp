// The remote dataloader (see remote_loader.h).
#include "dist/remote_loader.h"

#include <cstring>

#include "core/error.h"

namespace longctx {
namespace {

constexpr size_t kHeaderFloats = 4;

std::vector<float> pack_header(int64_t json_bytes, int64_t tokens) {
  std::vector<float> h(kHeaderFloats);
  const int64_t v[2] = {json_bytes, tokens};
  std::memcpy(h.data(), v, sizeof(v));
  return h;
}

size_t json_floats(int64_t bytes) { return size_t(bytes + 3) / 4; }

}  // namespace

RemoteStepSource::RemoteStepSource(Comm& comm, const std::string& shard_path, uint64_t seed,
                                   int64_t max_len, HdpPlanner planner, RingRule rule,
                                   int64_t budget, int64_t steps)
    : comm_(comm), planner_(std::move(planner)), rule_(rule), budget_(budget), steps_(steps) {
  if (comm.rank() == 0) stream_ = std::make_unique<DocStream>(shard_path, seed, max_len);
}

RemoteStepSource::~RemoteStepSource() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Sends still in flight finish here (their receivers have posted or will post them).
  try {
    for (Package& p : inflight_) comm_.wait_all(p.sends);
  } catch (const Error&) {  // a destructor must not throw; the job is ending anyway
  }
}

void RemoteStepSource::restore(const nlohmann::json& cursor) {
  LCX_CHECK(served_ == 0 && !thread_.joinable(), "remote loader: restore after the first step");
  if (stream_) stream_->restore(cursor);
}

RemoteStepSource::Package RemoteStepSource::prepare() {
  Package p;
  try {
    const std::vector<SeqRef> seqs = stream_->next(budget_);
    Plan plan = planner_(seq_lengths(seqs));
    const std::string js = plan_to_json(plan, true).dump();
    const int P = comm_.size();
    p.header.resize(size_t(P));
    p.data.resize(size_t(P));
    for (int r = 1; r < P; r++) {
      HdpStepData d = hdp_step_data(plan, seqs, stream_->shard(), r, rule_);
      size_t ntok = 0;
      for (const auto& t : d.tokens) ntok += t.size();
      std::vector<float>& buf = p.data[size_t(r)];
      buf.assign(json_floats(int64_t(js.size())) + ntok, 0.0f);
      std::memcpy(buf.data(), js.data(), js.size());
      float* at = buf.data() + json_floats(int64_t(js.size()));
      for (const auto& t : d.tokens) {
        std::memcpy(at, t.data(), t.size() * sizeof(int32_t));
        at += t.size();
      }
      p.header[size_t(r)] = pack_header(int64_t(js.size()), int64_t(ntok));
    }
    p.own = hdp_step_data(std::move(plan), seqs, stream_->shard(), 0, rule_);
    p.own.cursor = stream_->state();
  } catch (...) {
    p.error = std::current_exception();
  }
  return p;
}

// Keeps up to two prepared steps ahead of training, and never more than will run.
void RemoteStepSource::loader_loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || (ready_.size() < 2 && produced_ < steps_); });
      if (stop_) return;
    }
    Package p = prepare();
    std::lock_guard<std::mutex> lk(mu_);
    ready_.push_back(std::move(p));
    produced_++;
    cv_.notify_all();
  }
}

void RemoteStepSource::send(Package& p) {
  if (p.error) {  // the other ranks wait for this step: end the job with the reason
    try {
      std::rethrow_exception(p.error);
    } catch (const std::exception& e) {
      comm_.abort(fmt::format("remote loader: {}", e.what()));
    }
  }
  for (int r = 1; r < comm_.size(); r++) {
    p.sends.push_back(comm_.isend(p.header[size_t(r)].data(), kHeaderFloats, r, kTagHeader));
    p.sends.push_back(comm_.isend(p.data[size_t(r)].data(), p.data[size_t(r)].size(), r, kTagData));
  }
}

HdpStepData RemoteStepSource::receive() {
  if (served_ == 0) {
    header_.assign(kHeaderFloats, 0.0f);
    header_req_ = comm_.irecv(header_.data(), kHeaderFloats, 0, kTagHeader);
  }
  comm_.wait(header_req_);
  int64_t v[2];
  std::memcpy(v, header_.data(), sizeof(v));
  const int64_t json_bytes = v[0], ntok = v[1];
  std::vector<float> buf(json_floats(json_bytes) + size_t(ntok));
  CommRequest r = comm_.irecv(buf.data(), buf.size(), 0, kTagData);
  comm_.wait(r);
  if (served_ + 1 < steps_)  // the next step's header may arrive while this step runs
    header_req_ = comm_.irecv(header_.data(), kHeaderFloats, 0, kTagHeader);

  HdpStepData d;
  const std::string js(reinterpret_cast<const char*>(buf.data()), size_t(json_bytes));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(js);
  } catch (const nlohmann::json::exception& e) {
    fail("remote loader: rank {} received a malformed plan: {}", comm_.rank(), e.what());
  }
  d.plan = plan_from_json(j, "remote loader plan");
  LCX_CHECK(d.plan.ranks.size() == size_t(comm_.size()), "remote loader: plan for {} ranks, job has {}",
            d.plan.ranks.size(), comm_.size());
  for (const SeqPlan& s : d.plan.seqs) d.n_targets += s.length - 1;
  const int32_t* tok = reinterpret_cast<const int32_t*>(buf.data() + json_floats(json_bytes));
  int64_t at = 0;
  for (const MicroBatch& mb : d.plan.ranks[size_t(comm_.rank())].micro_batches)
    for (const Slice& sl : mb.slices) {
      const int64_t len = d.plan.seqs[size_t(sl.seq)].length;
      LCX_CHECK(sl.end <= len && sl.begin >= 0, "remote loader: slice [{}, {}) outside sequence {} of {}",
                sl.begin, sl.end, sl.seq, len);
      const int64_t n = rows_fetch_count(slice_rows(d.plan, sl, comm_.rank(), rule_), len);
      LCX_CHECK(at + n <= ntok, "remote loader: rank {} received {} tokens, its slices need more",
                comm_.rank(), ntok);
      d.tokens.emplace_back(tok + at, tok + at + n);
      at += n;
    }
  LCX_CHECK(at == ntok, "remote loader: rank {} received {} tokens, its slices need {}", comm_.rank(), ntok, at);
  return d;
}

HdpStepData RemoteStepSource::next() {
  LCX_CHECK(served_ < steps_, "remote loader: step {} requested, {} were planned", served_ + 1, steps_);
  if (comm_.rank() != 0) {
    HdpStepData d = receive();
    served_++;
    return d;
  }
  if (!thread_.joinable()) thread_ = std::thread([this] { loader_loop(); });
  auto pop = [&] {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return !ready_.empty(); });
    Package p = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    return p;
  };
  // Step 0's messages go now; afterwards each step's were posted during the step before.
  if (served_ == 0) {
    inflight_.push_back(pop());
    send(inflight_.back());
  }
  HdpStepData own = std::move(inflight_.back().own);
  if (served_ + 1 < steps_) {  // prefetch: post the next step's messages before this step runs
    inflight_.push_back(pop());
    send(inflight_.back());
  }
  while (inflight_.size() > 2) {  // sends of two steps ago are long received
    comm_.wait_all(inflight_.front().sends);
    inflight_.pop_front();
  }
  served_++;
  return own;
}

}  // namespace longctx
