// SentencePiece wrapper: train a BPE (or unigram) model and load it for encode/decode.
// Fixed special ids: unk 0, bos 1, eos 2, no pad. byte_fallback is on, so every UTF-8 string is
// encodable (unknown characters become <0xNN> byte pieces) and decode(encode(s)) == s: the
// normaliser is the identity and whitespace is kept as is (no NFKC, no collapsing of runs of
// spaces or newlines), which matters for paragraph breaks in documents.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace longctx {

struct TokenizerTrainOptions {
  int vocab_size = 8192;
  std::string model_type = "bpe";        // "bpe" | "unigram"
  int num_threads = 2;
  uint64_t input_sentence_size = 200000;  // cap on training "sentences" (sampled); 0 = all
  int max_sentence_length = 8192;         // bytes; longer pieces of text are split before training
  double character_coverage = 0.9999;     // rare characters fall back to bytes
  uint32_t seed = 1;                      // SentencePiece's sampling seed
  bool quiet = true;                      // silence SentencePiece's log
};

// Pulls the next training text into `out`; returns false at the end. Texts may contain newlines
// and any length: they are cut at line breaks into chunks of ≤ max_sentence_length bytes.
using TextSource = std::function<bool(std::string& out)>;

// Trains on the texts from `next` and writes the model to `model_path` (a single file,
// written to a temp file and renamed). Throws Error on failure.
void tokenizer_train(const TextSource& next, const std::string& model_path,
                     const TokenizerTrainOptions& opt = {});
// Same, over whole text files (each file read and chunked as above).
void tokenizer_train(const std::vector<std::string>& input_files, const std::string& model_path,
                     const TokenizerTrainOptions& opt = {});

class Tokenizer {
 public:
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Throws Error naming the file if it is missing or not a SentencePiece model.
  static Tokenizer load(const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const;  // no BOS/EOS added
  std::string decode(const std::vector<int32_t>& ids) const;  // throws on id out of range
  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  int unk_id() const;
  const std::string& path() const { return path_; }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace longctx
