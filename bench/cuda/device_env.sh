# Sourced by the bench/cuda/run_*.sh device scripts on the GPU machine, after they set STAGES:
# $OUT, the prebuilt binaries of .devlibs ($BIN) first on the library path (.devlibs/fallback
# last: only what the image lacks), NVLink multicast off in every process (KINDS.md), the packed
# Open MPI (run_hdp_multigpu.sh pack) where the image has no mpirun, and `has STAGE`.
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
BIN=$PWD/.devlibs
export LD_LIBRARY_PATH=$BIN:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}:$BIN/fallback
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ! command -v mpirun > /dev/null && [[ -d $BIN/openmpi ]]; then
  export OPAL_PREFIX=$BIN/openmpi PMIX_INSTALL_PREFIX=$BIN/openmpi/pmix2 PATH=$BIN/openmpi/bin:$PATH
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$BIN/openmpi/pmix2/lib
fi
has() { [[ " $STAGES " == *" $1 "* ]]; }
