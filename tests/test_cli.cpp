// The `longctx` binary end to end: --help everywhere, and bad inputs give a clear message and
// a non-zero exit code, never a crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/rng.h"
#include "data/shard.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace longctx;

namespace {

using longctx::testing::run_cli;
using longctx::testing::TempDir;

TEST(Cli, HelpOnEveryCommand) {
  for (const char* c : {"", "train ", "generate ", "data ", "data prepare ", "bench ",
                        "bench attention ", "bench train ", "plot "}) {
    auto r = run_cli(std::string(c) + "--help");
    EXPECT_EQ(r.code, 0) << c << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << c << r.out;
  }
}

TEST(Cli, TrainMissingDataDir) {
  TempDir tmp("cli_nodata");
  const fs::path& d = tmp.path;
  EXPECT_CLI_ERROR(run_cli("train --data " + (d / "missing").string() + " --out " + (d / "o").string()),
               (d / "missing").string());
}

TEST(Cli, TrainUnknownPreset) {
  TempDir tmp("cli_preset");
  const fs::path& d = tmp.path;
  EXPECT_CLI_ERROR(run_cli("train --data x --out " + d.string() + " --preset huge"), "unknown preset 'huge'");
}

TEST(Cli, TrainBadConfigFile) {
  TempDir tmp("cli_cfg");
  const fs::path& d = tmp.path;
  std::ofstream(d / "c.json") << "{\"hidden_size\": \"big\"}";
  EXPECT_CLI_ERROR(run_cli("train --data x --out " + d.string() + " --config " + (d / "c.json").string()),
               "'hidden_size' must be an integer");
  std::ofstream(d / "bad.json") << "{not json";
  EXPECT_CLI_ERROR(run_cli("train --data x --out " + d.string() + " --config " + (d / "bad.json").string()),
               "not valid JSON");
}

TEST(Cli, DeeplyNestedConfigIsAnErrorNotACrash) {  // found by libFuzzer
  TempDir tmp("cli_deep");
  const fs::path& d = tmp.path;
  std::ofstream(d / "c.json") << "{\"hidden_size\": " << std::string(100000, '[')
                              << std::string(100000, ']') << "}";
  EXPECT_CLI_ERROR(run_cli("train --data x --out " + d.string() + " --config " + (d / "c.json").string()),
               "must be an integer, got a JSON array");
}

TEST(Cli, GenerateFromTruncatedCheckpoint) {
  TempDir tmp("cli_trunc");
  const fs::path& d = tmp.path;
  Config c;
  c.hidden_size = 32, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.num_key_value_heads = 2;
  c.intermediate_size = 64, c.vocab_size = 50;
  Model m(c, backend_cpu_ref());
  param_init(m.params.data(), m.layout, c, 1);
  checkpoint_save((d / "ck").string(), c, m.params.data(), m.layout);
  fs::path st = d / "ck" / "model.safetensors";
  fs::resize_file(st, fs::file_size(st) - 100);
  auto r = run_cli("generate --ckpt " + (d / "ck").string() + " --prompt hi");
  EXPECT_CLI_ERROR(r, "model.safetensors");
}

TEST(Cli, GenerateMissingCheckpoint) {
  TempDir tmp("cli_nock");
  const fs::path& d = tmp.path;
  auto r = run_cli("generate --ckpt " + (d / "nothing").string() + " --prompt hi");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find((d / "nothing").string()), std::string::npos) << r.out;
}

TEST(Cli, TrainChunkIsOneProcess) {
  TempDir d("chunk_hdp");
  EXPECT_CLI_ERROR(run_cli("train --hdp --chunk 64 --data x --out " + d.path.string()),
                   "--chunk trains a long sequence in one process");
  EXPECT_CLI_ERROR(run_cli("train --chunk -5 --data x --out " + d.path.string()), "--chunk must be ≥ 0");
  EXPECT_CLI_ERROR(run_cli("bench train --chunk -5"), "--chunk must be ≥ 0");
  EXPECT_CLI_ERROR(run_cli("bench train --chunk 64 --chunk-halo disk"), "--chunk-halo must be device or host");
  EXPECT_CLI_ERROR(run_cli("bench train --steps 0"), "--steps must be ≥ 1");
}

TEST(Cli, TrainRejectsNonPositiveSizes) {
  TempDir tmp("cli_sizes");
  const fs::path& d = tmp.path;
  shard_write((d / "train.bin").string(), 64, {{1, 5, 6, 2}});
  shard_write((d / "val.bin").string(), 64, {{1, 5, 6, 2}});
  EXPECT_CLI_ERROR(run_cli("train --data " + d.string() + " --out " + (d / "o").string() + " --batch 0"),
               "must be > 0");
}

}  // namespace
