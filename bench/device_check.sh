#!/usr/bin/env bash
# Runs the test suites on the device machine from a build made on a machine
# with Check installed (the device has neither libtool nor Check):
#   here:   mkdir _build_dev && cd _build_dev && ../configure --disable-shared --with-cuda-arch=90 && make check
#           mkdir _devlibs && cp -L <libsubunit.so.0> <libcudart.so.13> _devlibs/
#   device: bench/device_check.sh _build_dev   (carry _build_dev and _devlibs)
# Writes logs under $OUT when set.
set -uo pipefail
build=${1:-_build_dev}
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-/tmp/fg_device_check}
mkdir -p "$out"
export LD_LIBRARY_PATH="$top/_devlibs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
cd "$top/$build" || exit 1
status=0
for t in tests/test_*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  case $t in *.o|*.log|*.trs) continue ;; esac
  CK_FORK=no "./$t" > "$out/$(basename "$t").log" 2>&1
  rc=$?
  echo "$(basename "$t"): exit $rc, $(grep -hE '^[0-9]+%: Checks' "$out/$(basename "$t").log")"
  [ $rc -eq 0 ] || status=1
done
if command -v compute-sanitizer >/dev/null; then
  for t in tests/test_cuda_smoke; do
    for tool in memcheck racecheck; do
      extra=""
      [ $tool = memcheck ] && extra="--leak-check full"
      # shellcheck disable=SC2086
      compute-sanitizer --tool $tool $extra --error-exitcode 99 "./$t" > "$out/sanitizer_${tool}.log" 2>&1
      rc=$?
      echo "compute-sanitizer $tool $(basename "$t"): exit $rc, $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer_${tool}.log" | tail -1)"
      [ $rc -eq 0 ] || status=1
    done
  done
fi
exit $status
