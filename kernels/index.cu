// CUDA kernels for the index family: written in this change.
