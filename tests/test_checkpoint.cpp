// Checkpoints and safetensors (DESIGN.md §2.3): round trips are bitwise; every defect of a file
// gives an Error naming the file and the tensor/field; an interrupted save keeps the previous
// checkpoint loadable.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "test_util.h"
#include "model/checkpoint.h"  // checkpoint_save/load, train_state_*, checkpoint_check_config
#include "model/safetensors.h"  // safetensors_read/parse/write/serialize

namespace fs = std::filesystem;
using namespace longctx;
using nlohmann::json;

namespace {

using longctx::testing::expect_error;

// A fresh directory per test, removed afterwards.
struct TmpDir {
  std::string path;
  TmpDir() {
    static int n = 0;
    path = fmt::format("{}/longctx_ckpt_{}_{}", fs::temp_directory_path().string(), ::getpid(), n++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TmpDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};


Config tiny_config(bool tied, int kv_heads) {
  Config c;
  c.hidden_size = 16, c.num_hidden_layers = 2, c.num_attention_heads = 4;
  c.num_key_value_heads = kv_heads, c.intermediate_size = 32, c.vocab_size = 40, c.window = 8;
  c.tie_word_embeddings = tied;
  c.sigmoid_bias = -2.0794415f;
  return c;
}

std::vector<float> init_params(const Config& c, const ParamLayout& l, unsigned long long seed) {
  std::vector<float> p(l.total);
  param_init(p.data(), l, c, seed);
  return p;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  write_file(path, std::string(bytes.begin(), bytes.end()));
}
std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Raw safetensors bytes: 8-byte length (default: the header's) + header + data.
std::vector<uint8_t> raw_st(const std::string& header, size_t data_bytes, int64_t len = -1) {
  uint64_t n = len < 0 ? header.size() : uint64_t(len);
  std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
  for (int i = 0; i < 8; i++) b[i] = uint8_t(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  return b;
}

// Parse raw bytes from a file on disk, so messages carry a real path.
void parse_file(const TmpDir& d, const std::vector<uint8_t>& bytes) {
  write_file(d / "x.safetensors", bytes);
  safetensors_read(d / "x.safetensors");
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// ---------------------------------------------------------------- safetensors format

TEST(Safetensors, RoundTripAllFloatTypes) {
  std::vector<float> f32 = {1.5f, -2.25f, 3e-8f, 0.0f, 65504.0f, -1e30f};
  std::vector<uint16_t> bf16 = {0x3f80, 0xc000, 0x0001, 0x7f80};            // 1, -2, tiny, inf
  std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x7bff, 0x8000};  // 1,-2,2^-24,inf,65504,-0
  std::vector<double> f64 = {0.1, -1e300, 1e-300};
  std::vector<uint8_t> bytes = safetensors_serialize(
      {{"a", {2, 3}, f32.data()}, {"b", {4}, bf16.data(), DType::BF16},
       {"c", {2, 3}, f16.data(), DType::F16}, {"d", {3}, f64.data(), DType::F64},
       {"empty", {0, 5}, nullptr}},
      {{"format", "pt"}, {"note", "x"}});
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u) << "data section must start 8-byte aligned";
  SafeTensors st = safetensors_parse(bytes, "mem");
  ASSERT_EQ(st.tensors.size(), 5u);
  EXPECT_EQ(st.metadata.at("note"), "x");
  std::vector<float> out(6);
  safetensors_to_f32(st.get("a"), out.data(), "mem");
  EXPECT_TRUE(same_bits(out, f32));
  safetensors_to_f32(st.get("b"), out.data(), "mem");
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[3], INFINITY);
  safetensors_to_f32(st.get("c"), out.data(), "mem");
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], std::ldexp(1.0f, -24));
  EXPECT_EQ(out[3], INFINITY);
  EXPECT_EQ(out[4], 65504.0f);
  EXPECT_TRUE(std::signbit(out[5]) && out[5] == 0.0f);
  safetensors_to_f32(st.get("d"), out.data(), "mem");
  EXPECT_EQ(out[0], 0.1f);
  EXPECT_EQ(out[1], -INFINITY);
  EXPECT_EQ(st.get("empty").numel, 0u);
  EXPECT_EQ(st.get("empty").shape, (std::vector<int64_t>{0, 5}));
}

TEST(Safetensors, UnalignedDataConverts) {
  // An odd header length puts the data at an odd address: views are unaligned, still convert.
  float v[2] = {1.25f, -7.0f};
  std::string h = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} )";
  ASSERT_EQ(h.size() % 2, 1u);
  auto b = raw_st(h, 0);
  b.insert(b.end(), reinterpret_cast<uint8_t*>(v), reinterpret_cast<uint8_t*>(v) + 8);
  SafeTensors st = safetensors_parse(b, "mem");
  float out[2];
  safetensors_to_f32(st.get("t"), out, "mem");
  EXPECT_EQ(out[0], 1.25f);
  EXPECT_EQ(out[1], -7.0f);
}

TEST(Safetensors, TruncatedFile) {
  TmpDir d;
  expect_error([&] { parse_file(d, {1, 2, 3, 4, 5}); },
               {d / "x.safetensors", "5 bytes, shorter than the 8-byte header length"});
  expect_error([&] { parse_file(d, {}); }, {d / "x.safetensors", "0 bytes"});
  // Cut inside the data section: the last tensor runs past the end.
  float v[4] = {1, 2, 3, 4};
  auto good = safetensors_serialize({{"w1", {2}, v}, {"w2", {2}, v + 2}});
  good.resize(good.size() - 3);
  expect_error([&] { parse_file(d, good); },
               {d / "x.safetensors", "tensor 'w2'", "run past the 13-byte data section", "truncated"});
  // Cut inside the header.
  good.resize(20);
  expect_error([&] { parse_file(d, good); }, {d / "x.safetensors", "exceeds the 12 bytes that follow"});
}

TEST(Safetensors, BadHeaderLength) {
  TmpDir d;
  std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expect_error([&] { parse_file(d, raw_st(h, 4, 0)); }, {d / "x.safetensors", "header length is 0"});
  expect_error([&] { parse_file(d, raw_st(h, 4, int64_t(1) << 40)); },
               {d / "x.safetensors", "header length 1099511627776 exceeds the 100 MB limit"});
  expect_error([&] { parse_file(d, raw_st(h, 4, 5000)); },
               {d / "x.safetensors", "header length 5000 exceeds the"});
  // Length shorter than the JSON: the header is cut mid-object.
  expect_error([&] { parse_file(d, raw_st(h, 4, 10)); }, {d / "x.safetensors", "not valid JSON"});
}

TEST(Safetensors, HeaderNotJsonOrNotObject) {
  TmpDir d;
  expect_error([&] { parse_file(d, raw_st("{\"a\": nope}", 0)); },
               {d / "x.safetensors", "header is not valid JSON"});
  expect_error([&] { parse_file(d, raw_st("[1,2,3]", 0)); },
               {d / "x.safetensors", "header does not start with '{'"});
  expect_error([&] { parse_file(d, raw_st("{} trailing", 0)); }, {"not valid JSON"});
  expect_error([&] { parse_file(d, raw_st("{\"a\": 5}", 0)); },
               {d / "x.safetensors", "tensor 'a'", "entry must be an object"});
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  expect_error([&] { parse_file(d, raw_st(deep, 0)); }, {"nests deeper than"});
  // Spaces after the JSON are padding, not an error.
  EXPECT_NO_THROW(parse_file(d, raw_st("{}      ", 0)));
}

TEST(Safetensors, UnknownDtype) {
  TmpDir d;
  auto h = R"({"model.norm.weight":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})";
  expect_error([&] { parse_file(d, raw_st(h, 4)); },
               {d / "x.safetensors", "tensor 'model.norm.weight'", "unknown dtype 'F33'", "BF16"});
  // Known but non-float dtypes parse; converting them names the tensor and dtype.
  auto ok = R"({"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})";
  SafeTensors st = safetensors_parse(raw_st(ok, 8), "mem");
  EXPECT_EQ(st.get("ids").dtype, DType::I64);
  float out[2];
  expect_error([&] { safetensors_to_f32(st.get("ids"), out, "mem"); }, {"tensor 'ids'", "dtype I64"});
}

TEST(Safetensors, BadShape) {
  TmpDir d;
  auto mk = [](const std::string& shape) {
    return raw_st(R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,4]}})", 4);
  };
  expect_error([&] { parse_file(d, mk("5")); }, {"tensor 'w'", "shape must be a list"});
  expect_error([&] { parse_file(d, mk("[-1]")); }, {"tensor 'w'", "shape[0] must be a non-negative integer"});
  expect_error([&] { parse_file(d, mk("[1.0]")); }, {"tensor 'w'", "shape[0] must be a non-negative integer"});
  expect_error([&] { parse_file(d, mk("[\"1\"]")); }, {"tensor 'w'", "shape[0]"});
  expect_error([&] { parse_file(d, mk("[4294967296,4294967296]")); }, {"tensor 'w'", "overflow"});
}

TEST(Safetensors, BadDataOffsets) {
  TmpDir d;
  auto mk = [](const std::string& off) {
    return raw_st(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)" + off + "}}", 4);
  };
  expect_error([&] { parse_file(d, mk("[0]")); }, {"tensor 'w'", "data_offsets must be a list [begin, end]"});
  expect_error([&] { parse_file(d, mk("[4,0]")); }, {"tensor 'w'", "end before they begin"});
  expect_error([&] { parse_file(d, mk("[0,-4]")); }, {"tensor 'w'", "data_offsets[1] must be a non-negative"});
  expect_error([&] { parse_file(d, mk("{}")); }, {"tensor 'w'", "data_offsets must be a list"});
  expect_error([&] { parse_file(d, raw_st(R"({"w":{"dtype":"F32","shape":[1]}})", 4)); },
               {"tensor 'w'", "field 'data_offsets' is missing"});
  expect_error([&] {
    parse_file(d, raw_st(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4));
  }, {"tensor 'w'", "unknown field 'x'"});
}

TEST(Safetensors, ShapeByteRangeMismatch) {
  TmpDir d;
  auto h = R"({"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})";
  expect_error([&] { parse_file(d, raw_st(h, 20)); },
               {d / "x.safetensors", "tensor 'model.layers.0.mlp.up_proj.weight'",
                "data_offsets [0,20] hold 20 bytes but F32 shape [2,3] needs 24 bytes"});
}

TEST(Safetensors, OverlapHoleTrailing) {
  TmpDir d;
  auto two = [](int b0, int e0, int b1, int e1) {
    return fmt::format(R"({{"a":{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}},)"
                       R"("b":{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}}}})",
                       b0, e0, b1, e1);
  };
  expect_error([&] { parse_file(d, raw_st(two(0, 8, 4, 12), 12)); },
               {d / "x.safetensors", "tensor 'b' bytes [4,12] overlap tensor 'a' bytes [0,8]"});
  expect_error([&] { parse_file(d, raw_st(two(0, 8, 12, 20), 20)); },
               {d / "x.safetensors", "data bytes [8,12) belong to no tensor (hole before tensor 'b')"});
  expect_error([&] { parse_file(d, raw_st(two(4, 12, 12, 20), 20)); },
               {"data bytes [0,4) belong to no tensor (hole before tensor 'a')"});
  expect_error([&] { parse_file(d, raw_st(two(0, 8, 8, 16), 20)); },
               {d / "x.safetensors", "4 trailing bytes after the last tensor"});
  expect_error([&] { parse_file(d, raw_st("{}", 3)); }, {"3 trailing bytes"});
  EXPECT_NO_THROW(parse_file(d, raw_st(two(8, 16, 0, 8), 16)));  // any order that tiles is fine
}

TEST(Safetensors, DuplicateTensorAndMetadata) {
  TmpDir d;
  auto e = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  expect_error([&] { parse_file(d, raw_st(fmt::format(R"({{"w":{},"w":{}}})", e, e), 4)); },
               {d / "x.safetensors", "tensor 'w' appears twice"});
  expect_error([&] { parse_file(d, raw_st(R"({"__metadata__":{"step":3}})", 0)); },
               {d / "x.safetensors", "__metadata__ value 'step' must be a string"});
  expect_error([&] { parse_file(d, raw_st(R"({"__metadata__":[]})", 0)); },
               {"__metadata__ must be an object"});
}

TEST(Safetensors, WriteIsAtomic) {
  TmpDir d;
  float a[2] = {1, 2}, b[2] = {3, 4};
  safetensors_write(d / "w.safetensors", {{"x", {2}, a}});
  const std::string before = read_file(d / "w.safetensors");
  test_hooks::io_fault_hook = [](const char* stage) {
    if (std::string(stage) == "file_synced") throw Error("injected crash");
  };
  expect_error([&] { safetensors_write(d / "w.safetensors", {{"x", {2}, b}}); }, {"injected crash"});
  test_hooks::io_fault_hook = nullptr;
  EXPECT_EQ(read_file(d / "w.safetensors"), before);
  int files = 0;
  for (auto& e : fs::directory_iterator(d.path)) files++, (void)e;
  EXPECT_EQ(files, 1) << "temp file left behind";
  expect_error([&] { safetensors_write(d / "w.safetensors", {{"x", {2}, a}, {"x", {2}, b}}); },
               {d / "w.safetensors", "duplicate tensor name 'x'"});
  expect_error([&] { safetensors_write(d / "nodir/w.safetensors", {{"x", {2}, a}}); },
               {d / "nodir/w.safetensors", "cannot create temp file"});
}

// ---------------------------------------------------------------- checkpoint round trips

class CheckpointRoundTrip : public ::testing::TestWithParam<std::pair<bool, int>> {};

TEST_P(CheckpointRoundTrip, BitwiseIdentical) {
  auto [tied, kv] = GetParam();
  TmpDir d;
  Config c = tiny_config(tied, kv);
  ParamLayout l = param_layout(c);
  std::vector<float> p = init_params(c, l, 7);
  p[3] = -0.0f, p[5] = 1e-40f;  // signed zero and a subnormal survive
  write_file(d / "tok.model", std::string("sentencepiece\0bytes", 19));
  checkpoint_save(d / "ck", c, p.data(), l, nullptr, d / "tok.model");
  LoadedModel m = checkpoint_load(d / "ck/");
  EXPECT_EQ(config_to_json(m.config), config_to_json(c));
  EXPECT_EQ(m.layout.total, l.total);
  EXPECT_TRUE(same_bits(m.params, p));
  EXPECT_EQ(read_file(d / "ck/tokenizer.model"), read_file(d / "tok.model"));
  EXPECT_FALSE(train_state_exists(d / "ck"));
  EXPECT_FALSE(train_state_exists(d / "no_such_dir"));
  EXPECT_EQ(safetensors_read(d / "ck/model.safetensors").find("lm_head.weight") != nullptr, !tied);
  EXPECT_FALSE(fs::exists(d / "ck.tmp"));
  // Saving again over it (replace path) works too.
  p[0] = 42.0f;
  checkpoint_save(d / "ck", c, p.data(), l);
  EXPECT_TRUE(same_bits(checkpoint_load(d / "ck").params, p));
  EXPECT_FALSE(fs::exists(d / "ck/tokenizer.model"));
}

INSTANTIATE_TEST_SUITE_P(TiedUntiedGqa, CheckpointRoundTrip,
                         ::testing::Values(std::pair{true, 4}, std::pair{false, 4},
                                           std::pair{true, 2}, std::pair{false, 1}),
                         [](const auto& info) {
                           return fmt::format("{}_kv{}", info.param.first ? "tied" : "untied",
                                              info.param.second);
                         });

TEST(Checkpoint, TrainStateRoundTrip) {
  TmpDir d;
  Config c = tiny_config(false, 2);
  ParamLayout l = param_layout(c);
  std::vector<float> p = init_params(c, l, 1);
  TrainState ts;
  ts.step = 1234567890123;
  ts.m = init_params(c, l, 2);
  ts.v = init_params(c, l, 3);
  Rng rng(99);
  for (int i = 0; i < 7; i++) rng.next_u32();  // mid-block: buf/used matter
  ts.meta = {{"rng", rng_to_json(rng)}, {"data_cursor", {{"shard", 3}, {"offset", 123456789}}}};
  checkpoint_save(d / "ck", c, p.data(), l, &ts);
  ASSERT_TRUE(train_state_exists(d / "ck"));
  TrainState got = train_state_load(d / "ck", l.total);
  EXPECT_EQ(got.step, ts.step);
  EXPECT_TRUE(same_bits(got.m, ts.m));
  EXPECT_TRUE(same_bits(got.v, ts.v));
  EXPECT_EQ(got.meta, ts.meta);
  Rng r2 = rng_from_json(got.meta["rng"], "test");
  for (int i = 0; i < 10; i++) EXPECT_EQ(r2.next_u32(), rng.next_u32());

  expect_error([&] { train_state_load(d / "ck", l.total + 1); },
               {d / "ck/training_state.safetensors", "tensor 'adam.m' has shape",
                fmt::format("expects [{}]", l.total + 1)});
  expect_error([&] { rng_from_json(json{{"seed", 1}}, "resume"); }, {"resume", "'counter'"});
  TrainState bad = ts;
  bad.v.pop_back();
  expect_error([&] { checkpoint_save(d / "ck", c, p.data(), l, &bad); }, {"AdamW state"});
}

TEST(Checkpoint, TrainStateCorrupt) {
  TmpDir d;
  Config c = tiny_config(true, 4);
  ParamLayout l = param_layout(c);
  std::vector<float> p = init_params(c, l, 1);
  checkpoint_save(d / "ck", c, p.data(), l);
  const std::string path = d / "ck/training_state.safetensors";
  expect_error([&] { train_state_load(d / "ck", l.total); }, {path, "cannot open"});
  int64_t n = int64_t(l.total);
  auto write = [&](std::map<std::string, std::string> meta) {
    safetensors_write(path, {{"adam.m", {n}, p.data()}, {"adam.v", {n}, p.data()}}, meta);
  };
  write({{"format", "longctx.train_state.v1"}, {"trainer", "{}"}});
  expect_error([&] { train_state_load(d / "ck", l.total); }, {path, "'step' is missing"});
  write({{"format", "longctx.train_state.v1"}, {"step", "12x"}, {"trainer", "{}"}});
  expect_error([&] { train_state_load(d / "ck", l.total); }, {path, "step '12x'"});
  write({{"format", "longctx.train_state.v1"}, {"step", "12"}, {"trainer", "{oops"}});
  expect_error([&] { train_state_load(d / "ck", l.total); }, {path, "trainer", "not valid JSON"});
  write({{"format", "other"}, {"step", "12"}, {"trainer", "{}"}});
  expect_error([&] { train_state_load(d / "ck", l.total); }, {path, "format 'other'"});
}

TEST(Checkpoint, LoadsBf16AndF16) {
  TmpDir d;
  Config c = tiny_config(true, 4);
  ParamLayout l = param_layout(c);
  std::vector<float> p = init_params(c, l, 5);
  checkpoint_save(d / "ck", c, p.data(), l);
  // Rewrite model.safetensors with BF16 (truncated) tensors, except the norms in F16 (1.0 exact).
  std::vector<uint16_t> half(l.total);
  std::vector<float> expect(l.total);
  std::vector<StWrite> ws;
  for (const auto& t : l.tensors) {
    bool norm = t.shape.size() == 1;
    for (size_t i = t.offset; i < t.offset + t.numel; i++) {
      uint32_t bits;
      std::memcpy(&bits, &p[i], 4);
      half[i] = norm ? 0x3c00 : uint16_t(bits >> 16);
      uint32_t back = uint32_t(half[i]) << 16;
      std::memcpy(&expect[i], &back, 4);
      if (norm) expect[i] = 1.0f;
    }
    ws.push_back({t.name, t.shape, half.data() + t.offset, norm ? DType::F16 : DType::BF16});
  }
  safetensors_write(d / "ck/model.safetensors", ws);
  EXPECT_TRUE(same_bits(checkpoint_load(d / "ck").params, expect));
}

// ---------------------------------------------------------------- checkpoint validation

struct BadCheckpoint : ::testing::Test {
  TmpDir d;
  Config c = tiny_config(true, 2);
  ParamLayout l = param_layout(c);
  std::vector<float> p = init_params(c, l, 11);
  std::string model = d / "ck/model.safetensors";
  std::string cfg = d / "ck/config.json";
  void SetUp() override { checkpoint_save(d / "ck", c, p.data(), l); }
  // Rewrite model.safetensors with the layout's tensors, edited by `edit`.
  void rewrite(const std::function<void(std::vector<StWrite>&)>& edit) {
    std::vector<StWrite> ws;
    for (const auto& t : l.tensors) ws.push_back({t.name, t.shape, p.data() + t.offset});
    edit(ws);
    safetensors_write(model, ws);
  }
  void load() { checkpoint_load(d / "ck"); }
};

TEST_F(BadCheckpoint, TensorMissing) {
  rewrite([](auto& ws) {
    std::erase_if(ws, [](auto& w) { return w.name == "model.layers.1.mlp.up_proj.weight"; });
  });
  expect_error([&] { load(); }, {"checkpoint " + model,
                                 "tensor 'model.layers.1.mlp.up_proj.weight' is missing"});
}

TEST_F(BadCheckpoint, UnexpectedTensor) {
  float x = 0;
  rewrite([&](auto& ws) { ws.push_back({"model.layers.9.extra.weight", {1}, &x}); });
  expect_error([&] { load(); },
               {"checkpoint " + model, "unexpected tensor 'model.layers.9.extra.weight'"});
  rewrite([&](auto& ws) { ws.push_back({"lm_head.weight", {40, 16}, p.data()}); });
  expect_error([&] { load(); },
               {model, "unexpected tensor 'lm_head.weight'", "tie_word_embeddings: true"});
}

TEST_F(BadCheckpoint, ShapeMismatchVsConfig) {
  auto j = config_to_json(c);
  j["intermediate_size"] = 48;
  write_file(cfg, j.dump());
  std::string msg = expect_error([&] { load(); }, {});
  EXPECT_EQ(msg, "checkpoint " + model +
                     ": tensor 'model.layers.0.mlp.gate_proj.weight' has shape [32,16], config "
                     "expects [48,16]");
}

TEST_F(BadCheckpoint, WrongDtype) {
  std::vector<int32_t> ids(16);
  rewrite([&](auto& ws) {
    for (auto& w : ws)
      if (w.name == "model.norm.weight") w.data = ids.data(), w.dtype = DType::I32;
  });
  expect_error([&] { load(); }, {model, "tensor 'model.norm.weight' has dtype I32"});
}

TEST_F(BadCheckpoint, HugeLayerCountFailsFast) {
  auto j = config_to_json(c);
  j["num_hidden_layers"] = 2000000000;
  write_file(cfg, j.dump());
  expect_error([&] { load(); }, {model, "tensor 'model.layers.2.input_layernorm.weight' is missing"});
}

TEST_F(BadCheckpoint, CorruptModelFile) {
  std::string bytes = read_file(model);
  write_file(model, bytes.substr(0, bytes.size() - 1));
  expect_error([&] { load(); }, {"checkpoint " + model, "tensor 'model.norm.weight'", "truncated"});
  write_file(model, bytes.substr(0, 6));
  expect_error([&] { load(); }, {"checkpoint " + model, "shorter than the 8-byte header length"});
  fs::remove(model);
  expect_error([&] { load(); }, {"checkpoint " + model, "cannot open"});
}

TEST_F(BadCheckpoint, ConfigInvalid) {
  const std::string where = "checkpoint " + cfg;
  write_file(cfg, "{\"hidden_size\": 16,");
  expect_error([&] { load(); }, {where, "not valid JSON"});
  write_file(cfg, "[]");
  expect_error([&] { load(); }, {where, "config must be a JSON object"});
  auto j = config_to_json(c);
  j.erase("hidden_size");
  write_file(cfg, j.dump());
  expect_error([&] { load(); }, {where, "required field 'hidden_size' is missing"});
  j = config_to_json(c);
  j["hidden_size"] = "big";
  write_file(cfg, j.dump());
  expect_error([&] { load(); }, {where, "field 'hidden_size' must be an integer", "\"big\""});
  j = config_to_json(c);
  j["tie_word_embeddings"] = 1;
  write_file(cfg, j.dump());
  expect_error([&] { load(); }, {where, "'tie_word_embeddings' must be a boolean"});
  j = config_to_json(c);
  j["hidden_size"] = 18;
  write_file(cfg, j.dump());
  expect_error([&] { load(); }, {where, "hidden_size 18 is not divisible by num_attention_heads 4"});
  j = config_to_json(c);
  j["attention"] = "linear";
  write_file(cfg, j.dump());
  expect_error([&] { load(); }, {where, "attention 'linear'"});
  write_file(cfg, "{\"a\":" + std::string(5000, '[') + std::string(5000, ']') + "}");
  expect_error([&] { load(); }, {where, "nests deeper"});
  fs::remove(cfg);
  expect_error([&] { load(); }, {where, "cannot open"});
  expect_error([&] { checkpoint_load(d / "nothing"); }, {d / "nothing", "directory not found"});
}

TEST(Checkpoint, ConfigMismatchOnResume) {
  Config a = tiny_config(true, 4), b = a;
  EXPECT_NO_THROW(checkpoint_check_config(a, b, "resume ck"));
  b.hidden_size = 32;
  expect_error([&] { checkpoint_check_config(a, b, "resume ck"); },
               {"resume ck: config mismatch: hidden_size is 32 in the checkpoint, but 16 in this run"});
  b = a;
  b.window = 4;
  expect_error([&] { checkpoint_check_config(a, b, "resume ck"); }, {"window is 4", "but 8"});
}

// ---------------------------------------------------------------- atomic save

namespace {
const char* kStages[] = {"tmp_created", "model_written", "train_state_written", "tokenizer_written",
                         "config_written", "before_swap", "moved_old", "swapped"};
const char* g_crash_stage = nullptr;
}  // namespace

// Every stage of an interrupted save — by an exception or by the process dying there — leaves a
// checkpoint that loads as either the complete old one or the complete new one.
class AtomicSave : public ::testing::TestWithParam<bool> {};  // param: force the rename fallback

TEST_P(AtomicSave, CrashAtEveryStage) {
  test_hooks::checkpoint_no_exchange = GetParam();
  TmpDir d;
  Config c = tiny_config(false, 2);
  ParamLayout l = param_layout(c);
  std::vector<float> a = init_params(c, l, 1), b = init_params(c, l, 2);
  TrainState ts{5, a, b, json::object()};
  write_file(d / "tok.model", "tok");
  const std::string ck = d / "ck";
  for (const char* stage : kStages) {
    for (bool by_exit : {false, true}) {
      SCOPED_TRACE(fmt::format("stage {} {}", stage, by_exit ? "_exit" : "throw"));
      fs::remove_all(ck);
      fs::remove_all(ck + ".old");
      checkpoint_save(ck, c, a.data(), l, &ts, d / "tok.model");
      g_crash_stage = stage;
      test_hooks::io_fault_hook = [](const char* s) {
        if (std::strcmp(s, g_crash_stage) != 0) return;
        if (std::getenv("LONGCTX_CRASH_EXIT")) ::_exit(42);
        throw Error("injected crash");
      };
      bool crashed;
      if (by_exit) {
        pid_t pid = ::fork();
        if (pid == 0) {
          ::setenv("LONGCTX_CRASH_EXIT", "1", 1);
          try {
            checkpoint_save(ck, c, b.data(), l, &ts, d / "tok.model");
          } catch (...) {
            ::_exit(1);
          }
          ::_exit(0);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        ASSERT_TRUE(WIFEXITED(status));
        crashed = WEXITSTATUS(status) == 42;
        ASSERT_TRUE(crashed || WEXITSTATUS(status) == 0) << "child failed";
      } else {
        crashed = false;
        try {
          checkpoint_save(ck, c, b.data(), l, &ts, d / "tok.model");
        } catch (const Error& e) {
          crashed = true;
        }
      }
      test_hooks::io_fault_hook = nullptr;
      bool reached = std::strcmp(stage, "moved_old") != 0 || GetParam();  // fallback only
      EXPECT_EQ(crashed, reached);
      bool done = !crashed || std::strcmp(stage, "swapped") == 0;  // the new one is in place
      LoadedModel m = checkpoint_load(ck);
      EXPECT_TRUE(same_bits(m.params, done ? b : a));
      EXPECT_EQ(train_state_load(ck, l.total).step, 5);
      // The next save recovers: clean directory, newest data.
      checkpoint_save(ck, c, b.data(), l);
      EXPECT_TRUE(same_bits(checkpoint_load(ck).params, b));
      EXPECT_FALSE(fs::exists(ck + ".tmp"));
      EXPECT_FALSE(fs::exists(ck + ".old"));
    }
  }
  test_hooks::checkpoint_no_exchange = false;
}

INSTANTIATE_TEST_SUITE_P(ExchangeOrFallback, AtomicSave, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "fallback" : "exchange"; });

TEST(Checkpoint, StrayTempFilesAreHarmless) {
  TmpDir d;
  Config c = tiny_config(true, 4);
  ParamLayout l = param_layout(c);
  std::vector<float> a = init_params(c, l, 1);
  checkpoint_save(d / "ck", c, a.data(), l);
  fs::create_directories(d / "ck.tmp");
  write_file(d / "ck.tmp/model.safetensors", "garbage");
  write_file(d / "ck/model.safetensors.tmp.999", "garbage");
  EXPECT_TRUE(same_bits(checkpoint_load(d / "ck").params, a));
  checkpoint_save(d / "ck", c, a.data(), l);
  EXPECT_TRUE(same_bits(checkpoint_load(d / "ck").params, a));
  EXPECT_FALSE(fs::exists(d / "ck.tmp"));
}

TEST(Checkpoint, RefusesToReplaceOtherDirectories) {
  TmpDir d;
  Config c = tiny_config(true, 4);
  ParamLayout l = param_layout(c);
  std::vector<float> a = init_params(c, l, 1);
  fs::create_directories(d / "run");
  write_file(d / "run/metrics.jsonl", "{}\n");
  expect_error([&] { checkpoint_save(d / "run", c, a.data(), l); },
               {d / "run", "is not a checkpoint", "refusing"});
  EXPECT_EQ(read_file(d / "run/metrics.jsonl"), "{}\n");
  write_file(d / "file", "x");
  expect_error([&] { checkpoint_save(d / "file", c, a.data(), l); }, {"not a directory"});
  fs::create_directories(d / "empty");
  checkpoint_save(d / "empty", c, a.data(), l);  // an empty directory may be used
  EXPECT_TRUE(same_bits(checkpoint_load(d / "empty").params, a));
  expect_error([&] { checkpoint_save(d / "ck2", c, a.data(), l, nullptr, d / "no.model"); },
               {"tokenizer", d / "no.model", "cannot open"});
}
