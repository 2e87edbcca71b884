#include "data/prepare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"
#include "data/shard.h"

namespace longctx {

namespace {

// Mean -ln p over the targets of `docs` (every token after the first of each document), with
// p the add-one-smoothed unigram distribution of `counts`.
double unigram_cross_entropy(const std::vector<std::vector<int32_t>>& docs,
                             const std::vector<uint64_t>& counts, uint64_t total) {
  double V = double(counts.size()), sum = 0;
  uint64_t n = 0;
  for (const auto& d : docs)
    for (size_t i = 1; i < d.size(); i++) {
      sum -= std::log((double(counts[size_t(d[i])]) + 1.0) / (double(total) + V));
      n++;
    }
  return n ? sum / double(n) : 0.0;
}

uint64_t count_targets(const std::vector<std::vector<int32_t>>& docs) {
  uint64_t n = 0;
  for (const auto& d : docs) n += d.empty() ? 0 : d.size() - 1;
  return n;
}

uint64_t count_tokens(const std::vector<std::vector<int32_t>>& docs) {
  uint64_t n = 0;
  for (const auto& d : docs) n += d.size();
  return n;
}

}  // namespace

nlohmann::json data_prepare(const std::vector<Document>& docs, const Tokenizer& tok,
                            const std::string& out_dir, const PrepareOptions& opt) {
  LCX_CHECK(!docs.empty(), "data prepare: empty corpus (no documents)");
  LCX_CHECK(opt.val_fraction >= 0 && opt.val_fraction < 1, "data prepare: val_fraction {} must be "
            "in [0, 1)", opt.val_fraction);
  LCX_CHECK(tok.bos_id() >= 0 && tok.eos_id() >= 0, "data prepare: tokenizer '{}' has no BOS/EOS "
            "ids", tok.path());
  const size_t n = docs.size();

  // split by documents
  size_t n_val = size_t(std::llround(opt.val_fraction * double(n)));
  if (opt.val_fraction > 0 && n_val == 0) n_val = 1;
  LCX_CHECK(n_val < n, "data prepare: {} documents are too few for val_fraction {} (the train "
            "split would be empty; use --val-fraction 0 or more documents)", n, opt.val_fraction);
  std::vector<size_t> perm(n);
  for (size_t i = 0; i < n; i++) perm[i] = i;
  Rng rng(opt.seed);
  for (size_t i = n; i > 1; i--) std::swap(perm[i - 1], perm[rng.below(i)]);
  std::vector<char> is_val(n, 0);
  for (size_t i = 0; i < n_val; i++) is_val[perm[i]] = 1;

  // encode (parallel over documents; each slot written by one thread)
  std::vector<std::vector<int32_t>> enc(n);
  Progress progress("encode", n, "docs", opt.quiet);
  size_t done = 0;
  std::string err;  // exceptions must not escape an OpenMP region
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t i = 0; i < n; i++) {
    std::vector<int32_t> ids;
    try {
      ids = tok.encode(docs[i].text);
    } catch (const std::exception& ex) {
#pragma omp critical(longctx_prepare_progress)
      if (err.empty()) err = fmt::format("document '{}': {}", docs[i].source, ex.what());
    }
    std::vector<int32_t>& e = enc[i];
    e.reserve(ids.size() + 2);
    e.push_back(tok.bos_id());
    e.insert(e.end(), ids.begin(), ids.end());
    e.push_back(tok.eos_id());
#pragma omp critical(longctx_prepare_progress)
    progress.update(++done);
  }
  progress.finish();
  LCX_CHECK(err.empty(), "data prepare: {}", err);

  std::vector<std::vector<int32_t>> train, val;
  train.reserve(n - n_val);
  val.reserve(n_val);
  for (size_t i = 0; i < n; i++) (is_val[i] ? val : train).push_back(std::move(enc[i]));

  const uint64_t V = uint64_t(tok.vocab_size());
  std::filesystem::create_directories(out_dir);
  std::string train_path = (std::filesystem::path(out_dir) / "train.bin").string();
  std::string val_path = (std::filesystem::path(out_dir) / "val.bin").string();
  shard_write(train_path, V, train);
  shard_write(val_path, V, val);

  std::vector<uint64_t> counts(V, 0);
  for (const auto& d : train)
    for (size_t i = 1; i < d.size(); i++) counts[size_t(d[i])]++;
  uint64_t train_targets = count_targets(train);

  nlohmann::json summary = {
      {"vocab_size", V},
      {"tokenizer", tok.path()},
      {"seed", opt.seed},
      {"val_fraction", opt.val_fraction},
      {"train", {{"docs", train.size()}, {"tokens", count_tokens(train)}, {"targets", train_targets}}},
      {"val", {{"docs", val.size()}, {"tokens", count_tokens(val)}, {"targets", count_targets(val)}}},
      {"unigram",
       {{"train_entropy_nats", unigram_cross_entropy(train, counts, train_targets)},
        {"val_cross_entropy_nats", unigram_cross_entropy(val, counts, train_targets)},
        {"smoothing", "add-one over vocab_size; targets = all tokens but each document's BOS"}}},
  };
  std::string sum_path = (std::filesystem::path(out_dir) / "summary.json").string();
  std::ofstream f(sum_path);
  LCX_CHECK(f, "data prepare: cannot write '{}'", sum_path);
  f << summary.dump(2) << "\n";
  LCX_CHECK(f, "data prepare: write to '{}' failed", sum_path);
  return summary;
}

nlohmann::json data_prepare(const std::vector<std::string>& inputs, CorpusFormat format,
                            const Tokenizer& tok, const std::string& out_dir,
                            const PrepareOptions& opt) {
  return data_prepare(corpus_read(inputs, format), tok, out_dir, opt);
}

}  // namespace longctx
