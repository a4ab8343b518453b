/* Thread-local error state: the first failure in a chain of calls is kept. */
#include <stdio.h>
#include "internal.h"

static _Thread_local fg_status tl_status = FG_OK;
static _Thread_local char tl_msg[512];

const char *fg_status_name(fg_status s)
{
    switch (s) {
    case FG_OK: return "FG_OK";
    case FG_ERR_NULL: return "FG_ERR_NULL";
    case FG_ERR_INVALID: return "FG_ERR_INVALID";
    case FG_ERR_SHAPE: return "FG_ERR_SHAPE";
    case FG_ERR_DTYPE: return "FG_ERR_DTYPE";
    case FG_ERR_DEVICE: return "FG_ERR_DEVICE";
    case FG_ERR_DIM: return "FG_ERR_DIM";
    case FG_ERR_INDEX: return "FG_ERR_INDEX";
    case FG_ERR_OVERFLOW: return "FG_ERR_OVERFLOW";
    case FG_ERR_OOM: return "FG_ERR_OOM";
    case FG_ERR_STATE: return "FG_ERR_STATE";
    case FG_ERR_UNSUPPORTED: return "FG_ERR_UNSUPPORTED";
    case FG_ERR_CUDA: return "FG_ERR_CUDA";
    case FG_ERR_IO: return "FG_ERR_IO";
    case FG_ERR_FORMAT: return "FG_ERR_FORMAT";
    }
    return "FG_ERR_UNKNOWN";
}

fg_status fg_last_status(void) { return tl_status; }
const char *fg_last_error(void) { return tl_status == FG_OK ? "" : tl_msg; }

void fg_clear_error(void)
{
    tl_status = FG_OK;
    tl_msg[0] = '\0';
}

fg_status fg__err(fg_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    tl_status = s;
    return s;
}

fg_status fg__err_null(const char *op, const char *what)
{
    if (tl_status != FG_OK) return tl_status;
    return fg__err(FG_ERR_NULL, "%s: %s is NULL", op, what);
}

fg_status fg__norm_dim(const char *op, const fg_tensor *t, int d, int ndim_plus, int *out)
{
    int n = t->ndim + ndim_plus;
    int span = n > 0 ? n : 1; /* a 0-d tensor accepts dim 0 and -1, as in PyTorch */
    int r = d < 0 ? d + span : d;
    if (r < 0 || r >= span) {
        char buf[128];
        return fg__err(FG_ERR_DIM, "%s: dim %d out of range for a %d-d tensor %s", op, d, t->ndim,
                       fg_shape_str(t, buf, sizeof buf));
    }
    *out = r;
    return FG_OK;
}
