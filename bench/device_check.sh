#!/usr/bin/env bash
# Runs the test suites on the device machine from binaries built on a machine
# with Check installed (the device has neither libtool nor Check):
#   here:   (cd _build && make check TESTS=) && bench/pack_device.sh   (_dev_pkg/, _devlibs/)
#   device: bench/device_check.sh _dev_pkg            (carry _dev_pkg and _devlibs)
#           bench/device_check.sh _dev_pkg --sanitize  (compute-sanitizer on the GPU suites)
# Writes logs under $OUT when set.
set -uo pipefail
build=${1:-_dev_pkg}
mode=${2:-}
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/fg_device_check}
mkdir -p "$out"
export LD_LIBRARY_PATH="$top/$build/lib:$top/_devlibs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
cd "$top/$build" || exit 1
status=0
# run_suite TEST LOG [VAR=value...]: one suite without forking, its Check summary line
run_suite() {
  local t=$1 log=$2
  shift 2
  env "$@" CK_FORK=no "./$t" > "$log" 2>&1
  local rc=$?
  echo "$(basename "$t")${1:+ ($*)}: exit $rc, $(grep -hE '^[0-9]+%: Checks' "$log")"
  [ $rc -eq 0 ] || status=1
}
[ "$mode" = --sanitize ] || for t in tests/test_*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  case $t in *.o|*.log|*.trs) continue ;; esac
  run_suite "$t" "$out/$(basename "$t").log"
done
# On a Hopper GPU the bf16/f16 D64/D128 forward runs the wgmma kernel; the
# attention suites once more with it off keep the mma.sync kernel covered.
[ "$mode" = --sanitize ] || for t in tests/test_cuda_attention*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  case $t in *.o|*.log|*.trs) continue ;; esac
  run_suite "$t" "$out/$(basename "$t")-mma.log" FG_ATTN_NO_WGMMA=1
done
if [ "$mode" = --sanitize ] && command -v compute-sanitizer >/dev/null; then
  # Sanitizers on the GPU suites, with the caching allocator off (so every
  # buffer is its own allocation) and small sizes (FG_TEST_QUICK). memcheck
  # ignores API errors: the suites provoke cudaErrorMemoryAllocation on purpose.
  for t in tests/test_cuda_*; do
    [ -x "$t" ] || continue
    name=$(basename "$t")
    for tool in memcheck racecheck; do
      extra=""
      [ $tool = memcheck ] && extra="--leak-check full --report-api-errors no"
      # shellcheck disable=SC2086
      FG_CUDA_NO_CACHE=1 FG_TEST_QUICK=1 timeout 150 compute-sanitizer --tool $tool $extra --error-exitcode 99 \
        "./$t" > "$out/san_${tool}_${name}.log" 2>&1
      rc=$?
      echo "compute-sanitizer $tool $name: exit $rc, $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY|Checks' "$out/san_${tool}_${name}.log" | tr '\n' ' ')"
      [ $rc -eq 0 ] || status=1
    done
  done
fi
exit $status
