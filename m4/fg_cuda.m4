# FG_CHECK_CUDA
# --with-cuda[=DIR]      yes: require CUDA; no: CPU-only; DIR: toolkit prefix;
#                        default (check): use CUDA when nvcc, cudart, cuBLAS and
#                        cuRAND are all found, else build CPU-only.
# --with-cuda-arch=LIST  comma/space separated SM numbers (e.g. 80,90). Default
#                        80,90 plus PTX for the newest, so newer GPUs JIT it.
#                        90 builds sm_90a (Hopper's wgmma) and defines FG_WGMMA.
# Defines FG_HAVE_CUDA, substitutes NVCC, NVCCFLAGS, CUDA_CPPFLAGS, CUDA_LDFLAGS,
# CUDA_LIBS, and the automake conditional HAVE_CUDA.
AC_DEFUN([FG_CHECK_CUDA], [
  AC_ARG_WITH([cuda],
    [AS_HELP_STRING([--with-cuda@<:@=DIR@:>@],
      [build the CUDA backend (default: auto-detect; DIR is the toolkit prefix)])],
    [], [with_cuda=check])
  AC_ARG_WITH([cuda-arch],
    [AS_HELP_STRING([--with-cuda-arch=LIST],
      [SM architectures to compile for, e.g. 90 or 80,90 (default: 80,90 + PTX)])],
    [], [with_cuda_arch=80,90])
  AC_ARG_VAR([NVCC], [CUDA compiler driver])
  AC_ARG_VAR([NVCCFLAGS], [extra flags for nvcc])

  fg_have_cuda=no
  fg_cuda_prefix=
  AS_CASE([$with_cuda],
    [no], [],
    [yes|check], [
      AS_IF([test -z "$NVCC"], [AC_PATH_PROG([NVCC], [nvcc], [], [$PATH:/usr/local/cuda/bin])])
      AS_IF([test -n "$NVCC"], [fg_cuda_prefix=`dirname "$NVCC"`; fg_cuda_prefix=`dirname "$fg_cuda_prefix"`])],
    [
      fg_cuda_prefix=$with_cuda
      AS_IF([test -z "$NVCC"], [AC_PATH_PROG([NVCC], [nvcc], [], [$with_cuda/bin])])
      with_cuda=yes])

  AS_IF([test "x$with_cuda" != xno && test -n "$NVCC"], [
    fg_cuda_libdir=
    for d in "$fg_cuda_prefix/lib64" "$fg_cuda_prefix/lib" "$fg_cuda_prefix/targets/x86_64-linux/lib"; do
      AS_IF([test -z "$fg_cuda_libdir" && test -d "$d"], [fg_cuda_libdir=$d])
    done
    CUDA_CPPFLAGS="-I$fg_cuda_prefix/include"
    CUDA_LDFLAGS="-L$fg_cuda_libdir -Wl,-rpath,$fg_cuda_libdir"
    fg_save_CPPFLAGS=$CPPFLAGS; fg_save_LDFLAGS=$LDFLAGS; fg_save_LIBS=$LIBS
    CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS"; LDFLAGS="$LDFLAGS $CUDA_LDFLAGS"
    AC_CHECK_HEADER([cuda_runtime_api.h], [fg_have_cudart_h=yes], [fg_have_cudart_h=no])
    AC_CHECK_LIB([cudart], [cudaMalloc], [fg_have_cudart=yes], [fg_have_cudart=no])
    AC_CHECK_LIB([cublas], [cublasCreate_v2], [fg_have_cublas=yes], [fg_have_cublas=no])
    AS_IF([test "x$fg_have_cublas" = xyes],
          [AC_CHECK_LIB([cublasLt], [cublasLtCreate], [], [fg_have_cublas=no])])
    AC_CHECK_LIB([curand], [curandCreateGenerator], [fg_have_curand=yes], [fg_have_curand=no])
    CPPFLAGS=$fg_save_CPPFLAGS; LDFLAGS=$fg_save_LDFLAGS; LIBS=$fg_save_LIBS
    AS_IF([test "$fg_have_cudart_h$fg_have_cudart$fg_have_cublas$fg_have_curand" = yesyesyesyes],
          [fg_have_cuda=yes])
  ])

  AS_IF([test "x$with_cuda" = xyes && test "x$fg_have_cuda" != xyes],
    [AC_MSG_ERROR([CUDA was requested (--with-cuda) but the toolkit is incomplete: nvcc='$NVCC' cudart=${fg_have_cudart:-no} cuBLAS=${fg_have_cublas:-no} cuRAND=${fg_have_curand:-no}. Install the CUDA toolkit, pass --with-cuda=DIR, or configure --without-cuda.])])

  fg_cuda_arch_list=
  AS_IF([test "x$fg_have_cuda" = xyes], [
    fg_gencode=
    fg_last=
    for a in `echo "$with_cuda_arch" | tr ',' ' '`; do
      AS_CASE([$a], [*[[!0-9a]]*|''], [AC_MSG_ERROR([--with-cuda-arch: '$a' is not an SM number such as 80 or 90])])
      AS_CASE([$a],
        [90|90a], [dnl Hopper: the sm_90a target, for the wgmma attention kernels
          fg_gencode="$fg_gencode -gencode arch=compute_90a,code=sm_90a -DFG_WGMMA=1"
          fg_cuda_arch_list="$fg_cuda_arch_list sm_90a"
          a=90],
        [fg_gencode="$fg_gencode -gencode arch=compute_$a,code=sm_$a"
          fg_cuda_arch_list="$fg_cuda_arch_list sm_$a"])
      fg_last=$a
    done
    fg_gencode="$fg_gencode -gencode arch=compute_$fg_last,code=compute_$fg_last"
    fg_cuda_arch_list="$fg_cuda_arch_list +PTX"
    NVCC_ARCHFLAGS=$fg_gencode
    CUDA_LIBS="-lcublas -lcublasLt -lcurand -lcudart -lstdc++"
    AC_DEFINE([FG_HAVE_CUDA], [1], [Define to 1 when the CUDA backend is built])
  ], [CUDA_CPPFLAGS=; CUDA_LDFLAGS=; CUDA_LIBS=])
  AC_SUBST([NVCC_ARCHFLAGS])
  AC_SUBST([CUDA_CPPFLAGS])
  AC_SUBST([CUDA_LDFLAGS])
  AC_SUBST([CUDA_LIBS])
  AM_CONDITIONAL([HAVE_CUDA], [test "x$fg_have_cuda" = xyes])
])
