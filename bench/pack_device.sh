#!/usr/bin/env bash
# Packs a CUDA build for the device machine (which has neither libtool nor
# Check): the shared library, the test and example binaries out of libtool's
# .libs, and the shared libraries they need that the device lacks.
#   bench/pack_device.sh [BUILD_DIR]   (default _build, after `make check`)
# Leaves _dev_pkg/ and _devlibs/ (git-ignored): carry both and run
# bench/device_check.sh _dev_pkg there.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:-$top/_build}" && pwd)
cd "$top"
rm -rf _dev_pkg _devlibs
mkdir -p _dev_pkg/tests _dev_pkg/lib _dev_pkg/examples _devlibs
for f in "$build"/tests/.libs/test_*; do
  case $f in *.o) continue ;; esac
  cp "$f" _dev_pkg/tests/
done
cp -L "$build"/.libs/libflashgrad.so.0 _dev_pkg/lib/
for f in "$build"/examples/.libs/*; do
  [ -f "$f" ] && [ -x "$f" ] && cp "$f" _dev_pkg/examples/
done
# everything a binary needs from outside the package, except the C library
# and the driver, which the device has (and must match its kernel)
ldd _dev_pkg/lib/libflashgrad.so.0 _dev_pkg/tests/* _dev_pkg/examples/* 2>/dev/null |
  awk '/=> \//{print $3}' | sort -u | while read -r so; do
    case $(basename "$so") in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*|libcuda.so*|libflashgrad.so*) ;;
      libcublas*|libcurand*) ;; # the device's toolkit has them (/usr/local/cuda/lib64)
      *) cp -L "$so" _devlibs/ ;;
    esac
  done
du -sh _dev_pkg _devlibs
