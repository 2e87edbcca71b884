// `longctx data prepare|info`: corpus → tokenizer → token shards, and shard inspection.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "cli/commands.h"
#include "core/clock.h"
#include "core/error.h"
#include "data/corpus.h"      // corpus_read, CorpusFormat
#include "data/prepare.h"     // data_prepare
#include "data/shard.h"       // Shard
#include "tokenizer/tokenizer.h"  // tokenizer_train, Tokenizer

namespace fs = std::filesystem;

namespace longctx {

namespace {

struct PrepareArgs {
  std::vector<std::string> inputs;
  std::string format = "auto", tokenizer, out;
  bool train_tokenizer = false, quiet = false;
  int vocab_size = 0;
  double val_fraction = 0.05;
  uint64_t seed = 1;
};

void run_prepare(const PrepareArgs& a) {
  LCX_CHECK(a.train_tokenizer || !a.tokenizer.empty(),
            "data prepare: pass --tokenizer FILE.model, or --train-tokenizer --vocab-size N");
  LCX_CHECK(!a.train_tokenizer || a.vocab_size > 0,
            "data prepare: --train-tokenizer needs --vocab-size N (e.g. 8192)");
  LCX_CHECK(a.train_tokenizer || a.vocab_size == 0,
            "data prepare: --vocab-size only applies with --train-tokenizer (the vocabulary of "
            "--tokenizer {} is fixed)", a.tokenizer);
  CorpusFormat format = corpus_format_parse(a.format);
  if (!a.tokenizer.empty()) Tokenizer::load(a.tokenizer);  // fail before the slow part
  auto log = [&](const std::string& s) {
    if (!a.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };

  auto t0 = std::chrono::steady_clock::now();
  std::vector<Document> docs = corpus_read(a.inputs, format);
  size_t bytes = 0;
  for (auto& d : docs) bytes += d.text.size();
  double read_s = seconds_since(t0);
  log(fmt::format("read {} documents, {:.1f} MB of text in {:.2f}s", docs.size(), double(bytes) / 1e6,
                  read_s));

  fs::create_directories(a.out);
  const std::string tok_path = (fs::path(a.out) / "tokenizer.model").string();
  double tok_s = 0;
  if (a.train_tokenizer) {
    auto t1 = std::chrono::steady_clock::now();
    log(fmt::format("training a BPE tokenizer, vocab {} ...", a.vocab_size));
    TokenizerTrainOptions opt;
    opt.vocab_size = a.vocab_size;
    size_t i = 0;
    tokenizer_train([&](std::string& out) {
      if (i >= docs.size()) return false;
      out = docs[i++].text;
      return true;
    }, tok_path, opt);
    tok_s = seconds_since(t1);
    log(fmt::format("wrote {} in {:.2f}s", tok_path, tok_s));
  } else {
    std::error_code ec;
    if (!fs::exists(tok_path) || !fs::equivalent(a.tokenizer, tok_path, ec)) {
      fs::copy_file(a.tokenizer, tok_path, fs::copy_options::overwrite_existing, ec);
      LCX_CHECK(!ec, "data prepare: cannot copy {} to {}: {}", a.tokenizer, tok_path, ec.message());
    }
  }
  Tokenizer tok = Tokenizer::load(tok_path);

  auto t2 = std::chrono::steady_clock::now();
  PrepareOptions popt;
  popt.val_fraction = a.val_fraction;
  popt.seed = a.seed;
  popt.quiet = a.quiet;
  nlohmann::json summary = data_prepare(docs, tok, a.out, popt);
  double prep_s = seconds_since(t2);
  summary["inputs"] = a.inputs;
  summary["format"] = a.format;
  summary["seconds"] = {{"read", read_s}, {"tokenizer_train", tok_s}, {"encode_and_write", prep_s}};
  std::string sum_path = (fs::path(a.out) / "summary.json").string();
  std::ofstream f(sum_path);
  f << summary.dump(2) << "\n";
  LCX_CHECK(f.good(), "data prepare: cannot write {}", sum_path);
  std::printf("%s\n", summary.dump(2).c_str());
}

void run_info(const std::string& path, bool json) {
  Shard s = Shard::open(path);
  uint64_t lo = UINT64_MAX, hi = 0;
  for (uint64_t d = 0; d < s.n_docs(); d++) {
    lo = std::min(lo, s.doc_length(d));
    hi = std::max(hi, s.doc_length(d));
  }
  if (s.n_docs() == 0) lo = 0;
  double mean = s.n_docs() ? double(s.n_tokens()) / double(s.n_docs()) : 0.0;
  nlohmann::json j = {{"path", path},
                      {"version", s.version()},
                      {"vocab_size", s.vocab_size()},
                      {"token_bytes", s.token_bytes()},
                      {"tokens", s.n_tokens()},
                      {"docs", s.n_docs()},
                      {"doc_tokens", {{"min", lo}, {"mean", mean}, {"max", hi}}},
                      {"file_bytes", fs::file_size(path)}};
  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("%s: longctx token shard v%u\n", path.c_str(), s.version());
  std::printf("  vocab size   %llu (uint%u ids)\n", (unsigned long long)s.vocab_size(),
              8 * s.token_bytes());
  std::printf("  tokens       %llu\n", (unsigned long long)s.n_tokens());
  std::printf("  documents    %llu (tokens per document: min %llu, mean %.1f, max %llu)\n",
              (unsigned long long)s.n_docs(), (unsigned long long)lo, mean, (unsigned long long)hi);
  std::printf("  file size    %llu bytes\n", (unsigned long long)fs::file_size(path));
}

}  // namespace

void register_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Prepare and inspect training data (token shards)");
  data->require_subcommand(1);

  auto a = std::make_shared<PrepareArgs>();
  auto* prep = data->add_subcommand(
      "prepare",
      "Read a corpus, tokenize it (optionally training a BPE tokenizer first) and write "
      "OUT/train.bin, OUT/val.bin, OUT/tokenizer.model and OUT/summary.json");
  prep->add_option("--input", a->inputs,
                   "Corpus files or folders (folders are read recursively, sorted, hidden files "
                   "skipped)")
      ->required()
      ->expected(1, -1);
  prep->add_option("--format", a->format,
                   "auto | text (a file is a document) | jsonl (one {\"text\": ...} per line) | "
                   "brown (POS-tagged Brown corpus)")
      ->check(CLI::IsMember({"auto", "text", "jsonl", "brown"}))
      ->capture_default_str();
  auto* tok_opt = prep->add_option("--tokenizer", a->tokenizer,
                                   "Existing SentencePiece model to encode with (copied to "
                                   "OUT/tokenizer.model)");
  auto* train_flag = prep->add_flag("--train-tokenizer", a->train_tokenizer,
                                    "Train a BPE tokenizer on the corpus, written to "
                                    "OUT/tokenizer.model");
  tok_opt->excludes(train_flag);
  prep->add_option("--vocab-size", a->vocab_size, "Vocabulary size for --train-tokenizer (e.g. 8192)");
  prep->add_option("--out", a->out, "Output folder")->required();
  prep->add_option("--val-fraction", a->val_fraction,
                   "Fraction of documents held out for validation")
      ->check(CLI::Range(0.0, 0.999))
      ->capture_default_str();
  prep->add_option("--seed", a->seed, "Seed of the train/val document split")->capture_default_str();
  prep->add_flag("--quiet", a->quiet, "No progress output");
  prep->callback([a] { run_prepare(*a); });

  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* info = data->add_subcommand("info", "Print the header summary of a token shard (.bin)");
  info->add_option("file", *path, "Token shard, e.g. data/train.bin")->required();
  info->add_flag("--json", *json, "Print JSON");
  info->callback([path, json] { run_info(*path, *json); });
}

}  // namespace longctx
