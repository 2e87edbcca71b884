// `reps sample` (DESIGN.md §4 step 1): N reasoning paths per question from a local checkpoint
// (the batched engine: one prefill shared by the N samples) or an OpenAI-compatible endpoint
// (POST /v1/completions, concurrent workers, retries with backoff), written as sample records
// (qa_data.h: {"id", "path", "text", "temperature", "seed"}, one JSON object per line).
//
// Resumable: records are appended one whole line at a time (one write(2) each, fsync every
// `fsync_every` records and at the end). On start the existing output is read and verified; a
// truncated last line (a crash mid-write) is cut off with a message, and every (id, path) already
// there is skipped, so an interrupted run continues where it stopped with no duplicate and no
// loss. Path i of a question draws with seed + i; the missing paths of a question are requested
// as contiguous runs [first, first + n) with seed + first, so a resumed path gets the same seed.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "reps/qa_data.h"

namespace longctx {

struct SampleOptions {
  int n = 30;                // paths per question
  double temperature = 0.7;
  int max_tokens = 512;      // new tokens per path
  uint64_t seed = 1;         // path i draws with seed + i
  int max_quotes = 10;       // in the prompt (reps_sample_prompt)
  int fsync_every = 64;      // records between fsyncs
  bool quiet = false;        // no progress bar, no messages
  bool chat = false;         // wrap the prompt in longctx serve's chat template (reps_chat_prompt)
  bool completion = false;   // instead, the plain reading prompt (reps_completion_prompt)
};

// Appends records to a JSONL file: one write(2) per record (the whole line), fsync every
// `every` records and on destruction. newline_first ends a last line left without its '\n'.
class SampleAppender {
 public:
  SampleAppender(const std::string& path, int every, bool newline_first);
  ~SampleAppender();
  SampleAppender(const SampleAppender&) = delete;
  SampleAppender& operator=(const SampleAppender&) = delete;
  void append(const SampleRecord& s);
  void sync();

 private:
  void write_all(const std::string& s);
  std::string path_;
  int every_, fd_ = -1, since_sync_ = 0;
};

// The (id, path) pairs already in an output file, after verifying it: every complete line must
// be a sample record of a known question id, sampled at this run's temperature and seed (path i
// has seed + i), with no (id, path) twice; anything else is an Error naming "file:line". A last
// line without its newline that does not parse is cut off (the file is truncated to the end of
// the line before) and reported in `dropped`. A missing file is an empty index.
struct SampleIndex {
  std::set<std::pair<std::string, int>> done;
  int64_t dropped_bytes = 0;     // > 0: a truncated last line was removed
  bool needs_newline = false;    // last record complete but missing its '\n'
};
SampleIndex sample_index_load(const std::string& path, const std::set<std::string>& ids, const SampleOptions& opt);

// One request for a backend: paths [first, first + n) of one question, the i-th drawing with
// seed + first + i.
struct SampleJob {
  const QaExample* ex = nullptr;
  std::string prompt;
  int first = 0, n = 0;
};

// What a backend reports, from any thread (sample_run serialises the calls).
struct SampleSink {
  std::function<void(const SampleJob&, int path, const std::string& text)> sample;
  std::function<void(const SampleJob&, const std::string& why)> skip;  // prompt too long
};

class SampleBackend {
 public:
  virtual ~SampleBackend() = default;
  // Runs every job; returns when all are done. Throws Error on a failure it cannot retry.
  virtual void run(const std::vector<SampleJob>& jobs, const SampleOptions& opt, const SampleSink& sink) = 0;
};

// Local: the checkpoint's model through one Scheduler. Prompts are BOS + encode(prompt) (as
// `longctx serve` does); a prompt of more than max_prompt_tokens tokens (0: the engine's limit),
// or one that cannot fit with max_tokens, is skipped.
struct LocalBackendOptions {
  std::string ckpt, device = "cpu";
  int max_batch = 32;
  int max_prompt_tokens = 0;
  int max_context = 1 << 20;  // EngineOptions::max_context (softmax-full models)
  bool engine_stats = false;  // print the scheduler's counters (StepCounters) on stderr
  bool profile_ops = false;   // the same and a per-op profile (each op timed between syncs)
};
std::unique_ptr<SampleBackend> sample_backend_local(const LocalBackendOptions& o);

// Endpoint: POST <url>/v1/completions {"prompt", "n", "temperature", "max_tokens", "seed"
// (+ "model")} from `concurrency` workers. Connection errors, 429 and 5xx are retried `retries`
// times with exponential backoff (backoff_s, 2·backoff_s, ... capped at 30 s); another 4xx is an
// Error naming the status and the server's message, except 400 "context_length_exceeded",
// which skips the question. `url`: http://host:port, optionally ending in /v1.
struct EndpointOptions {
  std::string url, model, api_key;
  int concurrency = 8, retries = 5;
  double backoff_s = 0.5, timeout_s = 600;
};
std::unique_ptr<SampleBackend> sample_backend_endpoint(const EndpointOptions& o);

struct SampleReport {
  int64_t questions = 0;          // in this run (after --limit)
  int64_t already_done = 0;       // paths found in the output at start
  int64_t written = 0;            // paths written by this run
  int64_t dropped_bytes = 0;      // a truncated last line cut off at start
  std::vector<std::string> skipped;  // "id: why", one per skipped question
  double seconds = 0;
};

// Samples every missing (id, path < n) of `examples` into `out` (appending; see above). `all_ids`
// are the ids of the whole data file (records of questions outside --limit are kept, not errors).
SampleReport sample_run(const std::vector<QaExample>& examples, const std::set<std::string>& all_ids,
                        const std::string& out, SampleBackend& backend, const SampleOptions& opt);

}  // namespace longctx
