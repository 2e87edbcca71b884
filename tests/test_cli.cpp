// The `longctx` binary end to end: --help everywhere, and bad inputs give a clear message and
// a non-zero exit code, never a crash.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <unistd.h>

#include "core/rng.h"
#include "data/shard.h"
#include "model/checkpoint.h"
#include "model/model.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

struct CliRun {
  int code;
  std::string out;  // stdout + stderr
};

CliRun run_cli(const std::string& args) {
  std::string cmd = std::string(LONGCTX_BINARY_DIR) + "/longctx " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return CliRun{code, out};
}

fs::path tmpdir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / fmt::format("lcx_cli_{}_{}", name, getpid());
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

#define EXPECT_ERROR(r, needle)                                              \
  do {                                                                       \
    EXPECT_EQ((r).code, 1) << (r).out;                                       \
    EXPECT_NE((r).out.find(needle), std::string::npos) << (r).out;           \
    EXPECT_EQ((r).out.find("terminate called"), std::string::npos) << (r).out; \
  } while (0)

TEST(Cli, HelpOnEveryCommand) {
  for (const char* c : {"", "train ", "generate ", "data ", "data prepare ", "bench ",
                        "bench attention ", "bench train ", "plot "}) {
    CliRun r = run_cli(std::string(c) + "--help");
    EXPECT_EQ(r.code, 0) << c << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << c << r.out;
  }
}

TEST(Cli, TrainMissingDataDir) {
  fs::path d = tmpdir("nodata");
  EXPECT_ERROR(run_cli("train --data " + (d / "missing").string() + " --out " + (d / "o").string()),
               (d / "missing").string());
}

TEST(Cli, TrainUnknownPreset) {
  fs::path d = tmpdir("preset");
  EXPECT_ERROR(run_cli("train --data x --out " + d.string() + " --preset huge"), "unknown preset 'huge'");
}

TEST(Cli, TrainBadConfigFile) {
  fs::path d = tmpdir("cfg");
  std::ofstream(d / "c.json") << "{\"hidden_size\": \"big\"}";
  EXPECT_ERROR(run_cli("train --data x --out " + d.string() + " --config " + (d / "c.json").string()),
               "'hidden_size' must be an integer");
  std::ofstream(d / "bad.json") << "{not json";
  EXPECT_ERROR(run_cli("train --data x --out " + d.string() + " --config " + (d / "bad.json").string()),
               "not valid JSON");
}

TEST(Cli, DeeplyNestedConfigIsAnErrorNotACrash) {  // found by libFuzzer
  fs::path d = tmpdir("deep");
  std::ofstream(d / "c.json") << "{\"hidden_size\": " << std::string(100000, '[')
                              << std::string(100000, ']') << "}";
  EXPECT_ERROR(run_cli("train --data x --out " + d.string() + " --config " + (d / "c.json").string()),
               "must be an integer, got a JSON array");
}

TEST(Cli, GenerateFromTruncatedCheckpoint) {
  fs::path d = tmpdir("trunc");
  Config c;
  c.hidden_size = 32, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.num_key_value_heads = 2;
  c.intermediate_size = 64, c.vocab_size = 50;
  Model m(c, backend_cpu_ref());
  param_init(m.params.data(), m.layout, c, 1);
  checkpoint_save((d / "ck").string(), c, m.params.data(), m.layout);
  fs::path st = d / "ck" / "model.safetensors";
  fs::resize_file(st, fs::file_size(st) - 100);
  CliRun r = run_cli("generate --ckpt " + (d / "ck").string() + " --prompt hi");
  EXPECT_ERROR(r, "model.safetensors");
}

TEST(Cli, GenerateMissingCheckpoint) {
  fs::path d = tmpdir("nock");
  CliRun r = run_cli("generate --ckpt " + (d / "nothing").string() + " --prompt hi");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find((d / "nothing").string()), std::string::npos) << r.out;
}

TEST(Cli, TrainRejectsNonPositiveSizes) {
  fs::path d = tmpdir("sizes");
  shard_write((d / "train.bin").string(), 64, {{1, 5, 6, 2}});
  shard_write((d / "val.bin").string(), 64, {{1, 5, 6, 2}});
  EXPECT_ERROR(run_cli("train --data " + d.string() + " --out " + (d / "o").string() + " --batch 0"),
               "must be > 0");
}

}  // namespace
