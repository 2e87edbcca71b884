// data_prepare: documents → tokens → train.bin / val.bin (+ summary.json) in one folder.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "tokenizer/tokenizer.h"

namespace longctx {

struct PrepareOptions {
  double val_fraction = 0.05;  // fraction of DOCUMENTS held out (rounded; ≥ 1 doc when > 0)
  uint64_t seed = 1;           // Philox seed of the document split
  bool quiet = false;          // no progress output
};

// Each document is encoded as [BOS] + encode(text) + [EOS]. The split is by documents: a Philox
// shuffle of the document indices (seed) picks round(val_fraction · n) of them for val; both
// splits keep the input order. Writes out_dir/train.bin, out_dir/val.bin and
// out_dir/summary.json, and returns the summary:
//   {"vocab_size", "tokenizer", "seed", "val_fraction",
//    "train": {"docs", "tokens", "targets"}, "val": {"docs", "tokens", "targets"},
//    "unigram": {"train_entropy_nats", "val_cross_entropy_nats", "smoothing"}}
// "targets" counts predicted tokens (every token but each document's first, the BOS).
// unigram.val_cross_entropy_nats is the mean -ln p(t) over val targets under the train targets'
// unigram distribution with add-one smoothing over the vocabulary: the loss a model that
// ignores context would reach, a floor a language model must beat.
nlohmann::json data_prepare(const std::vector<Document>& docs, const Tokenizer& tok,
                            const std::string& out_dir, const PrepareOptions& opt = {});

// Convenience: corpus_read(inputs, format) then data_prepare.
nlohmann::json data_prepare(const std::vector<std::string>& inputs, CorpusFormat format,
                            const Tokenizer& tok, const std::string& out_dir,
                            const PrepareOptions& opt = {});

}  // namespace longctx
