// CUDA kernels for the norm family: written in this change.
