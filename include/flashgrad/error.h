#ifndef FLASHGRAD_ERROR_H
#define FLASHGRAD_ERROR_H

#include <flashgrad/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every failure a caller can cause is reported, never aborted on: functions
 * return an fg_status or NULL and record a thread-local error (code + message
 * naming the op and the shapes). An op handed a NULL tensor returns NULL and
 * keeps the first error, so nested calls report the original failure. */
typedef enum {
    FG_OK = 0,
    FG_ERR_NULL,        /* a required argument was NULL */
    FG_ERR_INVALID,     /* an argument value is out of its domain */
    FG_ERR_SHAPE,       /* shapes do not fit the op */
    FG_ERR_DTYPE,       /* dtype not supported or mismatched */
    FG_ERR_DEVICE,      /* tensors on different devices, or device unavailable */
    FG_ERR_DIM,         /* a dimension index out of range */
    FG_ERR_INDEX,       /* an index value out of range */
    FG_ERR_OVERFLOW,    /* sizes overflow 64-bit element counts or bytes */
    FG_ERR_OOM,         /* allocation failed */
    FG_ERR_STATE,       /* call not valid in the current state (scope, autograd) */
    FG_ERR_UNSUPPORTED, /* combination not implemented in this build */
    FG_ERR_CUDA,        /* CUDA runtime / cuBLAS / cuRAND failure */
    FG_ERR_IO,          /* file input/output: open, read, write, rename failed */
    FG_ERR_FORMAT       /* a file's contents are malformed or truncated (checkpoints) */
} fg_status;

const char *fg_status_name(fg_status s);
/* The most recent error on this thread (FG_OK and "" when none). */
fg_status fg_last_status(void);
const char *fg_last_error(void);
void fg_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
