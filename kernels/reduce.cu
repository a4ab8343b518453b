// CUDA kernels for the reduce family: written in this change.
