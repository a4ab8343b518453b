/* The autocast scope: a thread-local stack of dtypes. fg_matmul / fg_linear
 * read the innermost entry (src/ops/matmul.c does the casting). */
#include "internal.h"
#include <flashgrad/autocast.h>

#define FG_AUTOCAST_MAX_DEPTH 64

static _Thread_local fg_dtype tl_stack[FG_AUTOCAST_MAX_DEPTH];
static _Thread_local int tl_depth;

fg_status fg_autocast_begin(fg_dtype dt)
{
    if (dt != FG_BF16 && dt != FG_F16 && dt != FG_F32)
        return fg__err(FG_ERR_DTYPE, "fg_autocast_begin: dtype must be bf16, f16 or f32 (off), got %s",
                       (unsigned)dt < FG_NUM_DTYPES ? fg_dtype_name(dt) : "an invalid dtype");
    if (tl_depth == FG_AUTOCAST_MAX_DEPTH)
        return fg__err(FG_ERR_STATE, "fg_autocast_begin: more than %d nested autocast scopes (missing fg_autocast_end?)",
                       FG_AUTOCAST_MAX_DEPTH);
    tl_stack[tl_depth++] = dt;
    return FG_OK;
}

fg_status fg_autocast_end(void)
{
    if (tl_depth == 0) return fg__err(FG_ERR_STATE, "fg_autocast_end: no autocast scope is open on this thread");
    tl_depth--;
    return FG_OK;
}

fg_dtype fg_autocast_dtype(void) { return tl_depth ? tl_stack[tl_depth - 1] : FG_F32; }
