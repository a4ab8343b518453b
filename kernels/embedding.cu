// CUDA kernels for the embedding family: written in this change.
