#!/usr/bin/env bash
# Fuzz the checkpoint parsers (safetensors header + tensors, config.json) with libFuzzer for a
# bounded time. Builds tests/fuzz_safetensors.cpp with clang, every longctx source instrumented
# (ASan + UBSan + coverage), seeds a corpus with valid files, runs, fails on any finding.
#   tools/run_fuzz.sh [seconds=60] [build-dir=build-fuzz]
# Findings land in <build-dir>/fuzz_artifacts/ (reproduce: <build-dir>/tests/fuzz_safetensors FILE).
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${2:-$root/build-fuzz}")
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -g -O1 -march=native"
# kernels/cpu/simd.h uses 64-byte vector types: without AVX-512 clang warns (-Wpsabi, fatal with
# -Werror) in a Debug build, and clang cannot always honour `#pragma omp simd` at -O1 with
# sanitizers (-Wpass-failed). The fuzzer does not run those kernels.
san="$san -Wno-psabi -Wno-pass-failed"

# Instrument the libraries too (CMAKE_CXX_FLAGS), not only the fuzz target, or libFuzzer is
# blind to the parser's branches; the fuzz target itself adds -fsanitize=fuzzer,address.
mkdir -p "$build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS="$san" -DLONGCTX_FUZZ=ON -DLONGCTX_TESTS=ON -DLONGCTX_BENCH=OFF \
  -DLONGCTX_CUDA=OFF >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" --target fuzz_safetensors -j"$(nproc)"
fuzzer="$build/tests/fuzz_safetensors"

corpus="$build/fuzz_corpus"
artifacts="$build/fuzz_artifacts"
mkdir -p "$corpus" "$artifacts"
cat >"$build/fuzz_safetensors.dict" <<'DICT'
"{"
"}"
"["
"]"
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"F64\""
"\"I64\""
"\"F8_E4M3\""
"\"model.norm.weight\""
"\"lm_head.weight\""
"\"model.layers.0.mlp.up_proj.weight\""
"\"hidden_size\""
"\"num_hidden_layers\""
"\"num_attention_heads\""
"\"num_key_value_heads\""
"\"intermediate_size\""
"\"vocab_size\""
"\"window\""
"\"alibi\""
"\"attention\""
"\"tie_word_embeddings\""
"\"rope_theta\""
"\"sigmoid_bias\""
"\"model_type\""
"\"swat\""
"18446744073709551615"
"9223372036854775808"
"4294967296"
"2147483648"
"1e999"
"-1"
"\xff\xff\xff\xff\xff\xff\xff\xff"
"\x00\x00\x00\x00\x00\x00\x00\x00"
DICT

# LLVMFuzzerInitialize writes the seeds (valid model.safetensors, BF16 variant, config.json).
echo "run_fuzz: fuzzing for ${secs}s (corpus $corpus)"
cd "$build"  # libFuzzer may drop files (crash-*, fuzz-*.log) in the working directory
set +e
LONGCTX_FUZZ_SEEDS="$corpus" "$fuzzer" "$corpus" -dict="$build/fuzz_safetensors.dict" \
  -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 \
  | tee "$build/fuzz.log" | grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|stat::|Test unit written"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "run_fuzz: FAILED (exit $status); see $build/fuzz.log and $artifacts/" >&2
  exit "$status"
fi
echo "run_fuzz: OK, no findings"
