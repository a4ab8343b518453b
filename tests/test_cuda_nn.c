/* GPU suite: written in this change. */
#include "cudatest.h"
static Suite *mk(void) { return suite_create("cuda_nn"); }
FG_CUDA_TEST_MAIN(mk, "cuda_nn")
