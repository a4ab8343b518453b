// CUDA kernels for the random family: written in this change.
