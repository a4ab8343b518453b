/* GPU suite: written in this change. */
#include "cudatest.h"
static Suite *mk(void) { return suite_create("cuda_index_random"); }
FG_CUDA_TEST_MAIN(mk, "cuda_index_random")
