#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace longctx {

static_assert(std::endian::native == std::endian::little, "shards are little-endian");

namespace {

struct File {
  FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};

void put(FILE* f, const void* p, size_t n, const std::string& path) {
  LCX_CHECK(std::fwrite(p, 1, n, f) == n, "shard '{}': write failed: {}", path, std::strerror(errno));
}

}  // namespace

void shard_write(const std::string& path, uint64_t vocab_size,
                 const std::vector<std::vector<int32_t>>& docs) {
  LCX_CHECK(vocab_size > 0 && vocab_size <= (uint64_t(1) << 31), "shard '{}': vocab_size {} out of "
            "range", path, vocab_size);
  uint32_t token_bytes = vocab_size <= 65536 ? 2 : 4;
  uint64_t n_docs = docs.size(), n_tokens = 0;
  std::vector<uint64_t> offsets(n_docs + 1, 0);
  for (uint64_t d = 0; d < n_docs; d++) {
    for (size_t i = 0; i < docs[d].size(); i++) {
      int32_t t = docs[d][i];
      LCX_CHECK(t >= 0 && uint64_t(t) < vocab_size, "shard '{}': document {} token {} has id {}, "
                "outside the vocabulary [0, {})", path, d, i, t, vocab_size);
    }
    n_tokens += docs[d].size();
    offsets[d + 1] = n_tokens;
  }
  std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::string tmp = path + ".tmp";
  {
    File f{std::fopen(tmp.c_str(), "wb")};
    LCX_CHECK(f.f, "shard '{}': cannot create: {}", tmp, std::strerror(errno));
    put(f.f, kShardMagic, 8, tmp);
    put(f.f, &kShardVersion, 4, tmp);
    put(f.f, &token_bytes, 4, tmp);
    put(f.f, &vocab_size, 8, tmp);
    put(f.f, &n_tokens, 8, tmp);
    put(f.f, &n_docs, 8, tmp);
    put(f.f, offsets.data(), 8 * offsets.size(), tmp);
    std::vector<uint8_t> buf;
    for (const auto& doc : docs) {
      buf.resize(doc.size() * token_bytes);
      if (token_bytes == 2)
        for (size_t i = 0; i < doc.size(); i++) {
          uint16_t v = uint16_t(doc[i]);
          std::memcpy(&buf[2 * i], &v, 2);
        }
      else
        std::memcpy(buf.data(), doc.data(), 4 * doc.size());
      put(f.f, buf.data(), buf.size(), tmp);
    }
    LCX_CHECK(std::fflush(f.f) == 0 && fsync(fileno(f.f)) == 0, "shard '{}': flush failed: {}", tmp,
              std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  LCX_CHECK(!ec, "shard: cannot rename '{}' to '{}': {}", tmp, path, ec.message());
}

Shard::~Shard() {
  if (map_) munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& o) noexcept { *this = std::move(o); }

Shard& Shard::operator=(Shard&& o) noexcept {
  if (this == &o) return *this;
  if (map_) munmap(map_, map_bytes_);
  path_ = std::move(o.path_);
  map_ = o.map_;
  map_bytes_ = o.map_bytes_;
  version_ = o.version_;
  token_bytes_ = o.token_bytes_;
  vocab_size_ = o.vocab_size_;
  n_tokens_ = o.n_tokens_;
  n_docs_ = o.n_docs_;
  offsets_ = o.offsets_;
  tokens_ = o.tokens_;
  o.map_ = nullptr;
  o.map_bytes_ = 0;
  o.offsets_ = nullptr;
  o.tokens_ = nullptr;
  o.n_tokens_ = o.n_docs_ = 0;
  return *this;
}

Shard Shard::open(const std::string& path) {
  Shard s;
  s.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY);
  LCX_CHECK(fd >= 0, "shard '{}': cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail("shard '{}': cannot stat: {}", path, std::strerror(e));
  }
  size_t size = size_t(st.st_size);
  if (size < kShardHeaderBytes) {
    ::close(fd);
    fail("shard '{}': truncated: {} bytes, smaller than the {}-byte header", path, size,
         kShardHeaderBytes);
  }
  void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  LCX_CHECK(m != MAP_FAILED, "shard '{}': mmap failed: {}", path, std::strerror(e));
  s.map_ = m;
  s.map_bytes_ = size;
  const auto* b = static_cast<const uint8_t*>(m);
  LCX_CHECK(std::memcmp(b, kShardMagic, 8) == 0, "shard '{}': bad magic (expected \"LCXTOK01\"): "
            "not a longctx token shard (make one with `longctx data prepare`)", path);
  std::memcpy(&s.version_, b + 8, 4);
  std::memcpy(&s.token_bytes_, b + 12, 4);
  std::memcpy(&s.vocab_size_, b + 16, 8);
  std::memcpy(&s.n_tokens_, b + 24, 8);
  std::memcpy(&s.n_docs_, b + 32, 8);
  LCX_CHECK(s.version_ == kShardVersion, "shard '{}': unsupported version {} (this build reads {})",
            path, s.version_, kShardVersion);
  LCX_CHECK(s.vocab_size_ > 0 && s.vocab_size_ <= (uint64_t(1) << 31), "shard '{}': vocab_size {} "
            "out of range", path, s.vocab_size_);
  uint32_t want_tb = s.vocab_size_ <= 65536 ? 2 : 4;
  LCX_CHECK(s.token_bytes_ == want_tb, "shard '{}': token_bytes {} but vocab_size {} needs {}", path,
            s.token_bytes_, s.vocab_size_, want_tb);
  // exact size, computed without overflow
  uint64_t max_u = ~uint64_t(0);
  LCX_CHECK(s.n_docs_ < (max_u - kShardHeaderBytes) / 8 - 1 && s.n_tokens_ < max_u / 8,
            "shard '{}': header counts out of range (n_docs {}, n_tokens {})", path, s.n_docs_,
            s.n_tokens_);
  uint64_t expect = kShardHeaderBytes + 8 * (s.n_docs_ + 1) + uint64_t(s.token_bytes_) * s.n_tokens_;
  LCX_CHECK(uint64_t(size) >= expect, "shard '{}': truncated: {} bytes, header (n_docs {}, "
            "n_tokens {}) needs {}", path, size, s.n_docs_, s.n_tokens_, expect);
  LCX_CHECK(uint64_t(size) == expect, "shard '{}': {} trailing bytes after the tokens (file {} "
            "bytes, expected {})", path, uint64_t(size) - expect, size, expect);
  s.offsets_ = reinterpret_cast<const uint64_t*>(b + kShardHeaderBytes);
  s.tokens_ = b + kShardHeaderBytes + 8 * (s.n_docs_ + 1);
  LCX_CHECK(s.offsets_[0] == 0, "shard '{}': doc_offsets[0] is {}, expected 0", path, s.offsets_[0]);
  LCX_CHECK(s.offsets_[s.n_docs_] == s.n_tokens_, "shard '{}': doc_offsets[{}] is {}, expected "
            "n_tokens {}", path, s.n_docs_, s.offsets_[s.n_docs_], s.n_tokens_);
  for (uint64_t d = 0; d < s.n_docs_; d++)
    LCX_CHECK(s.offsets_[d] <= s.offsets_[d + 1], "shard '{}': doc_offsets decrease at document {} "
              "({} > {})", path, d, s.offsets_[d], s.offsets_[d + 1]);
  for (uint64_t i = 0; i < s.n_tokens_; i++) {
    uint64_t t = s.token_bytes_ == 2 ? s.tokens16_()[i] : s.tokens32_()[i];
    if (t >= s.vocab_size_) {
      // name the document too
      const uint64_t* d = std::upper_bound(s.offsets_, s.offsets_ + s.n_docs_ + 1, i) - 1;
      fail("shard '{}': token {} (document {}) has id {} >= vocab_size {}", path, i,
           uint64_t(d - s.offsets_), t, s.vocab_size_);
    }
  }
  return s;
}

void Shard::copy_tokens(uint64_t begin, uint64_t n, int32_t* out) const {
  if (token_bytes_ == 2) {
    const uint16_t* p = tokens16_() + begin;
    for (uint64_t i = 0; i < n; i++) out[i] = int32_t(p[i]);
  } else {
    std::memcpy(out, tokens32_() + begin, 4 * n);
  }
}

std::vector<int32_t> Shard::doc_tokens(uint64_t d) const {
  std::vector<int32_t> v(doc_length(d));
  copy_tokens(doc_begin(d), v.size(), v.data());
  return v;
}

uint64_t shard_vocab_size(const std::string& path) { return Shard::open(path).vocab_size(); }

}  // namespace longctx
