#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

// Exported by libsentencepiece but not declared in its public headers.
namespace sentencepiece::logging {
int GetMinLogLevel();
void SetMinLogLevel(int v);
}  // namespace sentencepiece::logging

namespace longctx {

namespace {

// Cuts `text` into training "sentences" of at most max_len bytes, at line breaks where possible
// (else at a space, else anywhere on a UTF-8 boundary). Newlines inside a chunk are kept so the
// model learns them as pieces.
void chunk_text(std::string_view text, size_t max_len, std::vector<std::string>& out) {
  while (!text.empty()) {
    size_t n = text.size();
    if (n > max_len) {
      n = text.rfind('\n', max_len - 1);
      if (n == std::string_view::npos || n == 0) n = text.rfind(' ', max_len - 1);
      if (n == std::string_view::npos || n == 0) {
        n = max_len;
        while (n > 1 && (uint8_t(text[n]) & 0xC0) == 0x80) n--;  // don't split a character
      }
    }
    std::string_view piece = text.substr(0, n);
    text.remove_prefix(n);
    // leading/trailing newlines of a chunk carry no information for training
    while (!piece.empty() && piece.front() == '\n') piece.remove_prefix(1);
    while (!piece.empty() && piece.back() == '\n') piece.remove_suffix(1);
    if (!piece.empty()) out.emplace_back(piece);
  }
}

class ChunkIterator : public sentencepiece::SentenceIterator {
 public:
  ChunkIterator(const TextSource& next, size_t max_len) : next_(next), max_len_(max_len) { fill(); }
  bool done() const override { return i_ >= buf_.size(); }
  void Next() override {
    if (++i_ >= buf_.size()) fill();
  }
  const std::string& value() const override { return buf_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }
  uint64_t count = 0;

 private:
  void fill() {
    buf_.clear();
    i_ = 0;
    std::string text;
    while (buf_.empty() && next_(text)) chunk_text(text, max_len_, buf_);
    count += buf_.size();
  }
  const TextSource& next_;
  size_t max_len_;
  std::vector<std::string> buf_;
  size_t i_ = 0;
};

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LCX_CHECK(f, "cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

void tokenizer_train(const TextSource& next, const std::string& model_path,
                     const TokenizerTrainOptions& opt) {
  LCX_CHECK(opt.vocab_size >= 260, "tokenizer: vocab_size {} is too small (byte fallback needs 256 "
            "byte pieces + 3 specials; use >= 260)", opt.vocab_size);
  LCX_CHECK(opt.model_type == "bpe" || opt.model_type == "unigram",
            "tokenizer: model_type '{}' is not supported (use bpe or unigram)", opt.model_type);
  std::unordered_map<std::string, std::string> kw = {
      {"model_type", opt.model_type},
      {"vocab_size", std::to_string(opt.vocab_size)},
      {"num_threads", std::to_string(opt.num_threads)},
      {"input_sentence_size", std::to_string(opt.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"max_sentence_length", std::to_string(opt.max_sentence_length)},
      {"character_coverage", std::to_string(opt.character_coverage)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"remove_extra_whitespaces", "false"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"hard_vocab_limit", "false"},  // tiny corpora may not support the full vocab
      // newlines are kept (identity normaliser) but SentencePiece never merges them: make a
      // paragraph break one token instead of two <0x0A> byte pieces
      {"user_defined_symbols", "\n\n,\n"},
  };
  sentencepiece::SetRandomGeneratorSeed(opt.seed);
  int old_level = sentencepiece::logging::GetMinLogLevel();
  if (opt.quiet) sentencepiece::logging::SetMinLogLevel(2);  // errors only
  ChunkIterator it(next, size_t(opt.max_sentence_length));
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(kw, &it, &proto);
  sentencepiece::logging::SetMinLogLevel(old_level);
  LCX_CHECK(it.count > 0, "tokenizer: no training text (empty corpus)");
  LCX_CHECK(st.ok(), "tokenizer: SentencePiece training failed: {}", st.ToString());

  // atomic write: temp file in the same directory, then rename
  std::filesystem::path out(model_path);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  std::string tmp = model_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    LCX_CHECK(f, "tokenizer: cannot write '{}': {}", tmp, std::strerror(errno));
    f.write(proto.data(), std::streamsize(proto.size()));
    f.flush();
    LCX_CHECK(f, "tokenizer: write to '{}' failed", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, model_path, ec);
  LCX_CHECK(!ec, "tokenizer: cannot rename '{}' to '{}': {}", tmp, model_path, ec.message());
}

void tokenizer_train(const std::vector<std::string>& input_files, const std::string& model_path,
                     const TokenizerTrainOptions& opt) {
  size_t i = 0;
  TextSource next = [&](std::string& out) {
    if (i >= input_files.size()) return false;
    out = read_file(input_files[i++]);
    return true;
  };
  tokenizer_train(next, model_path, opt);
}

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  LCX_CHECK(std::filesystem::is_regular_file(path, ec),
            "tokenizer '{}': file not found (train one with `longctx data prepare "
            "--train-tokenizer`, or pass the tokenizer.model of a checkpoint)", path);
  std::string bytes = read_file(path);
  LCX_CHECK(!bytes.empty(), "tokenizer '{}': file is empty", path);
  Tokenizer t;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto st = t.sp_->LoadFromSerializedProto(bytes);
  LCX_CHECK(st.ok(), "tokenizer '{}': not a valid SentencePiece model ({})", path, st.ToString());
  LCX_CHECK(t.sp_->GetPieceSize() > 0, "tokenizer '{}': model has no pieces", path);
  t.path_ = path;
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  LCX_CHECK(sp_, "tokenizer: encode on an unloaded tokenizer");
  std::vector<int> ids;
  auto st = sp_->Encode(text, &ids);
  LCX_CHECK(st.ok(), "tokenizer '{}': encode failed: {}", path_, st.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  LCX_CHECK(sp_, "tokenizer: decode on an unloaded tokenizer");
  int n = sp_->GetPieceSize();
  for (size_t i = 0; i < ids.size(); i++)
    LCX_CHECK(ids[i] >= 0 && ids[i] < n, "tokenizer '{}': token id {} at index {} is out of range "
              "[0, {})", path_, ids[i], i, n);
  std::vector<int> v(ids.begin(), ids.end());
  std::string out;
  auto st = sp_->Decode(v, &out);
  LCX_CHECK(st.ok(), "tokenizer '{}': decode failed: {}", path_, st.ToString());
  return out;
}

int Tokenizer::vocab_size() const { return sp_ ? sp_->GetPieceSize() : 0; }
int Tokenizer::bos_id() const { return sp_ ? sp_->bos_id() : -1; }
int Tokenizer::eos_id() const { return sp_ ? sp_->eos_id() : -1; }
int Tokenizer::unk_id() const { return sp_ ? sp_->unk_id() : -1; }

}  // namespace longctx
