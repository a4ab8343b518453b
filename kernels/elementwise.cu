// CUDA kernels for the elementwise family: written in this change.
