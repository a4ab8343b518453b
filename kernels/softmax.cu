// CUDA kernels for the softmax family: written in this change.
