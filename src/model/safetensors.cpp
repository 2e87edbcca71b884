#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cfloat>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace longctx {

namespace test_hooks {
void (*io_fault_hook)(const char* stage) = nullptr;
}

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the safetensors spec's limit
constexpr int kMaxJsonDepth = 8;              // a valid header nests 3 deep

struct DTypeInfo {
  DType t;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},
    {DType::F8_E5M2, "F8_E5M2", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I32, "I32", 4},   {DType::U32, "U32", 4}, {DType::F32, "F32", 4},
    {DType::I64, "I64", 8},   {DType::U64, "U64", 8}, {DType::F64, "F64", 8},
};

// A name or value from the file, quoted and cut short so a hostile header can't flood the message.
std::string quote(std::string_view s) {
  constexpr size_t kMax = 120;
  if (s.size() <= kMax) return fmt::format("'{}'", s);
  return fmt::format("'{}...' ({} bytes)", s.substr(0, kMax), s.size());
}

// A JSON value described without dumping it whole (dump() of a huge or deep value is costly).
std::string brief(const nlohmann::json& j) {
  if (j.is_array()) return fmt::format("an array of {} elements", j.size());
  if (j.is_object()) return fmt::format("an object of {} keys", j.size());
  if (j.is_string()) return "the string " + quote(j.get_ref<const std::string&>());
  return j.dump();
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ","));
}

// A non-negative JSON integer, or Error "<ctx> must be a non-negative integer, got ...".
uint64_t get_uint(const nlohmann::json& j, const std::string& ctx) {
  LCX_CHECK(j.is_number_unsigned(), "{} must be a non-negative integer, got {}", ctx, brief(j));
  return j.get<uint64_t>();
}

// Parse the JSON header; rejects nesting deeper than any valid header so nothing downstream
// recurses on hostile input.
nlohmann::json parse_header_json(std::string_view text, const std::string& where) {
  using Ev = nlohmann::json::parse_event_t;
  std::set<std::string> names;  // nlohmann keeps the last of duplicate keys; we refuse them
  auto guard = [&](int depth, Ev ev, nlohmann::json& parsed) {
    if ((ev == Ev::object_start || ev == Ev::array_start) && depth > kMaxJsonDepth)
      fail("{}: header JSON nests deeper than {} levels", where, kMaxJsonDepth);
    if (ev == Ev::key && depth == 1 && parsed.is_string() &&
        !names.insert(parsed.get<std::string>()).second)
      fail("{}: tensor {} appears twice in the header", where,
           quote(parsed.get_ref<const std::string&>()));
    return true;
  };
  try {
    return nlohmann::json::parse(text.begin(), text.end(), guard);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON ({})", where, e.what());
  }
}

struct Range {
  uint64_t begin, end;
  size_t index;
};

void parse_view(const uint8_t* p, size_t size, SafeTensors& st) {
  const std::string& where = st.where;
  LCX_CHECK(size >= 8, "{}: file is {} bytes, shorter than the 8-byte header length (truncated?)",
            where, size);
  uint64_t n;
  std::memcpy(&n, p, 8);
  LCX_CHECK(n > 0, "{}: header length is 0", where);
  LCX_CHECK(n <= kMaxHeader, "{}: header length {} exceeds the 100 MB limit (corrupt file?)", where,
            n);
  LCX_CHECK(n <= size - 8,
            "{}: header length {} exceeds the {} bytes that follow it (file truncated?)", where, n,
            size - 8);
  std::string_view text(reinterpret_cast<const char*>(p + 8), n);
  LCX_CHECK(text[0] == '{', "{}: header does not start with '{{' (not a safetensors file?)", where);
  nlohmann::json j = parse_header_json(text, where);
  LCX_CHECK(j.is_object(), "{}: header must be a JSON object, got {}", where, brief(j));

  const uint8_t* data = p + 8 + n;
  const uint64_t data_size = size - 8 - n;
  std::vector<Range> ranges;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      LCX_CHECK(v.is_object(), "{}: __metadata__ must be an object of strings, got {}", where,
                brief(v));
      for (const auto& [k, s] : v.items()) {
        LCX_CHECK(s.is_string(), "{}: __metadata__ value {} must be a string, got {}", where,
                  quote(k), brief(s));
        st.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    const std::string ctx = fmt::format("{}: tensor {}", where, quote(name));
    LCX_CHECK(!name.empty(), "{}: a tensor has an empty name", where);
    LCX_CHECK(v.is_object(), "{}: entry must be an object with dtype, shape, data_offsets, got {}",
              ctx, brief(v));
    for (const auto& [k, unused] : v.items())
      LCX_CHECK(k == "dtype" || k == "shape" || k == "data_offsets", "{}: unknown field {}", ctx,
                quote(k));
    for (const char* k : {"dtype", "shape", "data_offsets"})
      LCX_CHECK(v.contains(k), "{}: field '{}' is missing", ctx, k);

    StTensor t;
    t.name = name;
    const auto& dt = v["dtype"];
    LCX_CHECK(dt.is_string(), "{}: dtype must be a string, got {}", ctx, brief(dt));
    const auto& dts = dt.get_ref<const std::string&>();
    const DTypeInfo* info = nullptr;
    for (const auto& d : kDTypes)
      if (dts == d.name) info = &d;
    LCX_CHECK(info, "{}: unknown dtype {} (known: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, "
              "BF16, I32, U32, F32, I64, U64, F64)", ctx, quote(dts));
    t.dtype = info->t;

    const auto& sh = v["shape"];
    LCX_CHECK(sh.is_array(), "{}: shape must be a list of non-negative integers, got {}", ctx,
              brief(sh));
    size_t numel = 1;
    for (size_t i = 0; i < sh.size(); i++) {
      uint64_t d = get_uint(sh[i], fmt::format("{}: shape[{}]", ctx, i));
      LCX_CHECK(d <= uint64_t(INT64_MAX) && !__builtin_mul_overflow(numel, d, &numel),
                "{}: shape[{}] = {} makes the element count overflow", ctx, i, d);
      t.shape.push_back(int64_t(d));
    }
    t.numel = numel;
    LCX_CHECK(!__builtin_mul_overflow(numel, info->size, &t.nbytes),
              "{}: shape {} is too large for {}", ctx, shape_str(t.shape), info->name);

    const auto& off = v["data_offsets"];
    LCX_CHECK(off.is_array() && off.size() == 2,
              "{}: data_offsets must be a list [begin, end], got {}", ctx, brief(off));
    uint64_t b = get_uint(off[0], ctx + ": data_offsets[0]");
    uint64_t e = get_uint(off[1], ctx + ": data_offsets[1]");
    LCX_CHECK(b <= e, "{}: data_offsets [{},{}] end before they begin", ctx, b, e);
    LCX_CHECK(e <= data_size,
              "{}: data_offsets [{},{}] run past the {}-byte data section (file truncated?)", ctx,
              b, e, data_size);
    LCX_CHECK(e - b == t.nbytes,
              "{}: data_offsets [{},{}] hold {} bytes but {} shape {} needs {} bytes", ctx, b, e,
              e - b, info->name, shape_str(t.shape), t.nbytes);
    t.data = data + b;
    ranges.push_back({b, e, st.tensors.size()});
    st.tensors.push_back(std::move(t));
  }

  // The byte ranges must tile the data section exactly: no overlap, no hole, nothing after.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const Range* prev = nullptr;
  for (const auto& r : ranges) {
    const std::string& name = st.tensors[r.index].name;
    LCX_CHECK(r.begin >= pos, "{}: tensor {} bytes [{},{}] overlap tensor {} bytes [{},{}]", where,
              quote(name), r.begin, r.end, quote(st.tensors[prev->index].name), prev->begin,
              prev->end);
    LCX_CHECK(r.begin == pos,
              "{}: data bytes [{},{}) belong to no tensor (hole before tensor {})", where, pos,
              r.begin, quote(name));
    pos = r.end;
    prev = &r;
  }
  LCX_CHECK(pos == data_size, "{}: {} trailing bytes after the last tensor's data (ends at {}, "
            "data section is {} bytes)", where, data_size - pos, pos, data_size);

  std::vector<StTensor> sorted;
  sorted.reserve(ranges.size());
  for (const auto& r : ranges) sorted.push_back(std::move(st.tensors[r.index]));
  st.tensors = std::move(sorted);
  for (size_t i = 0; i < st.tensors.size(); i++) st.index.emplace(st.tensors[i].name, i);
}

std::string errno_str() { return std::strerror(errno); }

float half_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = 113;
      while (!(mant & 0x400)) mant <<= 1, e--;
      bits = sign | uint32_t(e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 112) << 23 | mant << 13;
  }
  return std::bit_cast<float>(bits);
}

std::string parent_dir(const std::string& path) {
  auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

// Header JSON (padded with spaces to 8-byte alignment of the data section) for `tensors`.
std::string build_header(const std::vector<StWrite>& tensors,
                         const std::map<std::string, std::string>& metadata, uint64_t* data_size) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  for (const auto& t : tensors) {
    LCX_CHECK(!t.name.empty() && t.name != "__metadata__", "safetensors: invalid tensor name {}",
              quote(t.name));
    LCX_CHECK(!h.contains(t.name), "safetensors: duplicate tensor name {}", quote(t.name));
    uint64_t n = dtype_size(t.dtype);
    for (auto d : t.shape) {
      LCX_CHECK(d >= 0, "safetensors: tensor {} has negative shape {}", quote(t.name),
                shape_str(t.shape));
      n *= uint64_t(d);
    }
    LCX_CHECK(n == 0 || t.data, "safetensors: tensor {} has no data", quote(t.name));
    h[t.name] = {{"dtype", to_string(t.dtype)}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  *data_size = off;
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not UTF-8
    fail("safetensors: cannot encode header ({})", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

size_t bytes_of(const StWrite& t) {
  size_t n = dtype_size(t.dtype);
  for (auto d : t.shape) n *= size_t(d);
  return n;
}

}  // namespace

const char* to_string(DType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.t == t) return d.size;
  return 0;
}

const StTensor* SafeTensors::find(std::string_view name) const {
  auto it = index.find(name);
  return it == index.end() ? nullptr : &tensors[it->second];
}

const StTensor& SafeTensors::get(std::string_view name) const {
  const StTensor* t = find(name);
  LCX_CHECK(t, "{}: tensor {} is missing", where, quote(name));
  return *t;
}

SafeTensors safetensors_parse(std::vector<uint8_t> bytes, const std::string& where) {
  auto buf = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
  SafeTensors st;
  st.where = where;
  parse_view(buf->data(), buf->size(), st);
  st.storage = std::move(buf);
  return st;
}

SafeTensors safetensors_read(const std::string& path, const std::string& where_) {
  SafeTensors st;
  st.where = where_.empty() ? path : where_;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LCX_CHECK(fd >= 0, "{}: cannot open ({})", st.where, errno_str());
  struct stat sb;
  if (::fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", st.where);
  }
  size_t size = size_t(sb.st_size);
  if (size < 8) {
    ::close(fd);
    fail("{}: file is {} bytes, shorter than the 8-byte header length (truncated?)", st.where,
         size);
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  LCX_CHECK(m != MAP_FAILED, "{}: cannot map {} bytes ({})", st.where, size,
            std::strerror(map_errno));
  st.storage = std::shared_ptr<const void>(m, [size](const void* q) {
    ::munmap(const_cast<void*>(q), size);
  });
  parse_view(static_cast<const uint8_t*>(m), size, st);
  return st;
}

void safetensors_to_f32(const StTensor& t, float* out, const std::string& where) {
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      if (t.nbytes) std::memcpy(out, p, t.nbytes);
      return;
    case DType::BF16:
      for (size_t i = 0; i < t.numel; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = std::bit_cast<float>(uint32_t(h) << 16);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < t.numel; i++) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      return;
    case DType::F64:
      for (size_t i = 0; i < t.numel; i++) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        // out-of-range double -> float is undefined behaviour; saturate to ±inf explicitly
        out[i] = d > FLT_MAX ? INFINITY : d < -FLT_MAX ? -INFINITY : float(d);
      }
      return;
    default:
      fail("{}: tensor {} has dtype {}, expected a float type (F32, BF16, F16, F64)", where,
           quote(t.name), to_string(t.dtype));
  }
}

std::vector<uint8_t> safetensors_serialize(const std::vector<StWrite>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  uint64_t data_size;
  std::string header = build_header(tensors, metadata, &data_size);
  std::vector<uint8_t> out(8 + header.size());
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  out.reserve(out.size() + data_size);
  for (const auto& t : tensors) {
    auto p = static_cast<const uint8_t*>(t.data);
    out.insert(out.end(), p, p + bytes_of(t));
  }
  return out;
}

void safetensors_write(const std::string& path, const std::vector<StWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  uint64_t data_size;
  std::string header;
  try {
    header = build_header(tensors, metadata, &data_size);
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
  atomic_write_file(path, [&](std::FILE* f) {
    uint64_t n = header.size();
    auto put = [&](const void* p, size_t bytes) {
      LCX_CHECK(bytes == 0 || std::fwrite(p, 1, bytes, f) == bytes, "{}: write failed ({})", path,
                errno_str());
    };
    put(&n, 8);
    put(header.data(), header.size());
    for (const auto& t : tensors) put(t.data, bytes_of(t));
  });
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  LCX_CHECK(fd >= 0, "{}: cannot open directory to fsync ({})", dir, errno_str());
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  LCX_CHECK(rc == 0, "{}: fsync of directory failed ({})", dir, std::strerror(err));
}

void atomic_write_file(const std::string& path, const std::function<void(std::FILE*)>& write) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LCX_CHECK(fd >= 0, "{}: cannot create temp file {} ({})", path, tmp, errno_str());
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("{}: fdopen failed ({})", path, errno_str());
  }
  try {
    write(f);
    LCX_CHECK(std::fflush(f) == 0, "{}: write failed ({})", path, errno_str());
    LCX_CHECK(::fsync(::fileno(f)) == 0, "{}: fsync failed ({})", path, errno_str());
    int rc = std::fclose(f);
    f = nullptr;
    LCX_CHECK(rc == 0, "{}: close failed ({})", path, errno_str());
    if (test_hooks::io_fault_hook) test_hooks::io_fault_hook("file_synced");
    LCX_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "{}: rename from {} failed ({})", path,
              tmp, errno_str());
  } catch (...) {
    if (f) std::fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(parent_dir(path));
}

}  // namespace longctx
