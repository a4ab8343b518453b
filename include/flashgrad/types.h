#ifndef FLASHGRAD_TYPES_H
#define FLASHGRAD_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FG_MAX_DIMS 8

typedef enum {
    FG_F32 = 0,
    FG_F64,
    FG_BF16,
    FG_F16,
    FG_I32,
    FG_I64,
    FG_NUM_DTYPES
} fg_dtype;

typedef enum {
    FG_CPU = 0,
    FG_CUDA
} fg_device;

typedef struct fg_tensor fg_tensor;       /* opaque; always used through pointers */
typedef struct fg_generator fg_generator; /* Philox4x32-10 random stream */
typedef struct fg_scope fg_scope;         /* owner of the tensors created inside it */

/* Shape literal helper: fg_zeros(FG_SHAPE(2, 3), FG_F32, FG_CPU). Expands to
 * the (ndim, shape) argument pair every creation function takes. */
#define FG_SHAPE(...) \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}
/* Dim list helper for reductions: fg_sum(x, FG_DIMS(0, 2), true). */
#define FG_DIMS(...) \
    (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)), (const int[]){__VA_ARGS__}

const char *fg_dtype_name(fg_dtype dt);
size_t fg_dtype_size(fg_dtype dt);
bool fg_dtype_is_float(fg_dtype dt);
const char *fg_device_name(fg_device dev);

/* Scalar conversions used by the bf16/f16 storage formats (round to nearest even). */
uint16_t fg_float_to_bf16(float f);
float fg_bf16_to_float(uint16_t h);
uint16_t fg_float_to_f16(float f);
float fg_f16_to_float(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif
