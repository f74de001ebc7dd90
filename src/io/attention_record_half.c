// IEEE binary16 conversion of recorded attention (attention_record.h): round to nearest,
// ties to even, as numpy's float16.
#include <math.h>
#include <string.h>

#include "io/attention_record.h"

uint16_t attention_record_half_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  // NaN stays NaN
    int exponent = (int)(magnitude >> 23) - 127;
    if (exponent > 15) return (uint16_t)(sign | 0x7c00u);            // too large (or inf): inf
    if (exponent < -25) return sign;                                   // below half the smallest subnormal
    uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;       // value = significand 2^(exponent-23)
    // The half's last significand bit weighs 2^(exponent-10) (normal) or 2^-24 (subnormal).
    int unit = exponent < -14 ? -24 : exponent - 10;
    int shift = unit - (exponent - 23);                                // 13 .. 24
    uint32_t kept = significand >> shift, rest = significand & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u))) kept++;          // to nearest, ties to even
    if (exponent < -14) return (uint16_t)(sign | kept);                // subnormal (kept 0x400 = smallest normal)
    // kept in [0x400, 0x800]: 0x800 carries into the exponent (and 65520.. into inf).
    return (uint16_t)(sign | (((uint32_t)(exponent + 15) << 10) + kept - 0x400u));
}

float attention_record_half_value(uint16_t bits) {
    int exponent = (bits >> 10) & 0x1f;
    int mantissa = bits & 0x3ff;
    float value;
    if (exponent == 0) value = ldexpf((float)mantissa, -24);
    else if (exponent == 31) value = mantissa ? NAN : INFINITY;
    else value = ldexpf((float)(mantissa | 0x400), exponent - 25);
    return bits & 0x8000u ? -value : value;
}
