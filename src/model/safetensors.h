// safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
// N bytes of JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str:
// str}}, then the data section; offsets are relative to the data section. DESIGN.md §2.3.
//
// The reader maps the file and validates everything before handing out views; any defect throws
// longctx::Error naming the file (and the tensor, where there is one). The writer streams the
// tensors to a temp file in the same directory, fsyncs, renames and fsyncs the directory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace longctx {

enum class DType { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

const char* to_string(DType t);
size_t dtype_size(DType t);  // bytes per element

// One tensor of a parsed file: a view into the file's bytes (not necessarily aligned).
struct StTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  size_t numel = 0;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
};

// A validated safetensors file. Shares ownership of its bytes (a read-only mmap or a heap
// buffer), so the views in `tensors` stay valid while this object or a copy of it lives.
struct SafeTensors {
  std::string where;                             // prefix of every error message (the file)
  std::vector<StTensor> tensors;                 // sorted by data offset
  std::map<std::string, std::string> metadata;   // "__metadata__"

  const StTensor* find(std::string_view name) const;  // nullptr if absent
  const StTensor& get(std::string_view name) const;   // throws Error naming `where` and the tensor

  std::shared_ptr<const void> storage;  // keeps the bytes alive
  std::map<std::string, size_t, std::less<>> index;  // name -> position in `tensors`
};

// Map and validate `path`. Errors read "<where>: ...", where = path unless given.
SafeTensors safetensors_read(const std::string& path, const std::string& where = "");
// Validate bytes already in memory (tests, fuzzing); takes ownership of `bytes`.
SafeTensors safetensors_parse(std::vector<uint8_t> bytes, const std::string& where);

// Convert any float dtype (F32, F16, BF16, F64) to fp32; other dtypes throw Error naming the
// tensor. `out` holds t.numel floats.
void safetensors_to_f32(const StTensor& t, float* out, const std::string& where);

// A tensor to write: `data` points at numel(shape) · dtype_size(dtype) little-endian bytes.
struct StWrite {
  std::string name;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  DType dtype = DType::F32;
};

// Data section in the order given; header JSON padded with spaces to a multiple of 8 bytes.
// Throws Error on duplicate or reserved names and on I/O failure (the target is left untouched).
void safetensors_write(const std::string& path, const std::vector<StWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
std::vector<uint8_t> safetensors_serialize(const std::vector<StWrite>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

// Atomic file replacement used by the writers above and by checkpoint.cpp: `write(fp)` fills a
// temp file "<path>.tmp.<pid>" in the same directory; then fflush, fsync, rename over `path`,
// fsync the directory. On any failure the temp file is removed and Error names `path`.
void atomic_write_file(const std::string& path, const std::function<void(std::FILE*)>& write);
void fsync_dir(const std::string& dir);  // throws Error naming dir

namespace test_hooks {
// Fault injection for the atomicity tests: when set, called at named points of the writers
// ("file_synced": temp file complete, before its rename; checkpoint.cpp adds its own). It may
// throw or _exit to simulate a crash there.
extern void (*io_fault_hook)(const char* stage);
}  // namespace test_hooks

}  // namespace longctx
