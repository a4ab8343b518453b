/* flashgrad: a training-capable autograd framework in C with a CUDA backend.
 * One include for the whole public API. */
#ifndef FLASHGRAD_H
#define FLASHGRAD_H

#include <flashgrad/types.h>
#include <flashgrad/error.h>
#include <flashgrad/tensor.h>
#include <flashgrad/autograd.h>
#include <flashgrad/random.h>
#include <flashgrad/ops.h>
#include <flashgrad/gradcheck.h>
#include <flashgrad/cuda.h>
#include <flashgrad/cublas.h>
#include <flashgrad/autocast.h>
#include <flashgrad/deterministic.h>
#include <flashgrad/attention.h>
#include <flashgrad/attention_raw.h>
#include <flashgrad/params.h>
#include <flashgrad/optim.h>
#include <flashgrad/nn.h>
#include <flashgrad/gpt.h>
#include <flashgrad/moe.h>
#include <flashgrad/checkpoint.h>

#endif
