// Token shards: one binary file holding documents of token ids.
//
// Layout (all integers little-endian):
//   offset 0   char[8]  magic "LCXTOK01"
//          8   uint32   version (= 1)
//         12   uint32   token_bytes: 2 (uint16 ids, when vocab_size <= 65536) or 4 (uint32)
//         16   uint64   vocab_size
//         24   uint64   n_tokens
//         32   uint64   n_docs
//         40   uint64   doc_offsets[n_docs + 1]   token index where each document starts;
//                                                 doc_offsets[0] = 0, doc_offsets[n_docs] = n_tokens,
//                                                 non-decreasing
//              uintX    tokens[n_tokens]          X = 8 · token_bytes
// The file size must be exactly 40 + 8·(n_docs+1) + token_bytes·n_tokens. The reader maps the
// file and checks all of the above plus every token id < vocab_size; any violation is an Error
// naming the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace longctx {

inline constexpr char kShardMagic[8] = {'L', 'C', 'X', 'T', 'O', 'K', '0', '1'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 40;

// Writes `docs` (each a vector of token ids, all < vocab_size) to `path` atomically
// (temp file + rename).
void shard_write(const std::string& path, uint64_t vocab_size,
                 const std::vector<std::vector<int32_t>>& docs);

// A validated, memory-mapped shard (read-only; movable, not copyable).
class Shard {
 public:
  static Shard open(const std::string& path);
  Shard() = default;
  ~Shard();
  Shard(Shard&& o) noexcept;
  Shard& operator=(Shard&& o) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t token_bytes() const { return token_bytes_; }
  uint64_t vocab_size() const { return vocab_size_; }
  uint64_t n_tokens() const { return n_tokens_; }
  uint64_t n_docs() const { return n_docs_; }
  uint64_t doc_begin(uint64_t d) const { return offsets_[d]; }
  uint64_t doc_length(uint64_t d) const { return offsets_[d + 1] - offsets_[d]; }
  int32_t token(uint64_t i) const {
    return token_bytes_ == 2 ? int32_t(tokens16_()[i]) : int32_t(tokens32_()[i]);
  }
  // tokens [begin, begin + n) → out[0 .. n)
  void copy_tokens(uint64_t begin, uint64_t n, int32_t* out) const;
  std::vector<int32_t> doc_tokens(uint64_t d) const;

 private:
  const uint16_t* tokens16_() const { return reinterpret_cast<const uint16_t*>(tokens_); }
  const uint32_t* tokens32_() const { return reinterpret_cast<const uint32_t*>(tokens_); }
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  uint32_t version_ = 0, token_bytes_ = 0;
  uint64_t vocab_size_ = 0, n_tokens_ = 0, n_docs_ = 0;
  const uint64_t* offsets_ = nullptr;
  const uint8_t* tokens_ = nullptr;
};

// Vocabulary size recorded in a shard (the whole shard is validated).
uint64_t shard_vocab_size(const std::string& path);

}  // namespace longctx
