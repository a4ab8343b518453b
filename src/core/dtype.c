/* dtype metadata and the bf16 / f16 storage conversions (round to nearest even). */
#include "internal.h"

const char *fg_dtype_name(fg_dtype dt)
{
    static const char *names[] = {"f32", "f64", "bf16", "f16", "i32", "i64"};
    return (unsigned)dt < FG_NUM_DTYPES ? names[dt] : "invalid";
}

size_t fg_dtype_size(fg_dtype dt)
{
    static const size_t sizes[] = {4, 8, 2, 2, 4, 8};
    return (unsigned)dt < FG_NUM_DTYPES ? sizes[dt] : 0;
}

bool fg_dtype_is_float(fg_dtype dt) { return dt == FG_F32 || dt == FG_F64 || dt == FG_BF16 || dt == FG_F16; }

const char *fg_device_name(fg_device dev)
{
    return dev == FG_CPU ? "cpu" : dev == FG_CUDA ? "cuda" : "invalid";
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

uint16_t fg_float_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float fg_bf16_to_float(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t fg_float_to_f16(float f)
{
    uint32_t u = f2u(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);           /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);          /* overflow -> inf (65520 rounds up) */
    if (a < 0x38800000u) {                                            /* subnormal or zero in f16 */
        /* Add the value as float to 0.5 (2^-1) so the FPU rounds the mantissa
         * at the f16 subnormal quantum 2^-24. */
        float v = u2f(a) + 0.5f;
        return (uint16_t)(sign | (f2u(v) - 0x3f000000u));
    }
    uint32_t mant_odd = (a >> 13) & 1u;
    a += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round to nearest even */
    return (uint16_t)(sign | (a >> 13));
}

float fg_f16_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        float v = (float)mant * 5.9604644775390625e-8f; /* 2^-24 */
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112) << 23) | (mant << 13));
}
